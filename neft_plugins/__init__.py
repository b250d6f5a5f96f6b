"""NEFTune — noisy embedding instruction fine-tuning (Jain et al., 2023) — done right.

``NEFTuneCallback`` is imported lazily, so the core needs only torch and pluggy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from neft_plugins.attach import NEFTuneHandle, attach, neftune
from neft_plugins.config import CONFIG_KEYS, LENGTHS, NEFTuneConfig
from neft_plugins.errors import (
    NEFTuneAttachError,
    NEFTuneCompatibilityError,
    NEFTuneConfigError,
    NEFTuneConflictError,
    NEFTuneError,
    NEFTuneInputError,
    NEFTunePluginError,
)
from neft_plugins.hookspecs import hookimpl, hookspec
from neft_plugins.noise import SCOPES
from neft_plugins.plugins import distributions, schedules
from neft_plugins.record import NoiseRecord

if TYPE_CHECKING:
    from neft_plugins.callback import NEFTuneCallback

__all__ = [
    "CONFIG_KEYS",
    "LENGTHS",
    "SCOPES",
    "NEFTuneAttachError",
    "NEFTuneCallback",
    "NEFTuneCompatibilityError",
    "NEFTuneConfig",
    "NEFTuneConfigError",
    "NEFTuneConflictError",
    "NEFTuneError",
    "NEFTuneHandle",
    "NEFTuneInputError",
    "NEFTunePluginError",
    "NoiseRecord",
    "attach",
    "distributions",
    "hookimpl",
    "hookspec",
    "neftune",
    "schedules",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "NEFTuneCallback":
        from neft_plugins.callback import NEFTuneCallback

        return NEFTuneCallback
    raise AttributeError(f"module 'neft_plugins' has no attribute {name!r}")
