"""The first-block spy (``support.spy``) on a transformers Trainer's model while it trains, as a callback: for
frameworks that build the trainer and its model themselves (Unsloth), in the test's process or a script's."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch
from transformers import TrainerCallback

from neft_plugins.engine.structure import find_first_block, find_input_embeddings, unwrap_model
from support.spy import FirstBlockSpy, Pass


class SpyCallback(TrainerCallback):
    """The independent first-block spy (``support.spy``) on the trainer's model while it trains. Given the
    ``NEFTuneCallback`` (listed before this one), on the block NEFTune attached to, created after it so that the
    spy sees NEFTune's noise. Without it, for a framework's built-in NEFTune (which adds its noise at the
    embedding output, before the block): on the model's first block, the noise measured against the clean
    embedding lookup (a Llama's embeddings reach its first block unchanged)."""

    def __init__(self, neftune: TrainerCallback | None = None) -> None:
        self.neftune = neftune
        self.passes: list[Pass] = []
        self._spy: FirstBlockSpy | None = None
        self._embeddings: torch.nn.Embedding | None = None  # the built-in's reference, without NEFTune

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.neftune is not None:
            self._spy = FirstBlockSpy(self.neftune.handle.first_block, unwrap_model(model))
            return
        embeddings, _ = find_input_embeddings(model)
        block = find_first_block(unwrap_model(model), embeddings)
        self._spy = FirstBlockSpy(block, unwrap_model(model), self._builtin_noise, keep_inputs=True)
        self._embeddings = embeddings

    def _builtin_noise(self, each: Pass) -> None:
        received = self._spy.received[-1]  # what the block got on this run
        self._spy.received.clear()
        weight = self._embeddings.weight.detach()
        noise = (received - weight[each.input_ids.to(weight.device)]).double().cpu()
        self.passes.append(dataclasses.replace(each, noise_square=noise.square().sum(-1)))

    def on_train_end(self, args, state, control, **kwargs):
        if self._spy is not None:
            self._spy.remove()
        if self.neftune is not None:
            self.passes = list(self._spy.passes)

    def training_passes(self) -> Iterator[Pass]:
        assert self.passes, "the spy saw no training pass"
        for each in self.passes:
            assert each.training
            yield each
