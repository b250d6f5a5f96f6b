"""Noising the blocks: the pre-hook on each block until the carriers are learnt, the model call's noise (drawn at
the first block from the plan the embedding hook read) and every carrier's copy of it, and, in a checkpointed
block's recompute, the noise its forward pass got."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from neft_plugins.engine.block_inputs import InputKey, hidden_key, input_at, input_name, replace
from neft_plugins.engine.layout import Layout
from neft_plugins.engine.learning import CarrierLearning, Carriers
from neft_plugins.engine.plan import NoisePlan
from neft_plugins.engine.replays import BlockReplays, may_recompute
from neft_plugins.engine.sites import NoiseSites
from neft_plugins.errors import NEFTuneInputError


class BlockNoise:
    """The block hooks of one attachment and the model call in progress: its plan (read, not yet applied), its
    noise, the blocks that got it."""

    def __init__(self, sites: NoiseSites, layout: Layout, learning: CarrierLearning) -> None:
        self.sites, self.layout, self.learning = sites, layout, learning
        self.plan: NoisePlan | None = None
        self.noise: torch.Tensor | None = None
        self._noised_blocks: set[int] = set()
        self.replays = BlockReplays(sites.block_paths)
        self._hooks: dict[int, RemovableHandle] = {
            index: block.register_forward_pre_hook(self._hook_at(index), with_kwargs=True)
            for index, block in enumerate(sites.blocks)
        }

    def remove(self) -> None:
        for hook in self._hooks.values():
            hook.remove()
        self._hooks = {}
        self.replays.drop()
        self.plan, self.noise = None, None

    def start_call(self) -> None:
        self.plan, self.noise = None, None
        self._noised_blocks.clear()

    def end_call(self, module: nn.Module, output: Any) -> None:
        """The model call ended: refuse a plan the first block never got; keep the carriers learnt on it."""
        plan, noise = self.plan, self.noise
        self.start_call()
        if plan is not None and noise is None and output is not None:
            raise NEFTuneInputError(
                f"{type(module).__name__}: a training pass ran {self.sites.embeddings_path} but not "
                f"{self.sites.first_site}, where NEFTune adds its noise, so it "
                "got none. The model routes its embeddings around its first block; attach to a model whose blocks "
                "run in order, or report the model to neft-plugins."
            )
        if self.learning.current is not None and noise is not None and not torch.compiler.is_compiling():
            carriers = self.learning.finish()
            # Only the blocks that carry the embeddings keep their hook.
            for index in [index for index in self._hooks if index not in carriers]:
                self._hooks.pop(index).remove()

    def _hook_at(self, index: int) -> Callable[[nn.Module, tuple, dict], tuple[tuple, dict] | None]:
        def block_hook(block: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            return self._hook(index, block, args, kwargs)

        return block_hook

    def _hook(self, index: int, block: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if index == 0 and self.plan is not None and self.noise is None:
            self.noise = self._first_noise(args, kwargs)
        if self.noise is None:
            return self.replays.replayed(index, args, kwargs)
        if index in self._noised_blocks:
            return None  # a block that runs again in the same call (ALBERT's shared layer) gets it once
        self._noised_blocks.add(index)
        return self._with_noise(index, block, args, kwargs, self.learning.carriers_in(index, args, kwargs))

    def _first_noise(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """This call's noise for one copy of the embeddings, as the first block receives them; recorded."""
        plan, self.plan = self.plan, None
        key = hidden_key(args, kwargs)
        if key is None:
            raise NEFTuneInputError(
                f"{self.sites.block_paths[0]} was called without a hidden-states tensor, so NEFTune has nothing "
                "to add its noise to."
            )
        hidden = input_at(args, kwargs, key)
        copies = self.learning.copies_in_first_input(hidden, plan)
        embeddings = copies.embeddings(hidden)
        noise = self.layout.noise_for(embeddings, plan, probe=self.learning.probing)
        self.learning.start(embeddings, plan)
        return noise

    def _with_noise(
        self, index: int, block: nn.Module, args: tuple, kwargs: dict, carriers: Carriers
    ) -> tuple[tuple, dict] | None:
        if not carriers:
            return None
        replaced: dict[InputKey, torch.Tensor] = {}
        for key, copies in carriers:
            value = input_at(args, kwargs, key)
            noise = copies.spread(self.noise)
            if not isinstance(value, torch.Tensor) or value.shape != noise.shape:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise NEFTuneInputError(
                    f"{self.sites.block_paths[index]}'s input {input_name(key)} carried the embeddings on the "
                    f"first training pass ({copies.describe()}) but now holds {shape}, not {tuple(noise.shape)}: "
                    "the model changed how it hands its blocks the embeddings, and NEFTune learnt it once."
                )
            noise = noise.to(value.dtype)
            # A compiled graph's checkpointing recomputes inside the graph, without running this hook again.
            if not torch.compiler.is_compiling() and not self.learning.probing and may_recompute(block):
                self.replays.keep(index, key, value, noise)
            replaced[key] = value + noise
        return replace(args, kwargs, replaced)
