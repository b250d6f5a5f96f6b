"""What one noised forward pass applied: the payload every ``neft_observe`` hook receives."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neft_plugins.noise import segment_norms


@dataclass(frozen=True)
class NoiseRecord:
    """One noised forward pass. Tensors stay on the model's device, so recording never syncs.

    ``noise_norms`` and ``embed_norms`` are ``[batch, length + 1]``: the norm of each segment's noise and
    clean embeddings over its noised positions, at column = segment id (column 0: the positions outside every
    sequence, such as padding); ``is_sequence`` marks the columns that hold a sequence.
    """

    source: object
    alpha: float
    noise_norms: torch.Tensor
    embed_norms: torch.Tensor
    is_sequence: torch.Tensor
    tokens_noised: torch.Tensor

    def sequence_noise_norms(self) -> torch.Tensor:
        """The noise norm of every sequence in the batch, as a flat tensor (syncs)."""
        return self.noise_norms[self.is_sequence]


def measure(
    clean: torch.Tensor, noise: torch.Tensor, segment_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A record's ``noise_norms`` and ``embed_norms``: norms over each segment's positions (``segment_ids``: 0
    outside the measured positions)."""
    with torch.no_grad():
        noise_norms = segment_norms(torch.linalg.vector_norm(noise, dim=-1).square(), segment_ids)
        embed_norms = segment_norms(torch.linalg.vector_norm(clean, dim=-1).square(), segment_ids)
        return noise_norms, embed_norms
