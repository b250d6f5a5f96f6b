"""The built-in distributions, schedules and segment readers, implemented through the public hooks.

Importing this module imports no torch (the MLX route loads the plugin manager too): the samplers use tensor
methods only, and each reader imports its torch work (``neft_plugins.segment_readers``) when it is first asked."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from neft_plugins.hookspecs import AlphaSchedule, NoiseSampler, hookimpl

if TYPE_CHECKING:
    import torch

SQRT_3 = math.sqrt(3.0)


def uniform_noise(out: torch.Tensor, magnitude: float, generator: torch.Generator | None) -> torch.Tensor:
    return out.uniform_(-magnitude, magnitude, generator=generator)


def gaussian_noise(out: torch.Tensor, magnitude: float, generator: torch.Generator | None) -> torch.Tensor:
    return out.normal_(0.0, magnitude / SQRT_3, generator=generator)


def constant_alpha(alpha: float, step: int, total_steps: int) -> float:
    return alpha


def linear_decay(alpha: float, step: int, total_steps: int) -> float:
    if total_steps <= 0:
        return alpha
    return alpha * max(0.0, 1.0 - step / total_steps)


def cosine_decay(alpha: float, step: int, total_steps: int) -> float:
    if total_steps <= 0:
        return alpha
    return alpha * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


class Distributions:
    @hookimpl
    def neft_distributions(self) -> Mapping[str, NoiseSampler]:
        return {"uniform": uniform_noise, "gaussian": gaussian_noise}


class Schedules:
    @hookimpl
    def neft_schedules(self) -> Mapping[str, AlphaSchedule]:
        return {"constant": constant_alpha, "linear": linear_decay, "cosine": cosine_decay}


class NothingReader:
    """No usable mask: every position of a row is one real sequence."""

    @hookimpl(trylast=True)
    def neft_read_segments(self, inputs: Mapping[str, Any], batch_shape: tuple[int, int]) -> torch.Tensor:
        from neft_plugins import segment_readers

        return segment_readers.every_position(batch_shape)


class RowMaskReader:
    @hookimpl
    def neft_read_segments(
        self, inputs: Mapping[str, Any], batch_shape: tuple[int, int]
    ) -> torch.Tensor | None:
        from neft_plugins import segment_readers

        return segment_readers.from_row_mask(inputs, batch_shape)


class BlockMaskReader:
    @hookimpl
    def neft_read_segments(
        self, inputs: Mapping[str, Any], batch_shape: tuple[int, int]
    ) -> torch.Tensor | None:
        from neft_plugins import segment_readers

        return segment_readers.from_block_mask(inputs, batch_shape)


class VarlenReader:
    @hookimpl
    def neft_read_segments(
        self, inputs: Mapping[str, Any], batch_shape: tuple[int, int]
    ) -> torch.Tensor | None:
        from neft_plugins import segment_readers

        return segment_readers.from_cu_seqlens(inputs, batch_shape)


# Later registrations are asked first: the most specific reader goes last.
BUILTIN_PLUGINS: tuple[object, ...] = (
    Distributions(),
    Schedules(),
    NothingReader(),
    RowMaskReader(),
    BlockMaskReader(),
    VarlenReader(),
)
