"""``neft_plugins.mlx.train``: MLX-LM's ``mlx_lm.tuner.train`` with NEFTune, the same arguments plus our keys.

It attaches NEFTune for the run (after MLX-LM's ``--grad-checkpoint``, which it applies itself first, so the
checkpointed blocks stay all of them and the noise is drawn once, outside the recomputation), feeds the loss the
batch's lengths, adds the ``neft/*`` entries to every training report (the console, and ``report_to``'s backends
through the callback), saves the noise stream beside each adapter checkpoint and continues it from the one a run
resumes from.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlx.nn as nn
from mlx_lm.tuner import trainer
from mlx_lm.tuner.callbacks import TrainingCallback

from neft_plugins.config import NEFTuneConfig, as_config
from neft_plugins.mlx.handle import MLXNEFTune
from neft_plugins.versions import warn_if_untested

logger = logging.getLogger("neft_plugins")


def train(
    model: nn.Module,
    optimizer: Any,
    train_dataset: Any,
    val_dataset: Any = None,
    args: trainer.TrainingArgs | None = None,
    loss: Callable[..., Any] = trainer.default_loss,
    iterate_batches: Callable[..., Any] = trainer.iterate_batches,
    training_callback: TrainingCallback | None = None,
    *,
    config: NEFTuneConfig | None = None,
    resume_adapter_file: str | None = None,
    **keys: Any,
) -> None:
    """``mlx_lm.tuner.train(...)`` with ``neftune_alpha=5`` (or ``config=NEFTuneConfig(...)``) added.

    ``resume_adapter_file``: the adapter file the run resumed from (``--resume-adapter-file``), whose saved noise
    stream it continues."""
    config = as_config(config, keys)
    warn_if_untested("mlx-lm")
    args = args or trainer.TrainingArgs()
    if not config.enabled:
        trainer.train(
            model, optimizer, train_dataset, val_dataset, args, loss, iterate_batches, training_callback
        )
        return
    if args.grad_checkpoint:
        trainer.grad_checkpoint(model.layers[0])
        args = dataclasses.replace(args, grad_checkpoint=False)
    saved = load_stream(resume_adapter_file) if resume_adapter_file else {}
    handle = MLXNEFTune(
        model,
        config,
        total_steps=math.ceil(args.iters / max(1, args.grad_accumulation_steps)),
        accumulation_steps=args.grad_accumulation_steps,
        first_pass=saved.get("passes", 0),
        seed=saved.get("seed"),
    )
    if saved and (saved.get("world_size"), saved.get("seed")) != (handle.world.size(), handle.seed):
        logger.warning(
            "neft_plugins: %s's noise stream was saved by %s processes with seed %s; this run has %s with seed %s, "
            "so each rank's stream does not continue exactly",
            resume_adapter_file,
            saved.get("world_size"),
            saved.get("seed"),
            handle.world.size(),
            handle.seed,
        )
    try:
        trainer.train(
            model,
            optimizer,
            train_dataset,
            val_dataset,
            args,
            loss=handle.loss(loss),
            iterate_batches=_saving_stream(iterate_batches, handle, args),
            training_callback=NEFTuneReports(handle, training_callback),
        )
        if handle.world.rank() == 0:
            save_stream(args.adapter_file, handle, handle.passes)
            if args.iters % args.steps_per_save == 0:  # MLX-LM's numbered checkpoint of the last iteration
                save_stream(_numbered(args.adapter_file, args.iters), handle, handle.passes)
    finally:
        handle.detach()


class NEFTuneReports(TrainingCallback):
    """Adds the ``neft/*`` entries to each training report, prints them on rank 0, then hands the report on."""

    def __init__(self, handle: MLXNEFTune, wrapped: TrainingCallback | None) -> None:
        self.handle = handle
        self.wrapped = wrapped

    def on_train_loss_report(self, train_info: dict) -> None:
        logs = self.handle.read_logs()
        train_info.update(logs)
        if self.handle.world.rank() == 0:
            shown = ", ".join(f"{key} {value:.4g}" for key, value in logs.items())
            print(f"Iter {train_info.get('iteration')}: {shown}", flush=True)
        if self.wrapped is not None:
            self.wrapped.on_train_loss_report(train_info)

    def on_val_loss_report(self, val_info: dict) -> None:
        if self.wrapped is not None:
            self.wrapped.on_val_loss_report(val_info)


def stream_file(adapter_file: str | Path) -> Path:
    """Where an adapter file's noise stream is saved: ``adapters.safetensors`` -> ``adapters.neftune.json``."""
    return Path(adapter_file).with_suffix(".neftune.json")


def save_stream(adapter_file: str | Path, handle: MLXNEFTune, passes: int) -> None:
    state = {"seed": handle.seed, "passes": handle.first_pass + passes, "world_size": handle.world.size()}
    stream_file(adapter_file).write_text(json.dumps(state) + "\n")


def load_stream(adapter_file: str | Path) -> dict[str, int]:
    path = stream_file(adapter_file)
    if not path.is_file():
        logger.warning(
            "neft_plugins: %s has no NEFTune noise stream beside it (%s), so the resumed run's noise starts a "
            "new stream",
            adapter_file,
            path.name,
        )
        return {}
    return json.loads(path.read_text())


def _numbered(adapter_file: str | Path, iteration: int) -> Path:
    """MLX-LM's checkpoint of ``iteration`` beside ``adapter_file``."""
    return Path(adapter_file).parent / f"{iteration:07d}_adapters.safetensors"


def _saving_stream(
    iterate_batches: Callable[..., Any], handle: MLXNEFTune, args: trainer.TrainingArgs
) -> Callable:
    """``iterate_batches`` that, when training asks for iteration k + 1, saves the stream beside the adapter
    checkpoints MLX-LM wrote after iteration k (``adapters.safetensors`` and ``{k:07d}_adapters.safetensors``)."""

    def batches(*positional: Any, **named: Any) -> Iterator[Any]:
        if not named.get("loop"):  # evaluation
            yield from iterate_batches(*positional, **named)
            return
        for iteration, batch in enumerate(iterate_batches(*positional, **named), start=1):
            done = iteration - 1
            if done and done % args.steps_per_save == 0 and handle.world.rank() == 0:
                save_stream(args.adapter_file, handle, done)
                save_stream(_numbered(args.adapter_file, done), handle, done)
            yield batch

    return batches


__all__ = ["NEFTuneReports", "train"]
