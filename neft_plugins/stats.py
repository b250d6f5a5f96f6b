"""What each noised forward pass applied, and the running means the trainer logs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neft_plugins.hookspecs import hookimpl
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

    @classmethod
    def measure(
        cls,
        source: object,
        alpha: float,
        clean: torch.Tensor,
        noise: torch.Tensor,
        segment_ids: torch.Tensor,
        measured: torch.Tensor,
        tokens_noised: torch.Tensor,
    ) -> NoiseRecord:
        """Norms over the ``measured`` positions of each segment."""
        with torch.no_grad():
            measured = segment_ids * measured
            is_sequence = torch.zeros(measured.shape[0], measured.shape[1] + 1, device=measured.device)
            is_sequence = is_sequence.scatter_(1, measured, 1.0).bool()
            is_sequence[:, 0] = False
            return cls(
                source=source,
                alpha=alpha,
                noise_norms=segment_norms(torch.linalg.vector_norm(noise, dim=-1).square(), measured),
                embed_norms=segment_norms(torch.linalg.vector_norm(clean, dim=-1).square(), measured),
                is_sequence=is_sequence,
                tokens_noised=tokens_noised,
            )

    def sequence_noise_norms(self) -> torch.Tensor:
        """The noise norm of every sequence in the batch, as a flat tensor (syncs)."""
        return self.noise_norms[self.is_sequence]


class NoiseStats:
    """Built-in observer: running sums for one attachment since the last ``read_and_reset``."""

    def __init__(self, source: object) -> None:
        self.source = source
        self._reset()

    def _reset(self) -> None:
        self._noise_norm_sum: torch.Tensor | float = 0.0
        self._embed_norm_sum: torch.Tensor | float = 0.0
        self._sequences: torch.Tensor | int = 0
        self._tokens: torch.Tensor | int = 0

    @hookimpl
    def neft_observe(self, record: NoiseRecord) -> None:
        if record.source is not self.source:
            return
        self._noise_norm_sum = self._noise_norm_sum + (record.noise_norms * record.is_sequence).sum()
        self._embed_norm_sum = self._embed_norm_sum + (record.embed_norms * record.is_sequence).sum()
        self._sequences = self._sequences + record.is_sequence.sum()
        self._tokens = self._tokens + record.tokens_noised

    def read_and_reset(self, alpha: float) -> dict[str, float]:
        """``neft/*`` log entries: means over the sequences noised since the last read."""
        sequences = int(self._sequences)
        logs = {"neft/alpha": float(alpha), "neft/tokens_noised": float(self._tokens)}
        if sequences:
            logs["neft/noise_norm"] = float(self._noise_norm_sum) / sequences
            logs["neft/embed_norm"] = float(self._embed_norm_sum) / sequences
        self._reset()
        return logs
