"""Per-sequence noise norms of `neft-mlx lora --neftune_alpha 5` (20 iterations of the tests' tiny local Llama in
MLX-LM's compiled step), measured by the tests' spy: the ratio to alpha/sqrt(3), padding, the validation losses.

    PYTHONPATH=.:tests .nox/mlx-version-0-32-2/bin/python benchmarks/mlx_ratios.py
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import pytest
from mlx_adapter.assets import save_model_dir, write_data
from mlx_adapter.runs import run_lora

ALPHA = 5.0


def main() -> None:
    root = Path(tempfile.mkdtemp())
    model_dir, data = save_model_dir(root / "model"), write_data(root / "data")
    with pytest.MonkeyPatch.context() as monkeypatch:
        run = run_lora(
            monkeypatch, model_dir, data, root / "out", "--iters", "20", "--steps-per-eval", "20",
            "--neftune_alpha", str(ALPHA),
        )  # fmt: skip
    ratios = run.spy.ratios(ALPHA)
    scores = [(ratio - 1) / spread for ratio, spread in zip(ratios, run.spy.spreads(), strict=True)]
    print(
        f"sequences {len(ratios)}; ratio to alpha/sqrt(3): mean {statistics.mean(ratios):.4f}, "
        f"sd {statistics.stdev(ratios):.4f}, min {min(ratios):.4f}, max {max(ratios):.4f}; largest |z| "
        f"{max(map(abs, scores)):.2f}; padding max {max(step.padding_max for step in run.spy.steps)}; "
        f"validation losses {run.val_losses}"
    )


if __name__ == "__main__":
    main()
