"""What a model's first block receives: where NEFTune's noise is promised to land."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def hidden_states_of(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    """A block's hidden-states input, as transformers' blocks take it."""
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    assert isinstance(hidden, torch.Tensor), f"no hidden states in the block's call: {args!r} {kwargs!r}"
    return hidden


def first_block_inputs(block: nn.Module, run: Callable[[], Any]) -> list[torch.Tensor]:
    """The hidden states ``block`` receives on each of its calls while ``run()`` runs (hooked after NEFTune's
    own pre-hook, so noise included)."""
    seen: list[torch.Tensor] = []

    def keep(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        seen.append(hidden_states_of(args, kwargs).detach().clone())

    hook = block.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        run()
    finally:
        hook.remove()
    return seen


def first_block_input(block: nn.Module, run: Callable[[], Any]) -> torch.Tensor:
    """The hidden states of ``block``'s first call while ``run()`` runs."""
    return first_block_inputs(block, run)[0]


def first_decoder_layer(model: nn.Module) -> nn.Module:
    """A decoder-only or vision-language transformers model's first decoder layer, as transformers names it
    (``get_decoder().layers[0]``; LLaVA before transformers 4.53 has no ``get_decoder``: its
    ``language_model.model.layers[0]``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    get_decoder = getattr(base, "get_decoder", None)
    for candidate in (get_decoder() if get_decoder else None, getattr(base, "language_model", None), base):
        while candidate is not None and not hasattr(candidate, "layers") and hasattr(candidate, "model"):
            candidate = candidate.model
        if candidate is not None and hasattr(candidate, "layers"):
            return candidate.layers[0]
    raise AssertionError(f"no decoder layers found in {type(base).__name__}")
