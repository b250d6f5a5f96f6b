"""``NEFTuneCallback``: NEFTune for any transformers Trainer (Trainer, TRL's SFTTrainer, DPOTrainer, ...)."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from neft_plugins import transformers_neftune
from neft_plugins._trainer_patch import WrapOnce, trainer_class_named
from neft_plugins.clean_loss import CleanLoss
from neft_plugins.config import (
    BUILTIN_KEY,
    NEFTuneConfig,
    NEFTuneConflictError,
    as_config,
    check_no_double_noise,
)
from neft_plugins.engine.structure import compiled_wrapper, unwrap_model
from neft_plugins.errors import NEFTuneAttachError
from neft_plugins.handle import NEFTuneHandle, attach
from neft_plugins.versions import missing_hook_point, warn_if_untested

logger = logging.getLogger("neft_plugins")

# On-policy trainers that compare the (noised) policy pass with clean old-policy/reference passes.
ON_POLICY_TRAINERS = ("GRPOTrainer", "RLOOTrainer", "OnlineDPOTrainer")
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
        self._trainer: Trainer | None = None
        self._resumed_from: str | None = None  # what the bound trainer's train() resumes from
        self._guarded = WrapOnce()
        self._clean_loss = CleanLoss(lambda: self.handle is not None)

    def bind(self, trainer: Trainer) -> NEFTuneCallback:
        """Tell the callback its trainer: integrations that build the trainer call this (``NEFTuneCallback(config)
        .bind(trainer)``) before ``trainer.train()``. It wraps ``train`` to detach if it raises and to read the
        checkpoint it resumes from. Unbound, the callback looks for the trainer that calls it on the call stack."""
        self._trainer = trainer
        self._guard(trainer, "train")
        return self

    def on_init_end(self, args, state, control, **kwargs):
        _check_trainer_args(args, self.config.neftune_alpha)
        if self._trainer is None:  # given to the constructor in user code
            self.bind(_calling_trainer())

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        trainer = self._trainer or _calling_trainer()
        _refuse_builtin(trainer, self.config.neftune_alpha)
        if not self.config.enabled:
            return
        # Added with add_callback after construction, unbound: guard each training step.
        self._guard(trainer, "training_step")
        self._detach()
        self.handle = attach(
            _outermost(trainer, model), self.config, sequence_group=_context_parallel_group(trainer)
        )
        self.handle.set_step(state.global_step, state.max_steps)
        _warn_on_policy(trainer)
        if self.config.neftune_clean_loss:
            self._clean_loss.measure(trainer)
        if state.global_step > 0:
            self.handle.load_noise_state(self._resumed_checkpoint(args.output_dir, state.global_step))

    def on_step_begin(self, args, state, control, **kwargs):
        if self.handle is not None:
            self.handle.set_step(state.global_step, state.max_steps)

    def on_save(self, args, state, control, **kwargs):
        if self.handle is not None:
            self.handle.save_noise_state(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))

    def on_train_end(self, args, state, control, **kwargs):
        self._detach()

    def _detach(self) -> None:
        if self.handle is not None:
            self.handle.detach()
            self.handle = None

    def _guard(self, trainer: Trainer, method: str) -> None:
        """Detach if ``trainer.<method>`` raises, and put our logs into the trainer's own log calls."""
        self._guarded.wrap(
            trainer,
            log=self._with_neft_logs,
            **{method: functools.partial(self._detach_on_error, trainer)},
        )

    def _detach_on_error(self, trainer: Trainer, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if method.__name__ == "train":
                self._resumed_from = _resume_argument(trainer, method, args, kwargs)
            try:
                return method(*args, **kwargs)
            except BaseException:
                self._detach()
                raise

        return guarded

    def _resumed_checkpoint(self, output_dir: str, step: int) -> str:
        """The folder train(resume_from_checkpoint=...) resumed from: the argument the guarded train() got, or
        (unbound, added while train() runs) the one on the call stack; else the ``checkpoint-<step>`` folder."""
        named = self._resumed_from
        if named is None and self._trainer is None:
            named = _caller_local("resume_from_checkpoint", (str, os.PathLike))
        if named is None:
            return os.path.join(output_dir, f"checkpoint-{step}")
        return os.fspath(named)

    def _with_neft_logs(self, log: Callable[..., Any]) -> Callable[..., Any]:
        # Added before the trainer's log() runs, so history, console, TensorBoard and W&B all see them.
        @functools.wraps(log)
        def log_with_neft(logs: dict[str, float], *args: Any, **kwargs: Any) -> Any:
            if self.handle is not None and "loss" in logs:
                logs.update(self.handle.read_logs())
                logs.update(self._clean_loss.read_logs())
            return log(logs, *args, **kwargs)

        return log_with_neft


def _warn_on_policy(trainer: Trainer) -> None:
    """GRPO-style trainers compare the noised policy pass with clean old-policy and reference passes."""
    name = trainer_class_named(trainer, ON_POLICY_TRAINERS)
    if name is None:
        return
    beta, iterations = (
        getattr(trainer.args, "beta", 0.0) or 0.0,
        getattr(trainer.args, "num_iterations", 1) or 1,
    )
    if beta == 0 and iterations == 1:
        return
    logger.warning(
        "neft_plugins: %s: NEFTune noises the policy pass that carries the gradient, not the old-policy or "
        "reference log-prob passes (no_grad). The KL (beta=%s) and the importance ratio (num_iterations=%s) "
        "then compare a noised pass with clean ones: the logged kl is above 0 and the ratio moves from step 0 "
        "by noise alone (measured: benchmarks/results/GRPO.md). Do not read kl or clip_ratio as drift.",
        name,
        beta,
        iterations,
    )


def check_trainer_hook_points() -> None:
    """Stop, naming what is missing, if this transformers' Trainer lacks a method the callback wraps; then one
    warning per untested version of transformers, TRL and (imported first, as Unsloth asks) Unsloth."""
    missing = [
        f"Trainer.{name}" for name in TRAINER_HOOK_POINTS if not callable(getattr(Trainer, name, None))
    ]
    if missing:
        raise missing_hook_point("transformers", missing, "NEFTuneCallback")
    warn_if_untested("transformers")
    warn_if_untested("trl")
    if "unsloth" in sys.modules:
        warn_if_untested("unsloth")


def _refuse_builtin(trainer: Trainer, neftune_alpha: float) -> None:
    """Stop before training if transformers' own NEFTune is on too; its hook, already attached by
    ``train()``, is removed first so that stopping leaves the model clean."""
    try:
        _check_trainer_args(trainer.args, neftune_alpha)
    except NEFTuneConflictError:
        _remove_builtin_hook(trainer)
        raise


def _check_trainer_args(args: Any, neftune_alpha: float) -> None:
    builtin_alpha = getattr(args, BUILTIN_KEY, None)
    check_no_double_noise({"neftune_alpha": neftune_alpha, BUILTIN_KEY: builtin_alpha})


def _remove_builtin_hook(trainer: Trainer) -> None:
    hook = getattr(trainer, "neftune_hook_handle", None)
    if hook is not None:
        transformers_neftune.deactivate(trainer.model, hook)


def _outermost(trainer: Trainer, model: torch.nn.Module) -> torch.nn.Module:
    """The trainer's wrapped model when it is ``model`` compiled: the torch.compile wrapper's hooks run outside the
    compiled code, where NEFTune learns on its first pass."""
    wrapped = getattr(trainer, "model_wrapped", None)
    if (
        isinstance(wrapped, torch.nn.Module)
        and compiled_wrapper(wrapped) is not None
        and unwrap_model(wrapped) is unwrap_model(model)
    ):
        return wrapped
    return model


def _context_parallel_group(trainer: Trainer) -> torch.distributed.ProcessGroup | None:
    """The group across which accelerate's context parallelism splits each sequence, if it is on."""
    parallelism = getattr(trainer.accelerator, "parallelism_config", None)
    if parallelism is None or not parallelism.cp_enabled:
        return None
    return trainer.accelerator.torch_device_mesh["cp"].get_group()


def _resume_argument(
    trainer: Trainer, train: Callable[..., Any], args: tuple, kwargs: dict[str, Any]
) -> str | None:
    """The checkpoint folder a ``train(resume_from_checkpoint=...)`` call names; ``True`` is the newest one in
    the output folder, as the Trainer reads it. An override ``train(*args, **kwargs)`` that hands its arguments on
    (ms-swift's) is read as transformers' ``Trainer.train``."""
    signature = inspect.signature(train)
    if "resume_from_checkpoint" not in signature.parameters:
        signature = inspect.signature(functools.partial(Trainer.train, trainer))
    bound = signature.bind_partial(*args, **kwargs).arguments
    value = bound.get("resume_from_checkpoint")
    if value is True:
        from transformers.trainer_utils import get_last_checkpoint

        value = get_last_checkpoint(trainer.args.output_dir)
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else None


def _calling_trainer() -> Trainer:
    trainer = _caller_local("self", Trainer)
    if trainer is None:
        raise NEFTuneAttachError(
            "NEFTuneCallback must be called by a transformers Trainer (or a subclass such as TRL's), and found "
            "none calling it on the call stack: an integration that builds its trainer elsewhere hands it with "
            "NEFTuneCallback(...).bind(trainer)"
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
