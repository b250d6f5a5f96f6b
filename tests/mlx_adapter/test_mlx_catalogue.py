"""MLX-LM's whole catalogue of model families, built tiny (``mlx_adapter.mlx_catalogue``): on each, NEFTune's
noise lands exactly at the input of the first block, per row of norm alpha/sqrt(3) on its real tokens and none on
padding, outside the loss, in eval mode or after detaching, or NEFTune refuses with its reason; never wrong.

``PYTHONPATH=tests python -m mlx_adapter.mlx_catalogue --write docs/mlx_models.md`` regenerates the docs table.
"""

from __future__ import annotations

from collections import Counter

import pytest

pytest.importorskip("mlx_lm")

from mlx_adapter.mlx_catalogue import sweep

# Families built tiny with mlx-lm 0.32.2 on the CPU: 122 of 126 (the rest need Metal, an extra package or a
# checkpoint's data). A few below, so that a regression in building shows and a new mlx-lm does not fail at once.
MIN_BUILT = 118


def test_every_mlx_family_is_noised_right_or_refused() -> None:
    results = sweep()
    counts = Counter(res.status for res in results)
    wrong = [f"{res.family}: {res.reason}" for res in results if res.status == "wrong"]
    assert not wrong, "NEFTune is silently wrong on:\n" + "\n".join(wrong)
    built = counts["right"] + counts["refused"]
    not_built = [f"{res.family}: {res.reason}" for res in results if res.status == "not built"]
    assert built >= MIN_BUILT, f"only {built} families built ({dict(counts)}); not built:\n" + "\n".join(
        not_built
    )
    assert counts["right"] >= built - 8, dict(counts)
