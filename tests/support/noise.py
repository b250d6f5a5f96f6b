"""The paper's noise norm: uniform noise scaled by alpha / sqrt(L * d) gives each sequence of L tokens of width d
an expected norm of alpha / sqrt(3)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from support.spy import Pass


def paper_norm(alpha: float) -> float:
    return alpha / math.sqrt(3)


def assert_near_paper_norm(values: Iterable[float], alpha: float, rel: float, context: object = "") -> None:
    """Every value is within ``rel`` (relative, exclusive) of alpha / sqrt(3); each caller states its ``rel``."""
    expected = paper_norm(alpha)
    measured = [float(value) for value in values]
    misses = [value for value in measured if not abs(value / expected - 1) < rel]
    assert measured and not misses, (
        f"noise norms {measured}: {misses} not within {rel:.1%} of alpha/sqrt(3) = {expected:.4f} {context}"
    )


def uniform_norm_tolerance(elements: int, sigmas: float = 5.0) -> float:
    """Relative tolerance on one sequence's uniform-noise norm over ``elements`` entries.

    For u ~ U(-s, s): Var(u²)/E(u²)² = 4/5, so the squared norm's relative std is sqrt(0.8/n),
    and the norm's about half of that.
    """
    return sigmas * 0.5 * math.sqrt(0.8 / elements)


def assert_scaled_by_the_row(passes: Iterable[Pass], alpha: float) -> list[float]:
    """What transformers' built-in NEFTune gives: each sequence alpha/sqrt(3) * sqrt(L_s / L_row), with L_row its
    whole (padded or packed) row's length, within 15%. Returns each sequence's ratio to alpha/sqrt(3)."""
    ratios = []
    for each in passes:
        row = each.segments.shape[1]
        for length, norm in each.sequences():
            expected = paper_norm(alpha) * math.sqrt(length / row)
            assert abs(norm / expected - 1) < 0.15, (length, row, norm)
            ratios.append(norm / paper_norm(alpha))
    return ratios


def assert_the_builtin_on_padded_rows(passes: list[Pass], alpha: float) -> None:
    """transformers' built-in NEFTune on right-padded batches: scaled by the padded row (some sequence below 0.9 of
    alpha/sqrt(3)) and padding noised. The ratios are printed (``pytest -s``) for the docs."""
    ratios = assert_scaled_by_the_row(passes, alpha)
    padding = max(each.largest_padding_noise() for each in passes)
    print(
        f"built-in per-sequence ratios: {[round(r, 2) for r in ratios]}; largest padding noise {padding:.3f}"
    )
    assert padding > 0, "the built-in noises padding"
    assert min(ratios) < 0.9
