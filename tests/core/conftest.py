from __future__ import annotations

import math

import pytest
import torch

from neft_plugins import NoiseRecord, hookimpl
from neft_plugins.plugins import plugin_manager
from support.noise import assert_near_paper_norm


class Recorder:
    """An observer plugin that keeps every NoiseRecord, registered through the public hook."""

    def __init__(self) -> None:
        self.records: list[NoiseRecord] = []

    @hookimpl
    def neft_observe(self, record: NoiseRecord) -> None:
        self.records.append(record)

    def sequence_noise_norms(self) -> torch.Tensor:
        return torch.cat([record.sequence_noise_norms() for record in self.records])


@pytest.fixture
def recorder():
    recorder = Recorder()
    plugin_manager().register(recorder)
    yield recorder
    plugin_manager().unregister(recorder)


def uniform_norm_tolerance(elements: int, sigmas: float = 5.0) -> float:
    """Relative tolerance on one sequence's uniform-noise norm over ``elements`` entries.

    For u ~ U(-s, s): Var(u²)/E(u²)² = 4/5, so the squared norm's relative std is sqrt(0.8/n),
    and the norm's about half of that.
    """
    return sigmas * 0.5 * math.sqrt(0.8 / elements)


@pytest.fixture
def assert_noise_norms():
    def check(norms: torch.Tensor, alpha: float, min_elements: int) -> None:
        assert_near_paper_norm(norms.tolist(), alpha, rel=uniform_norm_tolerance(min_elements))

    return check
