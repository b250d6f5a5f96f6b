"""One statement of the math, two array libraries: for the same layouts the MLX engine and the torch engine give
each sequence the same scale and the same noise statistics. Runs in the MLX cell once torch is installed beside
MLX (the cell's second step); the first step proves the MLX route needs no torch."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
import torch

from neft_plugins.builtin_plugins import gaussian_noise, uniform_noise
from neft_plugins.mlx.noise import noised_positions, per_token_scale, row_norms, unit_noise
from neft_plugins.noise import IGNORE_INDEX, scope_mask, segments_from_row_values
from neft_plugins.noise import per_token_scale as torch_per_token_scale

WIDTH = 64
LENGTHS = [(0, 5), (3, 17), (6, 7), (2, 33)]  # (offset, length) per row, MLX-LM's layout
PADDED = 41


def torch_layout(scope: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The same rows as transformers batches them: an attention mask and labels with the prompt at -100."""
    positions = torch.arange(PADDED)[None, :]
    offsets = torch.tensor([[offset] for offset, _ in LENGTHS])
    lengths = torch.tensor([[length] for _, length in LENGTHS])
    mask = (positions < lengths).long()
    labels = torch.where(positions < offsets, IGNORE_INDEX, 1)
    segments = segments_from_row_values(mask, mask != 0)
    noised = scope_mask(segments, labels, scope)
    return segments * noised, noised


@pytest.mark.parametrize("scope", ["all", "prompt", "response"])
def test_both_engines_scale_each_position_alike(scope):
    segments, noised = torch_layout(scope)
    torch_scale = torch_per_token_scale(segments, noised, WIDTH).numpy()
    mlx_noised = noised_positions(mx.array(LENGTHS), PADDED, scope, padded=False)
    mlx_scale = np.array(per_token_scale(mlx_noised, WIDTH))
    assert np.array_equal(np.array(mlx_noised), noised.numpy())
    np.testing.assert_allclose(mlx_scale, torch_scale, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("distribution", "torch_sampler"), [("uniform", uniform_noise), ("gaussian", gaussian_noise)]
)
def test_both_engines_give_each_sequence_the_same_noise_statistics(distribution, torch_sampler):
    alpha, draws = 5.0, 300
    segments, noised = torch_layout("all")
    torch_scale = torch_per_token_scale(segments, noised, WIDTH)
    generator = torch.Generator().manual_seed(0)
    torch_norms = []
    for _ in range(draws):
        noise = (
            torch_sampler(torch.empty(len(LENGTHS), PADDED, WIDTH), alpha, generator) * torch_scale[..., None]
        )
        torch_norms.append(noise.square().sum(dim=(1, 2)).sqrt().numpy())
    mlx_noised = noised_positions(mx.array(LENGTHS), PADDED, "all", padded=False)
    mlx_scale = per_token_scale(mlx_noised, WIDTH) * alpha
    keys = mx.random.split(mx.random.key(0), draws)
    mlx_norms = [
        np.array(
            row_norms(
                unit_noise(distribution, (len(LENGTHS), PADDED, WIDTH), keys[i]) * mlx_scale[..., None],
                mlx_noised,
            )
        )
        for i in range(draws)
    ]
    torch_norms, mlx_norms = np.array(torch_norms), np.array(mlx_norms)
    target = alpha / math.sqrt(3)
    for row in range(len(LENGTHS)):  # per sequence: the means agree, and both are alpha/sqrt(3)
        spread = np.std(torch_norms[:, row]) / math.sqrt(draws)
        assert abs(torch_norms[:, row].mean() - mlx_norms[:, row].mean()) < 5 * math.sqrt(2) * spread
        assert abs(mlx_norms[:, row].mean() - target) < 5 * spread + 0.01 * target
        assert np.std(mlx_norms[:, row]) == pytest.approx(np.std(torch_norms[:, row]), rel=0.25)
