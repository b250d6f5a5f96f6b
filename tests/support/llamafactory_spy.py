"""A spy on the token embeddings of an in-process ``neft-llamafactory train`` run: what noise really reached
the model. Its hooks are registered after NEFTuneCallback's (callbacks run in order), so it sees the noised
output; the clean one is recomputed from the embedding weights."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from transformers import TrainerCallback

from neft_plugins.integrations.llamafactory.train import run_train


class EmbeddingSpy(TrainerCallback):
    """Records, for each call of the token embeddings, what :meth:`observe` makes of its noise."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._masks: list[torch.Tensor | None] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.register_forward_pre_hook(self._enter, with_kwargs=True)
        model.register_forward_hook(self._leave, always_call=True)
        model.get_input_embeddings().register_forward_hook(self._embeddings)

    def observe(
        self, module: torch.nn.Module, ids: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor | None
    ) -> dict[str, Any] | None:
        """One call's record (None: nothing to record); ``noise`` is float32 on the CPU."""
        raise NotImplementedError

    def _enter(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self._masks.append(kwargs.get("attention_mask"))

    def _leave(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        self._masks.pop()

    def _embeddings(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        ids = args[0]
        noise = (output - torch.nn.functional.embedding(ids, module.weight)).detach().float().cpu()
        record = self.observe(module, ids, noise, self._masks[-1] if self._masks else None)
        if record is not None:
            self.calls.append(record)


def train_and_report(spy: EmbeddingSpy, report: str, config: str, overrides: Sequence[str]) -> None:
    """Train with the spy among the callbacks and write its records to ``report`` (JSON)."""
    run_train(config, overrides, callbacks=[spy])
    with open(report, "w") as f:
        json.dump(spy.calls, f)
