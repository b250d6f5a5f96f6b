"""The paper's noise norm: uniform noise scaled by alpha / sqrt(L * d) gives each sequence of L tokens of width d
an expected norm of alpha / sqrt(3)."""

from __future__ import annotations

import math
from collections.abc import Iterable


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
