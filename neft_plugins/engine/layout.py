"""How a model lays out what NEFTune lines up with its batch: the ids its embedding module gets (``[L, B]`` as
XLNet transposes them) and the hidden states its first block gets (``[L, B, d]``: FSMT, Mega); layouts that
cannot be lined up are refused. Learnt from shapes, so a compiled graph's square batches read the last."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from neft_plugins.engine.noise_source import NoiseSource
from neft_plugins.engine.plan import NoisePlan
from neft_plugins.engine.sites import NoiseSites
from neft_plugins.errors import NEFTuneInputError


class Layout:
    """The layouts of one attachment, and the noise laid out in them."""

    def __init__(self, sites: NoiseSites, noise: NoiseSource) -> None:
        self.sites, self.noise = sites, noise
        self.ids_transposed = (
            False  # learnt from each batch's ids, kept for a compiled graph's square batches
        )
        self.block_transposed = False  # learnt from the first non-square batch

    def transposed(self, call: Mapping[str, Any], args: tuple) -> bool:
        """Whether the model embeds its ids as ``[L, B]`` (XLNet); refuses ids the model re-laid otherwise."""
        input_ids, embedded_ids = call.get("input_ids"), args[0] if args else None
        if not isinstance(input_ids, torch.Tensor) or not isinstance(embedded_ids, torch.Tensor):
            return False
        if input_ids.dim() != 2 or embedded_ids is input_ids:
            return False
        rows, length = input_ids.shape
        if embedded_ids.shape == input_ids.shape:
            if rows != length:
                self.ids_transposed = False
            elif not torch.compiler.is_compiling():
                # A square batch cannot tell a transposed layout by shape (the only case that syncs, so the
                # compiled graph reads it as the last non-square batch was).
                self.ids_transposed = torch.equal(embedded_ids, input_ids.T) and not torch.equal(
                    embedded_ids, input_ids
                )
            return self.ids_transposed
        if embedded_ids.shape == (length, rows):
            self.ids_transposed = True
            return True
        raise NEFTuneInputError(
            f"{self.sites.embeddings_path} embedded token ids of shape {tuple(embedded_ids.shape)} for input_ids of "
            f"shape {tuple(input_ids.shape)}: the model adds or removes tokens before its embeddings (CPM-Ant "
            "prepends prompt tokens), so NEFTune cannot line the batch's masks up with them. Refusing rather than "
            "noise the wrong positions."
        )

    def noise_for(self, hidden: torch.Tensor, plan: NoisePlan, probe: bool = False) -> torch.Tensor:
        """``alpha / sqrt(L_s * d)`` noise per sequence for ``hidden`` (one copy of the embeddings; d: its width),
        in its dtype and layout, recorded (the probe pass's: its own, not recorded)."""
        transposed = plan.transposed or self._transposed_at_block(hidden, plan)
        received = hidden.transpose(0, 1) if transposed else hidden
        if received.dim() != 3 or tuple(received.shape[:2]) != tuple(plan.segments.shape):
            self.refuse(hidden, plan)
        noise = self.noise.probe(received, plan) if probe else self.noise.per_sequence(received, plan)
        return noise.transpose(0, 1) if transposed else noise

    def refuse(self, hidden: torch.Tensor, plan: NoisePlan) -> None:
        raise NEFTuneInputError(
            f"{self.sites.first_site} received hidden states of shape "
            f"{tuple(hidden.shape)} for a batch of {tuple(plan.segments.shape)} tokens: the model inserts, "
            "removes or re-lays positions between its embeddings and its first block, so NEFTune cannot line "
            "the batch's masks up with them. Refusing rather than noise the wrong positions."
        )

    def _transposed_at_block(self, hidden: torch.Tensor, plan: NoisePlan) -> bool:
        """Whether the model turned its embeddings to ``[L, B, d]`` before the block (FSMT, Mega), told by the
        shape; a square batch is read as the last non-square one was (batch-major before any)."""
        rows, length = plan.segments.shape
        if rows != length and hidden.dim() == 3:
            self.block_transposed = tuple(hidden.shape[:2]) == (length, rows)
        return self.block_transposed
