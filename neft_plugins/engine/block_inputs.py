"""A block's inputs, positional and keyword alike, by key: finding, reading and replacing them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

InputKey = int | str  # a block input: its position among the arguments, or its keyword


def hidden_key(args: tuple, kwargs: dict[str, Any]) -> InputKey | None:
    """Where a block's hidden-states input is: ``hidden_states=``, or its first tensor argument."""
    if isinstance(kwargs.get("hidden_states"), torch.Tensor):
        return "hidden_states"
    return next((index for index, arg in enumerate(args) if isinstance(arg, torch.Tensor)), None)


def tensor_inputs(args: tuple, kwargs: dict[str, Any]) -> Iterator[tuple[InputKey, torch.Tensor]]:
    yield from ((index, arg) for index, arg in enumerate(args) if isinstance(arg, torch.Tensor))
    yield from ((name, value) for name, value in kwargs.items() if isinstance(value, torch.Tensor))


def input_at(args: tuple, kwargs: dict[str, Any], key: InputKey) -> Any:
    if isinstance(key, int):
        return args[key] if key < len(args) else None
    return kwargs.get(key)


def replace(
    args: tuple, kwargs: dict[str, Any], replaced: Mapping[InputKey, torch.Tensor]
) -> tuple[tuple, dict]:
    new_args = tuple(replaced.get(index, arg) for index, arg in enumerate(args))
    named = {name: value for name, value in replaced.items() if isinstance(name, str)}
    return new_args, {**kwargs, **named}


def input_name(key: InputKey) -> str:
    return f"argument {key}" if isinstance(key, int) else repr(key)
