"""``neft-llamafactory train`` in-process, with a spy that measures the noise the model really got.

usage: python spy_run.py REPORT.json CONFIG.yaml [key=value ...]

For every pass of the first decoder layer (the noise it received: its hidden states after NEFTune's pre-hook minus
before it) it records whether it was a training pass, the per-segment noise norms
(segments read from the attention mask the model was called with: 0/1, segment ids, or LLaMA-Factory's 4-D
block-diagonal mask), and the largest noise on padding.
"""

from __future__ import annotations

import sys

import torch

from support.llamafactory_spy import FirstBlockSpy, train_and_report


def segment_ids(mask: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
    """[batch, length] ids: 1, 2, ... per sequence, 0 for padding."""
    if mask is None:
        return torch.ones(shape, dtype=torch.long)
    mask = mask.detach().cpu()
    if mask.dim() == 2:
        return mask.long()
    if mask.dim() == 4:  # [B, 1, L, L]: 0 = may attend, dtype-min = blocked
        allowed = mask[:, 0] == 0
        real = allowed.diagonal(dim1=-2, dim2=-1)
        joins_previous = torch.zeros_like(real)
        joins_previous[:, 1:] = allowed.diagonal(offset=-1, dim1=-2, dim2=-1) & real[:, :-1]
        starts = real & ~joins_previous
        return torch.cumsum(starts.long(), dim=1) * real.long()
    raise AssertionError(f"unexpected attention_mask shape {tuple(mask.shape)}")


class NoiseSpy(FirstBlockSpy):
    def observe(self, call, noise):
        ids, mask = call["ids"], call["mask"]
        segments = segment_ids(mask, tuple(ids.shape))
        per_segment = []
        for row in range(ids.shape[0]):
            for segment in range(1, int(segments[row].max()) + 1):
                where = segments[row] == segment
                if where.any():
                    per_segment.append([int(where.sum()), float(noise[row][where].norm())])
        padding = segments == 0
        return {
            "grad_enabled": call["grad_enabled"],
            "training": call["training"],
            "mask_shape": None if mask is None else list(mask.shape),
            "mask_dtype": None if mask is None else str(mask.dtype),
            "segments": per_segment,
            "rows": int(ids.shape[0]),
            "padding_tokens": int(padding.sum()),
            "padding_max_abs_noise": float(noise[padding].abs().max()) if padding.any() else 0.0,
            "max_abs_noise": float(noise.abs().max()),
        }


def main() -> None:
    report, config, *overrides = sys.argv[1:]
    train_and_report(NoiseSpy(), report, config, overrides)


if __name__ == "__main__":
    main()
