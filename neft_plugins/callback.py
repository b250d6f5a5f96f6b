"""``NEFTuneCallback``: NEFTune for any transformers Trainer (Trainer, TRL's SFTTrainer, DPOTrainer, ...)."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import logging
import os
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from neft_plugins import builtin_neftune
from neft_plugins.attach import NEFTuneHandle, attach
from neft_plugins.config import NEFTuneConfig, NEFTuneConflictError, as_config, check_no_double_noise
from neft_plugins.errors import NEFTuneAttachError
from neft_plugins.stream import distributed_rank
from neft_plugins.structure import compiled_wrapper, unwrap_model
from neft_plugins.versions import installed_version, tested_range, warn_if_untested

logger = logging.getLogger("neft_plugins")

STATE_FILE = "neft_state_rank{rank}.pt"
# Trainers whose loss is not a language-model loss on the batch: neft/clean_loss would mean something else.
NOT_LM_LOSS_TRAINERS = (
    "DPOTrainer",
    "GRPOTrainer",
    "RLOOTrainer",
    "OnlineDPOTrainer",
    "KTOTrainer",
    "ORPOTrainer",
    "CPOTrainer",
    "BCOTrainer",
    "PPOTrainer",
    "RewardTrainer",
    "PRMTrainer",
    "GKDTrainer",
)
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
        self._guarded: weakref.WeakSet[Trainer] = weakref.WeakSet()
        self._measured_clean_loss: weakref.WeakSet[Trainer] = weakref.WeakSet()
        # (clean, noised) losses of each micro-batch of the last logging step, normalised as the trainer's
        self._clean_sums: list[torch.Tensor] = []
        self._clean_pending: tuple[torch.Tensor, torch.Tensor] | None = None

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
        self.handle = attach(
            _outermost(trainer, model), self.config, sequence_group=_context_parallel_group(trainer)
        )
        self.handle.set_step(state.global_step, state.max_steps)
        _warn_on_policy(trainer)
        if self.config.neftune_clean_loss:
            self._measure_clean_loss(trainer)
        if state.global_step > 0:
            self._load_state(_resumed_checkpoint(args.output_dir, state.global_step))

    def on_step_begin(self, args, state, control, **kwargs):
        if self.handle is not None:
            self.handle.set_step(state.global_step, state.max_steps)

    def on_save(self, args, state, control, **kwargs):
        if self.handle is not None and self.handle.rng_state() is not None:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            os.makedirs(folder, exist_ok=True)
            rank, world_size = distributed_rank()
            state_file = os.path.join(folder, STATE_FILE.format(rank=rank))
            torch.save({"rng_state": self.handle.rng_state(), "world_size": world_size}, state_file)

    def on_train_end(self, args, state, control, **kwargs):
        self._detach()

    def _load_state(self, checkpoint: str) -> None:
        """Restore the noise stream saved with ``checkpoint``; say so once when that cannot be exact."""
        assert self.handle is not None
        rank, world_size = distributed_rank()
        if self.config.neftune_seed is None and world_size == 1:
            return  # noise from torch's global RNG, which the Trainer restores itself
        path = os.path.join(checkpoint, STATE_FILE.format(rank=rank))
        if not os.path.exists(path):
            logger.warning(
                "neft_plugins: %s has no %s, so the noise stream starts afresh: the resumed run's noise differs "
                "from an uninterrupted one's",
                checkpoint,
                os.path.basename(path),
            )
            return
        saved = torch.load(path, weights_only=True)
        if saved.get("world_size", world_size) != world_size:
            logger.warning(
                "neft_plugins: %s was saved by %d processes and resumes on %d; each rank continues a saved "
                "stream, but the run's noise differs from an uninterrupted one's",
                checkpoint,
                saved["world_size"],
                world_size,
            )
        self.handle.set_rng_state(saved["rng_state"])

    def _detach(self) -> None:
        if self.handle is not None:
            self.handle.detach()
            self.handle = None

    def _guard(self, trainer: Trainer, method: str) -> None:
        """Detach if ``trainer.<method>`` raises, and put our logs into the trainer's own log calls."""
        if trainer in self._guarded:
            return
        self._guarded.add(trainer)
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
                logs.update(self.handle.read_logs())
                if self._clean_sums:
                    logs.update(_clean_loss_logs(self._clean_sums))
                    self._clean_sums.clear()
            return log(logs, *args, **kwargs)

        return log_with_neft

    def _measure_clean_loss(self, trainer: Trainer) -> None:
        """On the micro-batches of each optimizer step that ends with a log, also take the same batch's loss
        with the noise off (a ``no_grad`` forward, which NEFTune never noises), normalised as the trainer
        normalises its own: ``neft/clean_loss`` beside ``neft/noised_loss``, the trainer's loss on those same
        micro-batches."""
        name = next(
            (cls.__name__ for cls in type(trainer).__mro__ if cls.__name__ in NOT_LM_LOSS_TRAINERS), None
        )
        if name is not None or trainer.args.logging_strategy != "steps":
            why = (
                f"{name}'s loss is not a language-model loss on the batch"
                if name
                else "logging is not by steps"
            )
            logger.warning("neft_plugins: neft/clean_loss is not available here: %s", why)
            return
        if trainer in self._measured_clean_loss:
            return
        self._measured_clean_loss.add(trainer)
        compute_loss, training_step = trainer.compute_loss, trainer.training_step

        @functools.wraps(compute_loss)
        def compute_loss_and_clean_loss(model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if self.handle is None or not (
                model.training and torch.is_grad_enabled() and _logs_next(trainer)
            ):
                return compute_loss(model, inputs, *args, **kwargs)
            result = compute_loss(model, inputs, *args, **kwargs)
            # The trainer's own loss, on the same batch with the same normalisation, noise off (no_grad).
            with torch.no_grad(), _trainer_metrics_kept(trainer):
                clean = compute_loss(model, inputs, *args, **kwargs)
            self._clean_pending = (_loss_of(clean).float(), _loss_of(result).detach().float())
            return result

        @functools.wraps(training_step)
        def training_step_and_clean_loss(*args: Any, **kwargs: Any) -> Any:
            self._clean_pending = None
            reported = training_step(*args, **kwargs)
            if self._clean_pending is not None:
                clean, noised = self._clean_pending
                self._clean_pending = None
                # What training_step does to compute_loss's loss before the trainer adds it to the logged loss
                # (the division by the accumulation steps, on some versions): the same factor for the clean loss.
                factor = torch.where(noised != 0, reported.float() / noised, 0.0)
                self._clean_sums.append(torch.stack([clean * factor, reported.detach().float()]))
            return reported

        trainer.compute_loss = compute_loss_and_clean_loss
        trainer.training_step = training_step_and_clean_loss


def _loss_of(result: Any) -> torch.Tensor:
    return result[0] if isinstance(result, tuple) else result


@contextlib.contextmanager
def _trainer_metrics_kept(trainer: Trainer) -> Iterator[None]:
    """Undo what a ``compute_loss`` call adds to the trainer's own logs (TRL's ``_metrics`` and token counts), so
    the clean pass leaves them as they were."""
    numbers = {key: value for key, value in vars(trainer).items() if isinstance(value, (int, float))}
    metrics = copy.deepcopy(getattr(trainer, "_metrics", None))
    try:
        yield
    finally:
        vars(trainer).update(numbers)
        if metrics is not None:
            trainer._metrics = metrics


def _clean_loss_logs(per_micro_batch: list[torch.Tensor]) -> dict[str, float]:
    """The step's clean and noised losses: summed over its micro-batches as the trainer sums its loss, then
    averaged over the processes as the trainer averages its logged loss."""
    total = torch.stack(per_micro_batch).sum(0)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
        total /= torch.distributed.get_world_size()
    clean, noised = total.tolist()
    return {"neft/clean_loss": clean, "neft/noised_loss": noised}


def _logs_next(trainer: Trainer) -> bool:
    """Whether the optimizer step now running ends with a log (the Trainer's own rule for ``steps``)."""
    state = trainer.state
    step = state.global_step + 1
    first = step == 1 and trainer.args.logging_first_step
    return first or (state.logging_steps > 0 and step % state.logging_steps == 0)


def _warn_on_policy(trainer: Trainer) -> None:
    """GRPO-style trainers compare the noised policy pass with clean old-policy and reference passes."""
    name = next((cls.__name__ for cls in type(trainer).__mro__ if cls.__name__ in ON_POLICY_TRAINERS), None)
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
