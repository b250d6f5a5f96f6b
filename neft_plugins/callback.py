"""``NEFTuneCallback``: NEFTune for any transformers Trainer (Trainer, TRL's SFTTrainer, DPOTrainer, ...)."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from neft_plugins import builtin_neftune
from neft_plugins.attach import NEFTuneAttachError, NEFTuneHandle, attach, distributed_rank
from neft_plugins.config import NEFTuneConfig, NEFTuneConflictError, as_config, check_no_double_noise
from neft_plugins.versions import installed_version, tested_range, warn_if_untested

STATE_FILE = "neft_state_rank{rank}.pt"
# What the callback wraps on the Trainer (see ARCHITECTURE.md).
TRAINER_HOOK_POINTS = ("train", "training_step", "log")


class NEFTuneCallback(TrainerCallback):
    """Attaches NEFTune when training begins and detaches it when training ends or fails.

    ``NEFTuneCallback(neftune_alpha=5)`` or ``NEFTuneCallback(NEFTuneConfig(...))``; bad values are
    rejected here, before any model is loaded.
    """

    def __init__(self, config: NEFTuneConfig | None = None, **keys: Any) -> None:
        self.config = as_config(config, keys)
        check_trainer_hook_points()
        self.handle: NEFTuneHandle | None = None
        self._guarded: set[int] = set()

    def on_init_end(self, args, state, control, **kwargs):
        _check_trainer_args(args, self.config.neftune_alpha)
        # Callbacks given to the constructor: guard the whole of train().
        self._guard(_calling_trainer(), "train")

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        trainer = _calling_trainer()
        _refuse_builtin(trainer, self.config.neftune_alpha)
        if not self.config.enabled:
            return
        # Callbacks added after construction: guard each training step.
        self._guard(trainer, "training_step")
        self._detach()
        self.handle = attach(model, self.config, sequence_group=_context_parallel_group(trainer))
        self.handle.set_step(state.global_step, state.max_steps)
        if state.global_step > 0:
            self._load_state(_resumed_checkpoint(args.output_dir, state.global_step))

    def on_step_begin(self, args, state, control, **kwargs):
        if self.handle is not None:
            self.handle.set_step(state.global_step, state.max_steps)

    def on_save(self, args, state, control, **kwargs):
        if self.handle is not None and self.handle.rng_state() is not None:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            os.makedirs(folder, exist_ok=True)
            rank, _ = distributed_rank()
            torch.save(
                {"rng_state": self.handle.rng_state()}, os.path.join(folder, STATE_FILE.format(rank=rank))
            )

    def on_train_end(self, args, state, control, **kwargs):
        self._detach()

    def _load_state(self, checkpoint: str) -> None:
        assert self.handle is not None
        rank, _ = distributed_rank()
        path = os.path.join(checkpoint, STATE_FILE.format(rank=rank))
        if os.path.exists(path):
            self.handle.set_rng_state(torch.load(path, weights_only=True)["rng_state"])

    def _detach(self) -> None:
        if self.handle is not None:
            self.handle.detach()
            self.handle = None

    def _guard(self, trainer: Trainer, method: str) -> None:
        """Detach if ``trainer.<method>`` raises, and put our logs into the trainer's own log calls."""
        if id(trainer) in self._guarded:
            return
        self._guarded.add(id(trainer))
        trainer.log = self._with_neft_logs(trainer.log)
        setattr(trainer, method, self._detach_on_error(getattr(trainer, method)))

    def _detach_on_error(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except BaseException:
                self._detach()
                raise

        return guarded

    def _with_neft_logs(self, log: Callable[..., Any]) -> Callable[..., Any]:
        # Added before the trainer's log() runs, so history, console, TensorBoard and W&B all see them.
        @functools.wraps(log)
        def log_with_neft(logs: dict[str, float], *args: Any, **kwargs: Any) -> Any:
            if self.handle is not None and "loss" in logs:
                logs.update(self.handle.stats.read_and_reset(self.handle.alpha))
            return log(logs, *args, **kwargs)

        return log_with_neft


def check_trainer_hook_points() -> None:
    """Stop, naming what is missing, if this transformers' Trainer lacks a method the callback wraps."""
    missing = [name for name in TRAINER_HOOK_POINTS if not callable(getattr(Trainer, name, None))]
    if missing:
        raise NEFTuneAttachError(
            f"transformers {installed_version('transformers')}: Trainer.{', Trainer.'.join(missing)} missing; "
            f"NEFTuneCallback wraps it. Install a tested version ({tested_range('transformers')})."
        )
    warn_if_untested("transformers")
    warn_if_untested("trl")


def _refuse_builtin(trainer: Trainer, neftune_alpha: float) -> None:
    """Stop before training if transformers' own NEFTune is on too; its hook, already attached by
    ``train()``, is removed first so that stopping leaves the model clean."""
    try:
        _check_trainer_args(trainer.args, neftune_alpha)
    except NEFTuneConflictError:
        _remove_builtin_hook(trainer)
        raise


def _check_trainer_args(args: Any, neftune_alpha: float) -> None:
    builtin_alpha = getattr(args, "neftune_noise_alpha", None)
    check_no_double_noise({"neftune_alpha": neftune_alpha, "neftune_noise_alpha": builtin_alpha})


def _remove_builtin_hook(trainer: Trainer) -> None:
    hook = getattr(trainer, "neftune_hook_handle", None)
    if hook is not None:
        builtin_neftune.deactivate(trainer.model, hook)


def _context_parallel_group(trainer: Trainer) -> torch.distributed.ProcessGroup | None:
    """The group across which accelerate's context parallelism splits each sequence, if it is on."""
    parallelism = getattr(trainer.accelerator, "parallelism_config", None)
    if parallelism is None or not parallelism.cp_enabled:
        return None
    return trainer.accelerator.torch_device_mesh["cp"].get_group()


def _resumed_checkpoint(output_dir: str, step: int) -> str:
    """The folder train(resume_from_checkpoint=...) resumed from: train()'s own argument when it named
    one, else the trainer's standard ``checkpoint-<step>`` folder."""
    named = _caller_local("resume_from_checkpoint", (str, os.PathLike))
    return os.fspath(named) if named is not None else os.path.join(output_dir, f"checkpoint-{step}")


def _calling_trainer() -> Trainer:
    trainer = _caller_local("self", Trainer)
    if trainer is None:
        raise NEFTuneAttachError(
            "NEFTuneCallback must be called by a transformers Trainer (or a subclass such as TRL's)"
        )
    return trainer


def _caller_local(name: str, kind: type | tuple[type, ...]) -> Any:
    """The nearest caller's local variable ``name`` that is a ``kind``, or None (callbacks get no trainer)."""
    frame = inspect.currentframe()
    while frame is not None:
        value = frame.f_locals.get(name)
        if isinstance(value, kind):
            return value
        frame = frame.f_back
    return None
