"""The two steps of the noise path that run as Python even inside a compiled graph: drawing the noise from its
stream (a seeded ``torch.Generator`` cannot enter a graph) and handing the record to the observers (plugins run
any Python). Each is a custom op, so ``torch.compile(model, fullgraph=True)`` traces the rest of the noise path
without a graph break, and reruns neither on a change of alpha nor of observers. Outside a compiled graph they
are plain calls: the same Python, the same numbers."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch._higher_order_ops.effects import _EffectType, _register_effectful_op

# Per attachment (by key): fill a tensor with noise (padded: the built-in's bound); observe one pass's tensors.
_draws: dict[int, Callable[[torch.Tensor, bool], torch.Tensor]] = {}
_observers: dict[int, Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]] = {}


def register(key: int, draw: Callable, observe: Callable) -> None:
    _draws[key], _observers[key] = draw, observe


def unregister(key: int) -> None:
    _draws.pop(key, None)
    _observers.pop(key, None)


# A CUDA graph replays kernels, not Python: these must run outside it (the compiler splits the graph around them).
_OUTSIDE_CUDA_GRAPHS = (torch.Tag.cudagraph_unsafe,)


@torch.library.custom_op("neft_plugins::draw_noise", mutates_args=(), tags=_OUTSIDE_CUDA_GRAPHS)
def _draw_noise_op(
    shape: list[int], dtype: torch.dtype, device: torch.device, key: int, padded: bool
) -> torch.Tensor:
    return _draws[key](torch.empty(shape, dtype=dtype, device=device), padded)


@_draw_noise_op.register_fake
def _(shape: list[int], dtype: torch.dtype, device: torch.device, key: int, padded: bool) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device=device)


@torch.library.custom_op("neft_plugins::observe_noise", mutates_args=(), tags=_OUTSIDE_CUDA_GRAPHS)
def _observe_noise_op(
    noise_norms: torch.Tensor,
    embed_norms: torch.Tensor,
    is_sequence: torch.Tensor,
    tokens: torch.Tensor,
    key: int,
) -> None:
    _observers[key](noise_norms, embed_norms, is_sequence, tokens)


_observe_noise_op.register_fake(lambda *inputs: None)  # it returns nothing, whatever it is given

# It returns nothing: without an effect, the compiler would drop it as dead code.
_register_effectful_op(_observe_noise_op, _EffectType.ORDERED)


def draw_noise(
    key: int, shape: torch.Size, dtype: torch.dtype, device: torch.device, padded: bool = False
) -> torch.Tensor:
    if torch.compiler.is_compiling():
        return _draw_noise_op(list(shape), dtype, device, key, padded)
    return _draws[key](torch.empty(shape, dtype=dtype, device=device), padded)


def observe_noise(
    key: int,
    noise_norms: torch.Tensor,
    embed_norms: torch.Tensor,
    is_sequence: torch.Tensor,
    tokens: torch.Tensor,
) -> None:
    if torch.compiler.is_compiling():
        _observe_noise_op(noise_norms, embed_norms, is_sequence, tokens, key)
    else:
        _observers[key](noise_norms, embed_norms, is_sequence, tokens)
