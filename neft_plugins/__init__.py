"""NEFTune — noisy embedding instruction fine-tuning (Jain et al., 2023) — done right.

The names backed by torch (``attach``, ``neftune``, ``NEFTuneHandle``, ``NoiseRecord``, ``NEFTuneCallback``) are
imported when first used: the configuration, the keys, the plugin API and the MLX route (``neft_plugins.mlx``) run
without torch installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from neft_plugins.config import CONFIG_KEYS, LENGTHS, SCOPES, NEFTuneConfig
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
from neft_plugins.plugins import distributions, schedules

if TYPE_CHECKING:
    from neft_plugins.callback import NEFTuneCallback
    from neft_plugins.handle import NEFTuneHandle, attach, neftune
    from neft_plugins.record import NoiseRecord

_TORCH_NAMES = {
    "NEFTuneCallback": "neft_plugins.callback",
    "NEFTuneHandle": "neft_plugins.handle",
    "NoiseRecord": "neft_plugins.record",
    "attach": "neft_plugins.handle",
    "neftune": "neft_plugins.handle",
}

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
    if name in _TORCH_NAMES:
        return getattr(importlib.import_module(_TORCH_NAMES[name]), name)
    raise AttributeError(f"module 'neft_plugins' has no attribute {name!r}")
