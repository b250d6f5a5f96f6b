"""A spy on what an MLX-LM Llama's first block receives, independent of neft-plugins, that works inside MLX-LM's
compiled training step: it patches the classes (the token embedding's and the block's) before NEFTune attaches,
subtracts the clean embeddings from what the first block receives, and keeps the per-row results as arrays in
the model's tree (``_spy``), which the compiled step carries out; a training callback reads them after each step.

Padding is told by token id 0 (the tiny tokenizer's ``<pad>``, which the data never holds).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.tuner.trainer import TrainingCallback


@dataclass
class Step:
    noise_norms: list[float]  # per row, over its real tokens
    tokens: list[int]  # real tokens per row (L_s)
    padding_max: float  # the largest |noise| at a padding position
    width: int


@dataclass
class FirstBlockSpy(TrainingCallback):
    model: nn.Module
    steps: list[Step] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.block_class = type(self.model.layers[0])
        self.embedding_class = type(self.model.model.embed_tokens)
        self.original_block = self.block_class.__call__
        self.original_embedding = self.embedding_class.__call__
        spy, first, embedding = self, self.model.layers[0], self.model.model.embed_tokens
        clean: dict[str, mx.array] = {}

        def embed(module, ids):
            out = spy.original_embedding(module, ids)
            if module is embedding:
                clean["ids"], clean["out"] = ids, out
            return out

        def block(module, x, *args, **kwargs):
            if module is first and module.training and "out" in clean:
                real = clean["ids"] != 0
                noise = (x - clean["out"]).astype(mx.float32)
                squares = mx.square(noise).sum(axis=-1)
                spy.model["_spy"] = {
                    "norms": mx.sqrt((squares * real).sum(axis=1)),
                    "tokens": real.sum(axis=1),
                    "padding": mx.max(mx.abs(noise) * mx.logical_not(real)[..., None]),
                }
            return spy.original_block(module, x, *args, **kwargs)

        # In the tree before the step is compiled, so that its state holds them from the first step.
        self.model["_spy"] = {
            "norms": mx.zeros((1,)),
            "tokens": mx.zeros((1,), mx.uint32),
            "padding": mx.array(0.0),
        }
        self.embedding_class.__call__ = embed
        self.block_class.__call__ = block

    def remove(self) -> None:
        self.block_class.__call__ = self.original_block
        self.embedding_class.__call__ = self.original_embedding

    def on_train_loss_report(self, train_info: dict) -> None:
        seen = self.model["_spy"]
        self.steps.append(
            Step(
                seen["norms"].tolist(),
                seen["tokens"].tolist(),
                seen["padding"].item(),
                self.model.args.hidden_size,
            )
        )

    def on_val_loss_report(self, val_info: dict) -> None:
        pass

    def ratios(self, alpha: float) -> list[float]:
        """Each sequence's noise norm over alpha/sqrt(3), over every step seen."""
        return [norm / (alpha / 3**0.5) for step in self.steps for norm in step.noise_norms]

    def spreads(self) -> list[float]:
        """Each sequence's relative standard deviation of that ratio under Uniform noise: sqrt(4/45)/(2/3)/sqrt(L*d)."""
        return [0.4472 / (tokens * step.width) ** 0.5 for step in self.steps for tokens in step.tokens]
