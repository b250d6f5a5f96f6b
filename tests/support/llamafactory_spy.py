"""A spy on the first decoder layer of an in-process ``neft-llamafactory train`` run: what noise really reached
the model. One pre-hook runs before NEFTune's (the clean hidden states), one after it (what the layer gets)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from transformers import TrainerCallback

from neft_plugins.integrations.llamafactory.train import run_train
from support.blocks import first_decoder_layer, hidden_states_of


class FirstBlockSpy(TrainerCallback):
    """Records, for each forward pass of the first decoder layer inside a model call, what :meth:`observe` makes
    of its noise (recomputes under activation checkpointing, outside any model call, are not passes)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._model_calls: list[dict[str, Any]] = []
        self._clean: torch.Tensor | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        block = first_decoder_layer(model)
        model.register_forward_pre_hook(self._enter, with_kwargs=True)
        model.register_forward_hook(self._leave, always_call=True)
        block.register_forward_pre_hook(self._before_neftune, with_kwargs=True, prepend=True)
        block.register_forward_pre_hook(self._after_neftune, with_kwargs=True)

    def observe(self, call: dict[str, Any], noise: torch.Tensor) -> dict[str, Any] | None:
        """One pass's record (None: nothing to record); ``noise`` is float32 on the CPU, ``call`` the model call's
        ``ids``, ``mask``, ``training`` (its mode) and ``grad_enabled``."""
        raise NotImplementedError

    def _enter(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self._model_calls.append(
            {
                "ids": kwargs.get("input_ids", args[0] if args else None).cpu(),
                "mask": kwargs.get("attention_mask"),
                "training": module.training,
                "grad_enabled": torch.is_grad_enabled(),
            }
        )

    def _leave(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        self._model_calls.pop()

    def _before_neftune(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self._clean = hidden_states_of(args, kwargs).detach().clone()

    def _after_neftune(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        clean, self._clean = self._clean, None
        if not self._model_calls or clean is None:
            return
        noise = (hidden_states_of(args, kwargs).detach() - clean).float().cpu()
        record = self.observe(self._model_calls[-1], noise)
        if record is not None:
            self.calls.append(record)


def train_and_report(spy: FirstBlockSpy, report: str, config: str, overrides: Sequence[str]) -> None:
    """Train with the spy among the callbacks and write its records to ``report`` (JSON)."""
    run_train(config, overrides, callbacks=[spy])
    with open(report, "w") as f:
        json.dump(spy.calls, f)
