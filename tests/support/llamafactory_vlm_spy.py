"""``neft-llamafactory train`` in-process, with a spy on a vision-language model's token embeddings.

usage: python -m support.llamafactory_vlm_spy REPORT.json PLACEHOLDER_ID CONFIG.yaml [key=value ...]

For every training call of the token embeddings (its hooks are registered after NEFTuneCallback's, so it sees the
noised output; the clean one is recomputed from the weights) it records the text tokens (real, not the
placeholder id given), the largest noise on placeholders and padding, and each row's noise norm over its text.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
from transformers import TrainerCallback

from neft_plugins.integrations.llamafactory.train import run_train


class PlaceholderSpy(TrainerCallback):
    def __init__(self, placeholder_id: int) -> None:
        self.placeholder_id = placeholder_id
        self.calls: list[dict[str, Any]] = []
        self._masks: list[torch.Tensor | None] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.register_forward_pre_hook(self._enter, with_kwargs=True)
        model.register_forward_hook(self._leave, always_call=True)
        model.get_input_embeddings().register_forward_hook(self._embeddings)

    def _enter(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self._masks.append(kwargs.get("attention_mask"))

    def _leave(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        self._masks.pop()

    def _embeddings(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        ids = args[0]
        noise = (output - torch.nn.functional.embedding(ids, module.weight)).detach().float().cpu()
        mask = self._masks[-1]
        real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        text = (real & (ids != self.placeholder_id)).cpu()
        self.calls.append(
            {
                "text_tokens": int(text.sum()),
                "placeholders": int((ids == self.placeholder_id).sum()),
                "other_max_abs_noise": float(noise[~text].abs().max()),
                "row_text_tokens": text.sum(1).tolist(),
                "row_noise_norms": [float(noise[row][text[row]].norm()) for row in range(ids.shape[0])],
            }
        )


def main() -> None:
    report, placeholder_id, config, *overrides = sys.argv[1:]
    spy = PlaceholderSpy(int(placeholder_id))
    run_train(config, overrides, callbacks=[spy])
    with open(report, "w") as f:
        json.dump(spy.calls, f)


if __name__ == "__main__":
    main()
