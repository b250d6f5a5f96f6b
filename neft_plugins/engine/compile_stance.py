"""The compile stance of a handle attached to a ``torch.compile``'d module: its passes run eagerly until the
carriers are learnt (learning compares values), then one graph serves every step."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from neft_plugins.engine.learning import CarrierLearning
from neft_plugins.engine.noise_source import NoiseSource


class EagerUntilLearnt:
    """Hooks on the compiled wrapper (they run outside the compiled code) that set ``force_eager`` around its
    training passes while the carriers are unknown."""

    def __init__(self, learning: CarrierLearning, noise: NoiseSource) -> None:
        self.learning, self.noise = learning, noise
        self._stance: Any = None

    def register(self, wrapper: nn.Module) -> list[RemovableHandle]:
        return [
            wrapper.register_forward_pre_hook(self.enter),
            wrapper.register_forward_hook(self.leave, always_call=True),
        ]

    def enter(self, module: nn.Module, args: tuple) -> None:
        if (
            self.learning.carriers is None
            and self.noise.noising
            and module.training
            and torch.is_grad_enabled()
        ):
            self._stance = torch.compiler.set_stance("force_eager")

    def leave(self, *_: Any) -> None:
        stance, self._stance = self._stance, None
        if stance is not None:
            stance.__exit__(None, None, None)
