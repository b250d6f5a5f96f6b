"""The LLaMA-Factory versions this adapter is tested with, and checks of the hook points it relies on.

LLaMA-Factory v0 has no plugin system. The adapter uses:

- ``llamafactory.train.tuner.run_exp(args, callbacks)`` for ``neft-llamafactory train``;
- for ``neft-llamafactory webui``: ``webui.interface.create_train_tab`` (to add the NEFTune controls),
  ``webui.runner.Runner._parse_train_args`` (which routes the UI's ``neftune_alpha`` field to
  transformers' ``neftune_noise_alpha``), the ``Popen(["llamafactory-cli", "train", ...])`` call in
  ``webui.runner.Runner._launch``, ``webui.runner.gen_cmd`` and ``webui.locales.LOCALES``.

Every hook point is checked before it is used: a missing one (on an untested version) stops with
:class:`~neft_plugins.NEFTuneCompatibilityError` (:func:`neft_plugins.versions.missing_hook_point`) instead of
training without (or with double) noise; with all of them found, a version outside the tested range
(``neft_plugins.versions.TESTED["llamafactory"]``) gets the one untested-version warning every framework gets
(:func:`neft_plugins.versions.warn_if_untested`).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from neft_plugins import versions
from neft_plugins.config import BUILTIN_KEY
from neft_plugins.errors import NEFTuneCompatibilityError
from neft_plugins.versions import TESTED, missing_hook_point, tested_range, warn_if_untested

TESTED_VERSIONS = TESTED["llamafactory"]
WHO = "neft-plugins' LLaMA-Factory adapter"  # who relies on the hook points, in the missing-hook-point error


def env_flag(name: str) -> bool:
    """A boolean environment variable, read as LLaMA-Factory reads its own (``1``, ``true``, ``y``)."""
    return os.environ.get(name, "").lower() in ("1", "true", "y")


# The installed LLaMA-Factory lacks a hook point the adapter relies on: the one type, under its older name.
LlamaFactoryHookError = NEFTuneCompatibilityError


def llamafactory_version() -> str:
    version = versions.installed_version("llamafactory")
    if version is None:
        raise NEFTuneCompatibilityError(
            "llamafactory is not installed: pip install 'neft-plugins[llamafactory]' "
            f"(tested: {tested_range('llamafactory')})"
        )
    return version


def check_version() -> str:
    """The installed version, with the one warning every framework gets when it is outside the tested range
    (:func:`neft_plugins.versions.warn_if_untested`); called once every hook point was found."""
    version = llamafactory_version()
    warn_if_untested("llamafactory")
    return version


def _missing(what: str | list[str]) -> NEFTuneCompatibilityError:
    return missing_hook_point("llamafactory", what, WHO)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise _missing(f"{name} cannot be imported ({error})") from error


def _attribute(module: ModuleType, name: str) -> Any:
    value = getattr(module, name, None)
    if value is None:
        raise _missing([f"{module.__name__}.{name}"])
    return value


def _source(function: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def train_entry() -> Callable[..., None]:
    """``llamafactory.train.tuner.run_exp``, checked to take ``args`` and ``callbacks``."""
    llamafactory_version()  # installed at all
    tuner = _import("llamafactory.train.tuner")
    run_exp = _attribute(tuner, "run_exp")
    try:
        parameters = inspect.signature(run_exp).parameters
    except (TypeError, ValueError):
        parameters = {}
    if "args" not in parameters or "callbacks" not in parameters:
        raise _missing(
            f"llamafactory.train.tuner.run_exp{inspect.signature(run_exp)} does not take (args, callbacks)"
        )
    check_version()
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
    llamafactory_version()  # installed at all
    interface = _import("llamafactory.webui.interface")
    runner = _import("llamafactory.webui.runner")
    locales = _import("llamafactory.webui.locales")
    train_tab = _import("llamafactory.webui.components.train")
    _attribute(interface, "run_web_ui")
    _attribute(interface, "create_ui")
    create_train_tab = _attribute(interface, "create_train_tab")
    if "get_base_elems" not in _source(create_train_tab) or "neftune_alpha" not in _source(create_train_tab):
        raise _missing(
            "webui.components.create_train_tab no longer builds its inputs from manager.get_base_elems() "
            "or has no neftune_alpha field"
        )
    runner_class = _attribute(runner, "Runner")
    for name in ("_parse_train_args", "_launch"):
        _attribute(runner_class, name)
    if BUILTIN_KEY not in _source(runner_class._parse_train_args):
        raise _missing(f"webui.runner.Runner._parse_train_args no longer sets {BUILTIN_KEY}")
    if '"llamafactory-cli", "train"' not in _source(runner_class._launch):
        raise _missing(
            'webui.runner.Runner._launch no longer starts Popen(["llamafactory-cli", "train", ...])'
        )
    _attribute(runner, "Popen")
    _attribute(runner, "gen_cmd")
    table = _attribute(locales, "LOCALES")
    if "neftune_alpha" not in table:
        raise _missing("webui.locales.LOCALES has no neftune_alpha entry")
    return WebUIHooks(check_version(), interface, runner, locales, train_tab)
