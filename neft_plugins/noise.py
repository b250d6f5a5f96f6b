"""NEFTune's arithmetic, as pure functions over tensors.

For each sequence s (a batch row, or one segment of a packed row) let T_s be the positions that receive
noise and L_s = |T_s|. Each t in T_s gets ``alpha / sqrt(L_s * d) * eps_t``; every other position gets 0.
"""

from __future__ import annotations

import math
import struct

import torch

IGNORE_INDEX = -100
LOW_PRECISION = (torch.float16, torch.bfloat16)


def segments_from_starts(starts: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Number segments 1, 2, ... along each row from a start marker per position; 0 where not real."""
    return torch.cumsum(starts & real, dim=-1).clamp_(min=1) * real


def segments_from_row_values(values: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """A new segment wherever ``values`` changes along the row (0/1 masks, segment-id masks)."""
    starts = torch.ones_like(real)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    return segments_from_starts(starts, real)


def segments_from_cu_seqlens(cu_seqlens: torch.Tensor, length: int) -> torch.Tensor:
    """Segments of a flattened ``[1, length]`` varlen batch from cumulative lengths ``[0, l1, l1+l2, ...]``."""
    cu_seqlens = cu_seqlens.to(torch.long)
    positions = torch.arange(length, device=cu_seqlens.device)
    segment = torch.bucketize(positions, cu_seqlens[1:], right=True) + 1
    real = positions < cu_seqlens[-1]
    return (segment.clamp_(max=length) * real).unsqueeze(0)


def segments_from_block_mask(mask: torch.Tensor) -> torch.Tensor:
    """Segments from a 4-D ``[B, 1, L, L]`` mask (bool: True = may attend; float: 0 = may attend, min = blocked).

    A position is real when it may attend to itself; it starts a sequence when it may not attend to the
    position before it.
    """
    allowed = mask[:, 0] if mask.dtype == torch.bool else mask[:, 0] > torch.finfo(mask.dtype).min / 2
    real = torch.diagonal(allowed, dim1=-2, dim2=-1)
    starts = torch.ones_like(real)
    starts[:, 1:] = ~torch.diagonal(allowed, offset=-1, dim1=-2, dim2=-1)
    return segments_from_starts(starts, real)


def scope_mask(segment_ids: torch.Tensor, labels: torch.Tensor | None, scope: str) -> torch.Tensor:
    """Positions that receive noise: real tokens, restricted to prompt or response by ``labels == -100``."""
    real = segment_ids > 0
    if scope == "all":
        return real
    if labels is None:
        raise ValueError(
            f"neftune_scope={scope!r} needs `labels` in the model call to tell prompt from response"
        )
    is_prompt = labels == IGNORE_INDEX
    return real & (is_prompt if scope == "prompt" else ~is_prompt)


def segment_token_counts(segment_ids: torch.Tensor, noised: torch.Tensor) -> torch.Tensor:
    """L_s, the noised positions of each segment: ``[B, length + 1]`` float32, column = segment id (column 0:
    nothing). ``segment_ids`` must be 0 wherever ``noised`` is False."""
    batch, length = segment_ids.shape
    counts = torch.zeros(batch, length + 1, dtype=torch.float32, device=segment_ids.device)
    return counts.scatter_add_(1, segment_ids, noised.to(torch.float32))


def without_unsupervised(segment_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Drop segments with no supervised token (every label -100): they add nothing to the loss, and this is
    how the padding tail of a packed row is told apart when the collator gives it restarting position ids."""
    batch, length = segment_ids.shape
    supervised = torch.zeros(batch, length + 1, dtype=torch.float32, device=segment_ids.device)
    # Column 0 (padding) may count too: a segment id of 0 stays 0 whatever it gathers.
    supervised.scatter_add_(1, segment_ids, (labels != IGNORE_INDEX).to(torch.float32))
    return segment_ids * (supervised.gather(1, segment_ids) > 0)


def per_token_scale(
    segment_ids: torch.Tensor,
    noised: torch.Tensor,
    dim: int,
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """``1 / sqrt(L_s * dim)`` at each noised position of segment s (float32), 0 elsewhere: noise drawn with
    magnitude alpha, times this, is the paper's.

    ``segment_ids`` must be 0 wherever ``noised`` is False, and lie in 0..length. L_s comes from ``counts``
    (default: ``segment_token_counts``).
    """
    if counts is None:
        counts = segment_token_counts(segment_ids, noised)
    # Counts of 0 (no noised token) clamped to 1 keep rsqrt finite; `noised` zeroes those positions.
    tokens_in_segment = counts.gather(1, segment_ids).clamp_(min=1.0)
    return torch.rsqrt(tokens_in_segment.mul_(dim)).mul_(noised)


def padded_magnitude(alpha: float, length: int, dim: int) -> float:
    """transformers' built-in bound, ``alpha / torch.sqrt(torch.tensor(length * dim))``, to the bit: float32
    arithmetic, computed on the host without a tensor (the built-in's tensor bound syncs with the device)."""
    root = _float32(math.sqrt(_float32(length * dim)))
    return _float32(_float32(alpha) / root)


def _float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def noise_dtype(embeddings: torch.Tensor) -> torch.dtype:
    """Sample and scale in float32 for half-precision embeddings, so small scales do not underflow."""
    return torch.float32 if embeddings.dtype in LOW_PRECISION else embeddings.dtype


def segment_norms(per_token_square: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each segment, from per-position squared norms: ``[B, length + 1]``, column = segment id;
    column 0 holds the positions outside every segment."""
    batch, length = segment_ids.shape
    sums = torch.zeros(batch, length + 1, dtype=torch.float32, device=segment_ids.device)
    sums.scatter_add_(1, segment_ids, per_token_square.to(torch.float32))
    return sums.sqrt_()
