"""A test-only Axolotl plugin that lets ``axolotl train`` with ``deepspeed:`` run on several CPU processes (gloo).

accelerate picks the process group's backend from the device (nccl on CUDA, ...) and finds none on the CPU: under
DeepSpeed its ``PartialState`` then counts 1 process of the 2 on every rank, although DeepSpeed itself (on gloo)
counts 2. Each rank then believes it is the main process: both print the step logs, and the trainer's dataloader
is not sharded, so both ranks train on the same batches. No Axolotl key reaches that backend: Axolotl creates the
state at config load (``setup_deepspeed_env``), TrainingArguments rebuilds it under DeepSpeed without
``ddp_backend``, and Axolotl's trainer resets it once more before building its Accelerator (it reads
``accelerator_config.use_configured_state`` after TrainingArguments has popped it). So this plugin gives every
``PartialState`` of a launched process gloo where no backend is named, as a GPU run gets nccl. List it in
``plugins:``; nothing else changes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from axolotl.integrations.base import BasePlugin


def gloo_by_default(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def init_on_gloo(state: Any, cpu: bool = False, **kwargs: Any) -> None:
        if "LOCAL_RANK" in os.environ and kwargs.get("backend") is None:  # a launched process of several
            kwargs["backend"] = "gloo"
        init(state, cpu, **kwargs)

    return init_on_gloo


class DeepSpeedOnGloo(BasePlugin):
    def register(self, cfg: dict) -> None:
        """Runs in each launched process at config load, before Axolotl's first ``PartialState()``."""
        from accelerate import PartialState

        if cfg.get("deepspeed"):
            PartialState.__init__ = gloo_by_default(PartialState.__init__)
