"""DeepSpeed in the test sessions: nox installs it in every session that runs it (noxfile ``_install_deepspeed``);
where it could not be installed, the session says why in the file ``NEFT_DEEPSPEED_INSTALL_ERROR`` names, and the
tests that need it skip with that pip error as their reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

INSTALL_ERROR = "NEFT_DEEPSPEED_INSTALL_ERROR"
# Torch's AdamW: DeepSpeed's fused Adam needs its CUDA ops, which are not built here (DS_BUILD_OPS=0).
CPU_OPTIMIZER = {"type": "AdamW", "params": {"lr": "auto", "torch_adam": True}}
# ZeRO-3 keeps parameters under 100k elements whole on every rank: at threshold 0 the tiny model's embedding is
# partitioned as a real model's is.
ZERO3 = {"stage": 3, "stage3_param_persistence_threshold": 0}
ZERO = {
    "2": {"stage": 2},
    "3": ZERO3,
    "3-offload": {**ZERO3, "offload_param": {"device": "cpu"}, "offload_optimizer": {"device": "cpu"}},
}


def require_deepspeed() -> None:
    """Skip, with the pip error as the reason, where the session could not install DeepSpeed."""
    error = os.environ.get(INSTALL_ERROR)
    if error:
        pytest.skip(
            f"deepspeed could not be installed in this environment: {Path(error).read_text().strip()}"
        )
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (the nox sessions install it)")


def deepspeed_config(stage: str) -> dict:
    """A ZeRO config that runs on DeepSpeed's CPU accelerator, ``auto`` where the trainer fills it in."""
    return {
        "zero_optimization": ZERO[stage],
        "optimizer": CPU_OPTIMIZER,
        "zero_allow_untested_optimizer": True,
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
    }
