"""The mechanics every framework's web UI patch shares (LLaMA Board, ms-swift's web UI); an adapter's ``webui.py``
keeps only which of its framework's components and commands they apply to.

- :func:`install_once`: the patch is applied once per process, however often it is asked for;
- :func:`relabel_alpha_slider`: the framework's NEFTune slider becomes our ``neftune_alpha`` (label, help and
  range from :mod:`neft_plugins.keys`);
- :class:`Route`: the training command the web UI starts, and the one it shows, become ours.

Imports no framework (and no gradio).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from neft_plugins.keys import KEY

T = TypeVar("T")


def install_once(install: Callable[[], T]) -> Callable[[], T]:
    """``install`` run on the first call only; later calls return what it returned. One that raised (a missing
    hook point) patched nothing, and runs again on the next call."""
    done: list[T] = []

    @functools.wraps(install)
    def install_if_not_yet() -> T:
        if not done:
            done.append(install())
        return done[0]

    return install_if_not_yet


def relabel_alpha_slider(slider: Any, **more: Any) -> None:
    """The framework's NEFTune slider as our key: label, help and range from :mod:`neft_plugins.keys` (and
    ``more``), kept in its constructor arguments too (gradio rebuilds a component from them when an event updates
    it, and validates the submitted value against the rebuilt one)."""
    key = KEY["neftune_alpha"]
    minimum, maximum = key.ui_range
    update = {"label": key.label, "info": key.help, "minimum": minimum, "maximum": maximum, **more}
    for name, value in update.items():
        setattr(slider, name, value)
    slider.constructor_args.update(update)


@dataclass(frozen=True)
class Route:
    """The framework's training command (``theirs``: ``["swift", "sft"]``) run as our CLI's ``command``
    (``python -m module command``, this Python), its ``flags`` renamed; in the command text the page shows,
    ``theirs`` reads ``shown`` (``neft-swift sft``)."""

    theirs: tuple[str, ...]
    module: str
    command: str
    shown: str
    flags: Mapping[str, str] = field(default_factory=dict)  # {"--neftune_noise_alpha": "--neftune_alpha"}

    @property
    def ours(self) -> list[str]:
        return [sys.executable, "-m", self.module, self.command]

    def matches(self, command: Any) -> bool:
        return isinstance(command, (list, tuple)) and tuple(command[: len(self.theirs)]) == self.theirs

    def argv(self, command: Sequence[str]) -> list[str]:
        """The command ``theirs ...`` as ours (call on a command that :meth:`matches`)."""
        return [*self.ours, *(self.flags.get(item, item) for item in command[len(self.theirs) :])]

    def text(self, shown: str) -> str:
        """The command text the page shows, as ours."""
        shown = shown.replace(f"{' '.join(self.theirs)} ", f"{self.shown} ", 1)
        for theirs, ours in self.flags.items():
            shown = shown.replace(f"{theirs} ", f"{ours} ")
        return shown
