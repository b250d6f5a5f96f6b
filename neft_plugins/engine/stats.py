"""Running means of what one attachment applied, for the trainer's ``neft/*`` logs."""

from __future__ import annotations

import torch

from neft_plugins import telemetry
from neft_plugins.record import NoiseRecord


class NoiseStats:
    """Running sums for one attachment since the last ``read_and_reset``; its handle adds every record."""

    def __init__(self) -> None:
        self._reset()
        # Everything read so far, for the attachment's summary: passes, noise norm sum, sequences, tokens.
        self._read = [0.0] * 4

    def _reset(self) -> None:
        self.records = 0
        # Sums of the sequences' noise norms and embedding norms, the sequences and the tokens noised.
        self._totals: torch.Tensor | None = None

    def add(self, record: NoiseRecord) -> None:
        self.records += 1
        # Columns past 0 that hold no sequence are 0 in both norms: summing them all sums the sequences.
        totals = torch.stack(
            [
                record.noise_norms[:, 1:].sum(),
                record.embed_norms[:, 1:].sum(),
                record.is_sequence.sum(),
                record.tokens_noised,
            ]
        )
        self._totals = totals if self._totals is None else self._totals + totals

    def read_and_reset(self, alpha: float) -> dict[str, float]:
        """``neft/*`` log entries: means over the sequences noised since the last read."""
        noise_sum, embed_sum, sequences, tokens = [0.0] * 4 if self._totals is None else self._totals.tolist()
        self._read = [
            total + new
            for total, new in zip(self._read, (self.records, noise_sum, sequences, tokens), strict=True)
        ]
        logs = telemetry.log_entries(alpha, noise_sum, embed_sum, sequences, tokens)
        self._reset()
        return logs

    def summary(self) -> str:
        """What the attachment applied in all (one host sync): passes, tokens, sequences, mean noise norm."""
        self.read_and_reset(0.0)
        return telemetry.summary(*self._read)
