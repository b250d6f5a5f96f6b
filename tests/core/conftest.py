from __future__ import annotations

import pytest
import torch

from neft_plugins import NoiseRecord, hookimpl
from neft_plugins.plugins import plugin_manager
from support.noise import assert_near_paper_norm, uniform_norm_tolerance


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


@pytest.fixture
def assert_noise_norms():
    def check(norms: torch.Tensor, alpha: float, min_elements: int) -> None:
        assert_near_paper_norm(norms.tolist(), alpha, rel=uniform_norm_tolerance(min_elements))

    return check
