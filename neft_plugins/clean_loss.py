"""``neft/clean_loss``: on the micro-batches of each optimizer step that ends with a log, the trainer's own loss
on the same batch with the noise off, beside ``neft/noised_loss``, its loss on those micro-batches with it on."""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from transformers import Trainer

from neft_plugins._trainer_patch import WrapOnce, trainer_class_named

logger = logging.getLogger("neft_plugins")

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


class CleanLoss:
    """Wraps a trainer's ``compute_loss`` and ``training_step`` (once per trainer) while ``active()``."""

    def __init__(self, active: Callable[[], bool]) -> None:
        self._active = active
        self._measured = WrapOnce()
        # (clean, noised) losses of each micro-batch of the last logging step, normalised as the trainer's
        self._sums: list[torch.Tensor] = []
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def measure(self, trainer: Trainer) -> None:
        """From now on, take the clean loss of ``trainer``'s logging steps (said once where it cannot)."""
        name = trainer_class_named(trainer, NOT_LM_LOSS_TRAINERS)
        if name is not None or trainer.args.logging_strategy != "steps":
            why = (
                f"{name}'s loss is not a language-model loss on the batch"
                if name
                else "logging is not by steps"
            )
            logger.warning("neft_plugins: neft/clean_loss is not available here: %s", why)
            return
        self._measured.wrap(
            trainer,
            compute_loss=functools.partial(self._with_clean_loss, trainer),
            training_step=self._with_factor,
        )

    def _with_clean_loss(self, trainer: Trainer, compute_loss: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(compute_loss)
        def compute_loss_and_clean_loss(model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if not (self._active() and model.training and torch.is_grad_enabled() and _logs_next(trainer)):
                return compute_loss(model, inputs, *args, **kwargs)
            result = compute_loss(model, inputs, *args, **kwargs)
            # The trainer's own loss, on the same batch with the same normalisation, noise off (no_grad).
            with torch.no_grad(), _trainer_metrics_kept(trainer):
                clean = compute_loss(model, inputs, *args, **kwargs)
            self._pending = (_loss_of(clean).float(), _loss_of(result).detach().float())
            return result

        return compute_loss_and_clean_loss

    def _with_factor(self, training_step: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(training_step)
        def training_step_and_clean_loss(*args: Any, **kwargs: Any) -> Any:
            self._pending = None
            reported = training_step(*args, **kwargs)
            if self._pending is not None:
                clean, noised = self._pending
                self._pending = None
                # What training_step does to compute_loss's loss before the trainer adds it to the logged loss
                # (the division by the accumulation steps, on some versions): the same factor for the clean loss.
                factor = torch.where(noised != 0, reported.float() / noised, 0.0)
                self._sums.append(torch.stack([clean * factor, reported.detach().float()]))
            return reported

        return training_step_and_clean_loss

    def read_logs(self) -> dict[str, float]:
        """The last logging step's ``neft/clean_loss`` and ``neft/noised_loss`` (empty when none was taken): summed
        over its micro-batches as the trainer sums its loss, averaged over the processes as it averages it."""
        if not self._sums:
            return {}
        total = torch.stack(self._sums).sum(0)
        self._sums.clear()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(total)
            total /= torch.distributed.get_world_size()
        clean, noised = total.tolist()
        return {"neft/clean_loss": clean, "neft/noised_loss": noised}


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


def _logs_next(trainer: Trainer) -> bool:
    """Whether the optimizer step now running ends with a log (the Trainer's own rule for ``steps``)."""
    state = trainer.state
    step = state.global_step + 1
    first = step == 1 and trainer.args.logging_first_step
    return first or (state.logging_steps > 0 and step % state.logging_steps == 0)
