"""The LLaMA-Factory versions this adapter is tested with, and checks of the hook points it relies on.

LLaMA-Factory v0 has no plugin system. The adapter uses:

- ``llamafactory.train.tuner.run_exp(args, callbacks)`` for ``neft-llamafactory train``;
- for ``neft-llamafactory webui``: ``webui.interface.create_train_tab`` (to add the NEFTune controls),
  ``webui.runner.Runner._parse_train_args`` (which routes the UI's ``neftune_alpha`` field to
  transformers' ``neftune_noise_alpha``), the ``Popen(["llamafactory-cli", "train", ...])`` call in
  ``webui.runner.Runner._launch``, ``webui.runner.gen_cmd`` and ``webui.locales.LOCALES``.

On a version not in :data:`TESTED_VERSIONS` every hook point is checked before it is used; a missing
one stops with :class:`LlamaFactoryHookError` instead of training without (or with double) noise.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

from neft_plugins.errors import NEFTuneCompatibilityError
from neft_plugins.versions import TESTED

logger = logging.getLogger("neft_plugins.integrations.llamafactory")

TESTED_VERSIONS = TESTED["llamafactory"]


def env_flag(name: str) -> bool:
    """A boolean environment variable, read as LLaMA-Factory reads its own (``1``, ``true``, ``y``)."""
    return os.environ.get(name, "").lower() in ("1", "true", "y")


# The installed LLaMA-Factory lacks a hook point the adapter relies on.
LlamaFactoryHookError = NEFTuneCompatibilityError


def llamafactory_version() -> str:
    try:
        return metadata.version("llamafactory")
    except metadata.PackageNotFoundError:
        raise LlamaFactoryHookError(
            "llamafactory is not installed: pip install 'neft-plugins[llamafactory]' "
            f"(tested with llamafactory {', '.join(TESTED_VERSIONS)})"
        ) from None


def check_version() -> str:
    """The installed version; a warning when it is not one of :data:`TESTED_VERSIONS`."""
    version = llamafactory_version()
    if version not in TESTED_VERSIONS:
        logger.warning(
            "neft_plugins: llamafactory %s is untested (tested: %s); its hook points are checked and a "
            "missing one stops the run",
            version,
            ", ".join(TESTED_VERSIONS),
        )
    return version


def _missing(version: str, what: str) -> LlamaFactoryHookError:
    return LlamaFactoryHookError(
        f"llamafactory {version}: {what}. neft-plugins' LLaMA-Factory adapter relies on it and is tested with "
        f"llamafactory {', '.join(TESTED_VERSIONS)}; install one of those "
        f"(pip install 'llamafactory=={TESTED_VERSIONS[-1]}') or report the new version."
    )


def _import(version: str, name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise _missing(version, f"cannot import {name} ({error})") from error


def _attribute(version: str, module: ModuleType, name: str) -> Any:
    value = getattr(module, name, None)
    if value is None:
        raise _missing(version, f"{module.__name__}.{name} is missing")
    return value


def _source(function: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def train_entry() -> Callable[..., None]:
    """``llamafactory.train.tuner.run_exp``, checked to take ``args`` and ``callbacks``."""
    version = check_version()
    tuner = _import(version, "llamafactory.train.tuner")
    run_exp = _attribute(version, tuner, "run_exp")
    try:
        parameters = inspect.signature(run_exp).parameters
    except (TypeError, ValueError):
        parameters = {}
    if "args" not in parameters or "callbacks" not in parameters:
        raise _missing(
            version,
            f"llamafactory.train.tuner.run_exp{inspect.signature(run_exp)} does not take (args, callbacks)",
        )
    return run_exp


@dataclass(frozen=True)
class WebUIHooks:
    version: str
    interface: ModuleType
    runner: ModuleType
    locales: ModuleType
    train_tab: ModuleType


def webui_hooks() -> WebUIHooks:
    """The LLaMA Board modules the web UI patch touches, each hook point checked."""
    version = check_version()
    interface = _import(version, "llamafactory.webui.interface")
    runner = _import(version, "llamafactory.webui.runner")
    locales = _import(version, "llamafactory.webui.locales")
    train_tab = _import(version, "llamafactory.webui.components.train")
    _attribute(version, interface, "run_web_ui")
    _attribute(version, interface, "create_ui")
    create_train_tab = _attribute(version, interface, "create_train_tab")
    if "get_base_elems" not in _source(create_train_tab) or "neftune_alpha" not in _source(create_train_tab):
        raise _missing(
            version,
            "webui.components.create_train_tab no longer builds its inputs from manager.get_base_elems() "
            "or has no neftune_alpha field",
        )
    runner_class = _attribute(version, runner, "Runner")
    for name in ("_parse_train_args", "_launch"):
        _attribute(version, runner_class, name)
    if "neftune_noise_alpha" not in _source(runner_class._parse_train_args):
        raise _missing(version, "webui.runner.Runner._parse_train_args no longer sets neftune_noise_alpha")
    if '"llamafactory-cli", "train"' not in _source(runner_class._launch):
        raise _missing(
            version, 'webui.runner.Runner._launch no longer starts Popen(["llamafactory-cli", "train", ...])'
        )
    _attribute(version, runner, "Popen")
    _attribute(version, runner, "gen_cmd")
    table = _attribute(version, locales, "LOCALES")
    if "neftune_alpha" not in table:
        raise _missing(version, "webui.locales.LOCALES has no neftune_alpha entry")
    return WebUIHooks(version, interface, runner, locales, train_tab)
