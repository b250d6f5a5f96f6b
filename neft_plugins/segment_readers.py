"""The built-in segment readers' work (torch): which sequence each position belongs to, from a model call's inputs.
``neft_plugins.builtin_plugins`` registers them as hooks without importing this module (the MLX route has no torch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from neft_plugins.noise import (
    segments_from_block_mask,
    segments_from_cu_seqlens,
    segments_from_row_values,
    segments_from_starts,
)


def _matching(inputs: Mapping[str, Any], key: str, shape: tuple[int, ...]) -> torch.Tensor | None:
    value = inputs.get(key)
    if isinstance(value, torch.Tensor) and tuple(value.shape[-len(shape) :]) == shape:
        return value
    return None


def every_position(batch_shape: tuple[int, int]) -> torch.Tensor:
    """No usable mask: every position of a row is one real sequence."""
    return torch.ones(batch_shape, dtype=torch.long)


def from_row_mask(inputs: Mapping[str, Any], batch_shape: tuple[int, int]) -> torch.Tensor | None:
    """A 2-D ``attention_mask`` (0/1, or segment ids 1..K as Axolotl multipack writes) and/or
    ``position_ids`` that restart at 0 for each packed sequence (TRL ``padding_free``)."""
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


def from_block_mask(inputs: Mapping[str, Any], batch_shape: tuple[int, int]) -> torch.Tensor | None:
    """A 4-D block-diagonal ``attention_mask`` ``[B, 1, L, L]`` (LLaMA-Factory ``neat_packing`` without
    flash-attention)."""
    mask = inputs.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        return None
    if mask.shape[0] != batch_shape[0] or tuple(mask.shape[-2:]) != (batch_shape[1], batch_shape[1]):
        return None
    return segments_from_block_mask(mask)


def from_cu_seqlens(inputs: Mapping[str, Any], batch_shape: tuple[int, int]) -> torch.Tensor | None:
    """Flash-attention varlen cumulative lengths ``cu_seq_lens_q`` of a flattened ``[1, L]`` batch."""
    cu_seqlens = inputs.get("cu_seq_lens_q")
    if not isinstance(cu_seqlens, torch.Tensor) or batch_shape[0] != 1:
        return None
    return segments_from_cu_seqlens(cu_seqlens, batch_shape[1])
