"""Reading a training pass's batch into a plan: which positions get noise, and each sequence's L_s.

Works on the model call's inputs by name and the ``[B, L]`` shape of its embedded tokens; needs no model, so it
is tested on batches alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from neft_plugins.errors import NEFTuneInputError
from neft_plugins.noise import scope_mask, segment_token_counts, without_unsupervised


@dataclass(frozen=True)
class NoisePlan:
    """What the embedding hook read from a training pass's batch, for the blocks to apply."""

    segments: torch.Tensor  # [B, L] sequence ids, 0 = no sequence (and, but for padded length, no noise)
    noised: torch.Tensor  # [B, L] positions that get noise
    counts: torch.Tensor | None  # L_s per segment, as segment_token_counts gives it (None: padded length)
    transposed: bool  # the model runs its sequence layout as [L, B] (XLNet)


@dataclass(frozen=True)
class PlanReader:
    """How one attachment reads its plans: the segment readers, its scope and length keys, the model's media placeholder ids,
    whether the batch's labels are the noised tokens' (not an encoder-decoder's), and the context-parallel
    group that holds slices of each sequence."""

    read_segments: Callable[..., torch.Tensor]  # the neft_read_segments hook: first answer wins
    scope: str
    padded: bool
    placeholder_ids: tuple[int, ...] = ()
    labels_are_inputs: bool = True
    sequence_group: torch.distributed.ProcessGroup | None = None

    def read(
        self, inputs: Mapping[str, Any], batch_shape: tuple[int, int], device: torch.device, transposed: bool
    ) -> NoisePlan:
        segments = self.read_segments(inputs=inputs, batch_shape=batch_shape).to(device)
        text = self._text_positions(inputs, batch_shape, segments.device)
        if text is not None:
            segments = segments * text
        labels = inputs.get("labels")
        aligned = self.labels_are_inputs and isinstance(labels, torch.Tensor) and labels.shape == batch_shape
        labels = labels if aligned else None
        if labels is not None:
            segments = without_unsupervised(segments, labels)
        try:
            noised = scope_mask(segments, labels, self.scope)
        except ValueError as error:
            raise NEFTuneInputError(str(error)) from error
        if self.padded:
            return NoisePlan(segments, noised, None, transposed)
        if self.scope != "all":  # "all" noises every position of a segment already
            segments = segments * noised
        return NoisePlan(segments, noised, self._token_counts(segments, noised), transposed)

    def _text_positions(
        self, inputs: Mapping[str, Any], batch_shape: tuple[int, int], device: torch.device
    ) -> torch.Tensor | None:
        """False at media placeholders (their embeddings are replaced by image/video/audio features): they get
        no noise and do not count in L. None when the model has none."""
        input_ids = inputs.get("input_ids")
        if (
            not self.placeholder_ids
            or not isinstance(input_ids, torch.Tensor)
            or input_ids.shape != batch_shape
        ):
            return None
        placeholders = torch.tensor(self.placeholder_ids, device=input_ids.device)
        return ~torch.isin(input_ids, placeholders).to(device)

    def _token_counts(self, segments: torch.Tensor, noised: torch.Tensor) -> torch.Tensor:
        """L_s per segment; under context parallelism, summed over the ranks that hold the sequence's slices."""
        counts = segment_token_counts(segments, noised)
        if self.sequence_group is None:
            return counts
        if bool((segments > 1).any()):
            raise NEFTuneInputError(
                "packed rows under context parallelism: each rank holds a slice of the row, so its sequences "
                "cannot be told apart locally. Turn packing off, or context parallelism off, with NEFTune."
            )
        torch.distributed.all_reduce(counts, group=self.sequence_group)
        return counts
