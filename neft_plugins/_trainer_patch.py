"""Patching a transformers ``Trainer``'s methods, the one way ``callback.py`` and ``clean_loss.py`` both do it:
each owner wraps a trainer's methods once (a trainer may be handed over again), and trainers are told apart by the
class names in their MRO (TRL's trainers need not be importable)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

Wrapper = Callable[[Callable[..., Any]], Callable[..., Any]]


class WrapOnce:
    """The trainers one owner has wrapped methods of: ``wrap`` wraps each trainer's methods the first time only."""

    def __init__(self) -> None:
        self._wrapped: weakref.WeakSet[Any] = weakref.WeakSet()

    def wrap(self, trainer: Any, **wrappers: Wrapper) -> bool:
        """``trainer.<name> = wrapper(trainer.<name>)`` for each, in order; False (nothing done) if done before."""
        if trainer in self._wrapped:
            return False
        self._wrapped.add(trainer)
        for name, wrapper in wrappers.items():
            setattr(trainer, name, wrapper(getattr(trainer, name)))
        return True


def trainer_class_named(trainer: Any, names: Iterable[str]) -> str | None:
    """The first class in ``trainer``'s MRO whose name is one of ``names``, by name, or None."""
    wanted = set(names)
    return next((cls.__name__ for cls in type(trainer).__mro__ if cls.__name__ in wanted), None)
