"""What a handle says once per attachment, when a training run looks wrong: a model trained in eval mode, a
decaying schedule never moved, training passes that noised no token."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from neft_plugins.config import NEFTuneConfig

logger = logging.getLogger("neft_plugins")


class OnceWarnings:
    """The warnings of one attachment, each said at most once."""

    def __init__(self, config: NEFTuneConfig, embeddings_path: str) -> None:
        self.config, self.embeddings_path = config, embeddings_path
        self.step_set = False  # a decaying schedule needs set_step(); a hand-written loop may not call it
        self.eval_mode_pass = False  # the call in progress ran the embeddings in eval mode with autograd on
        self._warned_nothing_noised = False
        self._warned_no_step = False
        self._warned_eval_mode = False

    def end_call(self, module: nn.Module, output: Any, noising: bool) -> None:
        if self.eval_mode_pass and noising and not self._warned_eval_mode:
            # Said only if a backward pass runs through it: evaluation without no_grad() is no training pass.
            _on_backward(output, lambda: self._warn_eval_mode(type(module).__name__))
        self.eval_mode_pass = False

    def check_step(self, alpha: float) -> None:
        """Before a training pass: a decaying schedule whose step was never set is said once."""
        if self.config.neftune_schedule != "constant" and not (self.step_set or self._warned_no_step):
            self._warned_no_step = True
            logger.warning(
                "neft_plugins: neftune_schedule %r changes alpha over the optimizer steps, but set_step(step, "
                "total_steps) was not called before this training pass, so alpha is %s. Call handle.set_step(step, "
                "total_steps) at each optimizer step (NEFTuneCallback does it in a Trainer).",
                self.config.neftune_schedule,
                alpha,
            )

    def check_noised(self, ran: bool, alpha: float, logs: Mapping[str, float]) -> None:
        """At a log: training passes ran since the last, yet no token got noise."""
        if ran and alpha > 0 and logs["neft/tokens_noised"] == 0 and not self._warned_nothing_noised:
            self._warned_nothing_noised = True
            logger.warning(
                "neft_plugins: no token got noise since the last log although %s ran in training passes: every "
                "sequence had all labels -100 (nothing supervised)%s, or was padding.",
                self.embeddings_path,
                ""
                if self.config.neftune_scope == "all"
                else f", or neftune_scope {self.config.neftune_scope!r} left none",
            )

    def _warn_eval_mode(self, model_name: str) -> None:
        if self._warned_eval_mode:
            return
        self._warned_eval_mode = True
        logger.warning(
            "neft_plugins: a backward pass ran through a forward pass of %s made in eval mode, so NEFTune added "
            "no noise to it: NEFTune noises training passes only (the model in training mode and autograd on). "
            "from_pretrained() returns a model in eval mode: call model.train() before training.",
            model_name,
        )


def _on_backward(output: Any, callback: Callable[[], None]) -> None:
    """Call ``callback`` when a backward pass runs through a tensor of ``output`` (the loss, the logits...)."""
    values = (
        output.values() if isinstance(output, Mapping) else output if isinstance(output, tuple) else [output]
    )
    for value in values:
        if isinstance(value, torch.Tensor) and value.requires_grad:
            value.register_hook(lambda grad: callback())
