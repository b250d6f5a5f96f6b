"""The built-in observer: running means of what was applied, for the trainer's ``neft/*`` logs."""

from __future__ import annotations

import torch

from neft_plugins.hookspecs import hookimpl
from neft_plugins.record import NoiseRecord


class NoiseStats:
    """Built-in observer: running sums for one attachment since the last ``read_and_reset``."""

    def __init__(self, source: object) -> None:
        self.source = source
        self._reset()

    def _reset(self) -> None:
        self.records = 0
        self._noise_norm_sum: torch.Tensor | float = 0.0
        self._embed_norm_sum: torch.Tensor | float = 0.0
        self._sequences: torch.Tensor | int = 0
        self._tokens: torch.Tensor | int = 0

    @hookimpl
    def neft_observe(self, record: NoiseRecord) -> None:
        if record.source is not self.source:
            return
        self.records += 1
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
            # How strong the noise is for this model: Gemma's embeddings are sqrt(d) larger than Llama's.
            if logs["neft/embed_norm"] > 0:
                logs["neft/noise_to_embed"] = logs["neft/noise_norm"] / logs["neft/embed_norm"]
        self._reset()
        return logs
