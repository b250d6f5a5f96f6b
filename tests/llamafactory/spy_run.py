"""``neft-llamafactory train`` in-process, with a spy that measures the noise the model really got.

usage: python spy_run.py REPORT.json CONFIG.yaml [key=value ...]

The spy registers its hooks after NEFTuneCallback's (callbacks run in order), so it sees the noised
embeddings; the clean ones are recomputed from the embedding weights. For every call of the token
embeddings it records whether autograd was on, the per-segment noise norms (segments read from the
attention mask the model was called with: 0/1, segment ids, or LLaMA-Factory's 4-D block-diagonal
mask), and the largest noise on padding.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
from transformers import TrainerCallback

from neft_plugins.integrations.llamafactory.train import run_train


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


class NoiseSpy(TrainerCallback):
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._masks: list[torch.Tensor | None] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.register_forward_pre_hook(self._enter, with_kwargs=True)
        model.register_forward_hook(self._leave, always_call=True)
        model.get_input_embeddings().register_forward_hook(self._embeddings)

    def _enter(self, module, args, kwargs):
        self._masks.append(kwargs.get("attention_mask"))

    def _leave(self, module, args, output):
        self._masks.pop()

    def _embeddings(self, module, args, output):
        ids = args[0]
        clean = torch.nn.functional.embedding(ids, module.weight)
        noise = (output - clean).detach().float().cpu()
        mask = self._masks[-1] if self._masks else None
        segments = segment_ids(mask, tuple(ids.shape))
        per_segment = []
        for row in range(ids.shape[0]):
            for segment in range(1, int(segments[row].max()) + 1):
                where = segments[row] == segment
                if where.any():
                    per_segment.append([int(where.sum()), float(noise[row][where].norm())])
        padding = segments == 0
        self.calls.append(
            {
                "grad_enabled": torch.is_grad_enabled(),
                "training": module.training,
                "mask_shape": None if mask is None else list(mask.shape),
                "mask_dtype": None if mask is None else str(mask.dtype),
                "segments": per_segment,
                "rows": int(ids.shape[0]),
                "padding_tokens": int(padding.sum()),
                "padding_max_abs_noise": float(noise[padding].abs().max()) if padding.any() else 0.0,
                "max_abs_noise": float(noise.abs().max()),
            }
        )


def main() -> None:
    report, config, *overrides = sys.argv[1:]
    spy = NoiseSpy()
    run_train(config, overrides, callbacks=[spy])
    with open(report, "w") as f:
        json.dump(spy.calls, f)


if __name__ == "__main__":
    main()
