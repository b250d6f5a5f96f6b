"""``neft-llamafactory train`` in-process, with a spy on a vision-language model's token embeddings.

usage: python -m support.llamafactory_vlm_spy REPORT.json PLACEHOLDER_ID CONFIG.yaml [key=value ...]

For every training pass of the first decoder layer (the noise it received: its hidden states after NEFTune's
pre-hook minus before it) it records the text tokens (real, not the
placeholder id given), the largest noise on placeholders and padding, and each row's noise norm over its text.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from support.llamafactory_spy import FirstBlockSpy, train_and_report


class PlaceholderSpy(FirstBlockSpy):
    def __init__(self, placeholder_id: int) -> None:
        super().__init__()
        self.placeholder_id = placeholder_id

    def observe(self, call: dict[str, Any], noise: torch.Tensor) -> dict[str, Any] | None:
        if not (call["training"] and call["grad_enabled"]):
            return None
        ids, mask = call["ids"], call["mask"]
        real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        text = (real & (ids != self.placeholder_id)).cpu()
        return {
            "text_tokens": int(text.sum()),
            "placeholders": int((ids == self.placeholder_id).sum()),
            "other_max_abs_noise": float(noise[~text].abs().max()),
            "row_text_tokens": text.sum(1).tolist(),
            "row_noise_norms": [float(noise[row][text[row]].norm()) for row in range(ids.shape[0])],
        }


def main() -> None:
    report, placeholder_id, config, *overrides = sys.argv[1:]
    train_and_report(PlaceholderSpy(int(placeholder_id)), report, config, overrides)


if __name__ == "__main__":
    main()
