"""``neft-swift web-ui``: ms-swift's web UI whose SFT runs use neft-plugins' NEFTune.

Two small patches on the "LLM Training" (SFT) page; no noise logic here:

- its NEFTune slider (ms-swift's ``--neftune_noise_alpha``, transformers' built-in) is relabelled and ranged from
  :mod:`neft_plugins.keys`, and becomes our ``--neftune_alpha``;
- the run it starts, ``swift sft ...``, becomes ``neft-swift sft ...`` (this Python's
  ``-m neft_plugins.integrations.swift.cli sft``); the command shown on the page says ``neft-swift sft``.

Our other keys go in the page's "more params" field as ``--neftune_scope prompt ...`` (``neft-swift sft`` checks
them). The RLHF and GRPO pages (``swift rlhf``) are left as they are.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from neft_plugins.config import BUILTIN_KEY
from neft_plugins.errors import NEFTuneCompatibilityError
from neft_plugins.keys import KEY
from neft_plugins.versions import missing_hook_point

SLIDER = BUILTIN_KEY  # the elem_id of ms-swift's NEFTune slider, on its Hyper sub-page: the built-in key
ALPHA_FLAG, BUILTIN_FLAG = "--neftune_alpha", f"--{SLIDER}"
SFT_COMMAND = [sys.executable, "-m", "neft_plugins.integrations.swift.cli", "sft"]
SFT_GROUP = "llm_train"  # ms-swift's SFT page; llm_rlhf and llm_grpo run `swift rlhf`
WHO = "neft-swift web-ui"  # who relies on the hook points, in the missing-hook-point error

# ms-swift's web UI no longer has what the patch wraps: the one type, under its older name.
SwiftWebUIHookError = NEFTuneCompatibilityError


def _relabel(slider: Any) -> None:
    """The slider as our key: label, help and range from :mod:`neft_plugins.keys`, kept in its constructor
    arguments (gradio rebuilds a component from them when an event updates it)."""
    key = KEY["neftune_alpha"]
    update = {"label": key.label, "info": key.help, "minimum": key.ui_range[0], "maximum": key.ui_range[1]}
    for name, value in update.items():
        setattr(slider, name, value)
    slider.constructor_args.update(update)


def _wrap_build_ui(build_ui: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(build_ui)
    def build_ui_with_neftune(cls: Any, base_tab: Any) -> Any:
        built = build_ui(cls, base_tab)
        if cls.group == SFT_GROUP:
            try:
                slider = cls.element(SLIDER)
            except KeyError:
                raise missing_hook_point(
                    "ms-swift", [f"the web UI's SFT page slider {SLIDER}"], WHO
                ) from None
            _relabel(slider)
        return built

    return build_ui_with_neftune


def route_command(command: list[str], shown: str) -> tuple[list[str], str]:
    """``swift sft ... --neftune_noise_alpha A ...`` as ``neft-swift sft ... --neftune_alpha A ...``, for the
    command run and the one shown."""
    if command[:2] != ["swift", "sft"]:
        raise missing_hook_point(
            "ms-swift", f"the web UI's SFT page built {command[:2]}, not ['swift', 'sft']", WHO
        )
    rest = [ALPHA_FLAG if item == BUILTIN_FLAG else item for item in command[2:]]
    shown = shown.replace("swift sft ", "neft-swift sft ", 1).replace(f"{BUILTIN_FLAG} ", f"{ALPHA_FLAG} ")
    return [*SFT_COMMAND, *rest], shown


def _wrap_train(train: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(train)
    def train_with_neftune(cls: Any, *args: Any) -> Any:
        command, envs, log_file, shown, sft_args, other = train(cls, *args)
        if cls.group == SFT_GROUP:
            command, shown = route_command(command, shown)
        return command, envs, log_file, shown, sft_args, other

    return train_with_neftune


_installed = False


def install() -> None:
    """Patch ms-swift's web UI (once per process)."""
    global _installed
    if _installed:
        return
    from swift.ui.llm_train import LLMTrain

    missing = [
        name for name in ("build_ui", "train") if not hasattr(getattr(LLMTrain, name, None), "__func__")
    ]
    if missing:
        raise missing_hook_point(
            "ms-swift", [f"classmethod swift.ui.llm_train.LLMTrain.{name}" for name in missing], WHO
        )
    LLMTrain.build_ui = classmethod(_wrap_build_ui(LLMTrain.build_ui.__func__))
    LLMTrain.train = classmethod(_wrap_train(LLMTrain.train.__func__))
    _installed = True


def run_web_ui(argv: list[str]) -> None:
    from swift.ui import webui_main

    install()
    webui_main(argv)
