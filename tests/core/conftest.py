from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neft_plugins import hookimpl
from neft_plugins.plugins import plugin_manager
from neft_plugins.stats import NoiseRecord


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
        expected = alpha / math.sqrt(3)
        tolerance = uniform_norm_tolerance(min_elements)
        relative = (norms / expected - 1).abs()
        assert norms.numel() > 0
        assert float(relative.max()) < tolerance, (norms.tolist(), expected, tolerance)

    return check
