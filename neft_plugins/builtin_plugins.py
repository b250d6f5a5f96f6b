"""The built-in distributions, schedules and segment readers, implemented through the public hooks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from neft_plugins.hookspecs import AlphaSchedule, NoiseSampler, hookimpl
from neft_plugins.noise import (
    segments_from_block_mask,
    segments_from_cu_seqlens,
    segments_from_row_values,
    segments_from_starts,
)

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


def _matching(inputs: Mapping[str, Any], key: str, shape: tuple[int, ...]) -> torch.Tensor | None:
    value = inputs.get(key)
    if isinstance(value, torch.Tensor) and tuple(value.shape[-len(shape) :]) == shape:
        return value
    return None


class NothingReader:
    """No usable mask: every position of a row is one real sequence."""

    @hookimpl(trylast=True)
    def neft_read_segments(self, inputs: Mapping[str, Any], batch_shape: tuple[int, int]) -> torch.Tensor:
        return torch.ones(batch_shape, dtype=torch.long)


class RowMaskReader:
    """A 2-D ``attention_mask`` (0/1, or segment ids 1..K as Axolotl multipack writes) and/or
    ``position_ids`` that restart at 0 for each packed sequence (TRL ``padding_free``)."""

    @hookimpl
    def neft_read_segments(
        self, inputs: Mapping[str, Any], batch_shape: tuple[int, int]
    ) -> torch.Tensor | None:
        mask = _matching(inputs, "attention_mask", batch_shape)
        if mask is not None and mask.dim() != 2:
            mask = None
        positions = _matching(inputs, "position_ids", batch_shape)
        if positions is not None and positions.dim() == 3:  # multimodal rotary: [sections, B, L]
            positions = positions[0]
        if positions is not None and positions.shape[0] != batch_shape[0]:
            positions = None
        if mask is None and positions is None:
            return None
        if mask is None:
            real = torch.ones(batch_shape, dtype=torch.bool, device=positions.device)
            return segments_from_starts(positions == 0, real)
        segments = segments_from_row_values(mask, mask != 0)
        if positions is None:
            return segments
        starts = positions == 0
        starts[:, 1:] |= segments[:, 1:] != segments[:, :-1]
        starts[:, 0] = True
        return segments_from_starts(starts, mask != 0)


class BlockMaskReader:
    """A 4-D block-diagonal ``attention_mask`` ``[B, 1, L, L]`` (LLaMA-Factory ``neat_packing`` without
    flash-attention)."""

    @hookimpl
    def neft_read_segments(
        self, inputs: Mapping[str, Any], batch_shape: tuple[int, int]
    ) -> torch.Tensor | None:
        mask = inputs.get("attention_mask")
        if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
            return None
        if mask.shape[0] != batch_shape[0] or tuple(mask.shape[-2:]) != (batch_shape[1], batch_shape[1]):
            return None
        return segments_from_block_mask(mask)


class VarlenReader:
    """Flash-attention varlen cumulative lengths ``cu_seq_lens_q`` of a flattened ``[1, L]`` batch."""

    @hookimpl
    def neft_read_segments(
        self, inputs: Mapping[str, Any], batch_shape: tuple[int, int]
    ) -> torch.Tensor | None:
        cu_seqlens = inputs.get("cu_seq_lens_q")
        if not isinstance(cu_seqlens, torch.Tensor) or batch_shape[0] != 1:
            return None
        return segments_from_cu_seqlens(cu_seqlens, batch_shape[1])


# Later registrations are asked first: the most specific reader goes last.
BUILTIN_PLUGINS: tuple[object, ...] = (
    Distributions(),
    Schedules(),
    NothingReader(),
    RowMaskReader(),
    BlockMaskReader(),
    VarlenReader(),
)
