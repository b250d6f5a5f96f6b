"""The forward hook on the token embedding module(s): on a training pass, reads the batch into a plan
(``PlanReader``) for the first block to draw its noise from; with no block to noise (``neftune_length: padded``, or
a model with no stack of blocks), adds the noise here, to the embedding module's output."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neft_plugins.engine.block_noise import BlockNoise
from neft_plugins.engine.calls import CallTracker
from neft_plugins.engine.layout import Layout
from neft_plugins.engine.once_warnings import OnceWarnings
from neft_plugins.engine.plan import PlanReader
from neft_plugins.errors import NEFTuneInputError


class EmbeddingHook:
    """What one attachment does at its embedding module's output."""

    def __init__(
        self,
        reader: PlanReader,
        calls: CallTracker,
        layout: Layout,
        warnings: OnceWarnings,
        block_noise: BlockNoise,
    ) -> None:
        self.reader, self.calls, self.layout, self.warnings = reader, calls, layout, warnings
        self.block_noise, self.learning = block_noise, block_noise.learning
        self.sites, self.noise = layout.sites, layout.noise
        self.padded = warnings.config.neftune_length == "padded"

    def hook(self, module: nn.Module, args: tuple, output: Any) -> torch.Tensor | None:
        """Reads the plan on a training pass: added at the first block, or here where there is none."""
        training = (module.training and torch.is_grad_enabled()) or self.learning.probing
        if not training or self.calls.in_decoder():
            if torch.is_grad_enabled() and not module.training and not torch.compiler.is_compiling():
                self.warnings.eval_mode_pass = True
            return None  # not a training pass, or the decoder's teacher-forced input: not the instruction
        if not torch.compiler.is_compiling():
            self.calls.count_embedding_run()
            if not self.learning.probing:
                self.warnings.check_step(self.noise.alpha)
        if not self.noise.noising:
            return None
        if not isinstance(output, torch.Tensor) or output.dim() != 3:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise NEFTuneInputError(
                f"{self.sites.embeddings_path} returned {shape}; NEFTune needs a [batch, sequence, dim] tensor. "
                "Attach to a model whose get_input_embeddings() is the token embedding module."
            )
        transposed = self.layout.transposed(self.calls.inputs, args)
        embedded = output.transpose(0, 1) if transposed else output
        plan = self.reader.read(
            self.calls.inputs, (embedded.shape[0], embedded.shape[1]), embedded.device, transposed
        )
        if self.padded:
            return output + self.noise.padded(output, embedded, plan)
        if self.sites.first_block is None:
            return output + self.layout.noise_for(output, plan)
        self.block_noise.plan = plan
        return None
