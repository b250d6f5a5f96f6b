"""Run by `mlx.launch -n 2` (test_two_ranks.py): each rank trains the tiny Llama through neft_plugins.mlx.train on
its half of every batch and prints what the spy saw and the last report, as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlx.core as mx
from mlx_adapter.test_train_route import short_args, spied_run

if __name__ == "__main__":
    rank = mx.distributed.init().rank()
    folder = Path(sys.argv[1]) / f"rank{rank}"
    spy, reports, _ = spied_run(folder, args=short_args(folder, iters=2), neftune_alpha=5, neftune_seed=1)
    print(
        json.dumps({"rank": rank, "norms": [step.noise_norms for step in spy.steps], "report": reports[-1]})
    )
