"""NEFTune's arithmetic over MLX arrays: the statement in ``neft_plugins.noise`` for MLX-LM's batch layout.

MLX-LM trains on right-padded rows with ``lengths`` = (offset, length) per row: the row's tokens are the first
``length`` positions, its prompt the first ``offset`` (``mask_prompt``; 0 without). No packing: each row is one
sequence s, and each noised position t of it gets ``alpha / sqrt(L_s * d) * eps_t``; every other position 0.
"""

from __future__ import annotations

import math

import mlx.core as mx

SQRT_3 = math.sqrt(3.0)


def noised_positions(lengths: mx.array, length: int, scope: str, padded: bool) -> mx.array:
    """``[B, length]`` bool: the positions of the model's input that receive noise. ``padded``: every position
    (transformers' built-in, which scales by the padded length and noises padding)."""
    positions = mx.arange(length)[None, :]
    if padded:
        return mx.broadcast_to(positions >= 0, (lengths.shape[0], length))
    real = positions < lengths[:, 1:2]
    if scope == "all":
        return real
    prompt = positions < lengths[:, 0:1]
    return mx.logical_and(real, prompt if scope == "prompt" else mx.logical_not(prompt))


def per_token_scale(noised: mx.array, dim: int) -> mx.array:
    """``1 / sqrt(L_s * dim)`` at each noised position of row s (float32), 0 elsewhere."""
    tokens = noised.astype(mx.float32).sum(axis=1, keepdims=True)
    return mx.rsqrt(mx.maximum(tokens, 1.0) * dim) * noised


def unit_noise(distribution: str, shape: tuple[int, ...], key: mx.array) -> mx.array:
    """Noise of magnitude 1: Uniform(-1, 1), or a normal of the same variance (1/3)."""
    if distribution == "uniform":
        return mx.random.uniform(-1.0, 1.0, shape, key=key)
    return mx.random.normal(shape, key=key) / SQRT_3


def pass_key(base: mx.array, index: mx.array) -> mx.array:
    """The key of noised pass ``index`` (a uint32 array, traced in a compiled step) of the stream ``base``: one
    split of the base key offset by the index, so the stream can start again at any pass."""
    return mx.random.split(base + mx.stack([mx.zeros_like(index), index]))[0]


def row_norms(values: mx.array, where: mx.array) -> mx.array:
    """``[B]`` float32: each row's Euclidean norm over the positions ``where`` holds."""
    squares = mx.square(values.astype(mx.float32)).sum(axis=-1) * where
    return mx.sqrt(squares.sum(axis=1))
