"""What one noised forward pass applied: the payload every ``neft_observe`` hook receives."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neft_plugins.noise import segment_norms


@dataclass(frozen=True)
class NoiseRecord:
    """One noised forward pass. Tensors stay on the model's device, so recording never syncs.

    ``noise_norms`` and ``embed_norms`` are ``[batch, length + 1]``: the norm of each segment's noise and
    clean embeddings over its noised positions, at column = segment id; ``is_sequence`` marks the columns
    that hold a sequence.
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
    clean: torch.Tensor, noise: torch.Tensor, segment_ids: torch.Tensor, measured: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A record's ``noise_norms``, ``embed_norms`` and ``is_sequence``: norms over the ``measured`` positions of
    each segment."""
    with torch.no_grad():
        measured = segment_ids * measured
        is_sequence = torch.zeros(measured.shape[0], measured.shape[1] + 1, device=measured.device)
        is_sequence = is_sequence.scatter_(1, measured, 1.0).bool()
        is_sequence[:, 0] = False
        noise_norms = segment_norms(torch.linalg.vector_norm(noise, dim=-1).square(), measured)
        embed_norms = segment_norms(torch.linalg.vector_norm(clean, dim=-1).square(), measured)
        return noise_norms, embed_norms, is_sequence
