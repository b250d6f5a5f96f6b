"""``neft-swift web-ui``: ms-swift's web UI whose training runs use neft-plugins' NEFTune.

Two small patches on each training page, "LLM Training" (SFT, ``swift sft``), "LLM RLHF" and "LLM GRPO" (both
``swift rlhf``); no noise logic here:

- its NEFTune slider (ms-swift's ``--neftune_noise_alpha``, transformers' built-in) is relabelled and ranged from
  :mod:`neft_plugins.keys`, and becomes our ``--neftune_alpha``;
- the run it starts, ``swift sft ...`` / ``swift rlhf ...``, becomes ``neft-swift sft ...`` / ``neft-swift rlhf
  ...`` (this Python's ``-m neft_plugins.integrations.swift.cli sft``); the command shown on the page says so.

Our other keys go in the page's "more params" field as ``--neftune_scope prompt ...`` (``neft-swift`` checks
them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from neft_plugins.config import BUILTIN_KEY
from neft_plugins.errors import NEFTuneCompatibilityError
from neft_plugins.integrations.webui_patch import Route, install_once, relabel_alpha_slider
from neft_plugins.versions import missing_hook_point

SLIDER = BUILTIN_KEY  # the elem_id of ms-swift's NEFTune slider, on its Hyper sub-page: the built-in key


def _route(command: str) -> Route:
    """The run a page starts (and the command it shows), ``swift COMMAND ... --neftune_noise_alpha A``, as ours."""
    return Route(
        theirs=("swift", command),
        module="neft_plugins.integrations.swift.cli",
        command=command,
        shown=f"neft-swift {command}",
        flags={f"--{SLIDER}": "--neftune_alpha"},
    )


ROUTE = _route("sft")
RLHF_ROUTE = _route("rlhf")
SFT_COMMAND = ROUTE.ours
RLHF_COMMAND = RLHF_ROUTE.ours
SFT_GROUP = "llm_train"  # ms-swift's SFT page
# Each training page (its group) and the command it runs: the RLHF and GRPO pages run `swift rlhf`.
ROUTES = {SFT_GROUP: ROUTE, "llm_rlhf": RLHF_ROUTE, "llm_grpo": RLHF_ROUTE}
PAGES = {SFT_GROUP: "SFT", "llm_rlhf": "RLHF", "llm_grpo": "GRPO"}
WHO = "neft-swift web-ui"  # who relies on the hook points, in the missing-hook-point error

# ms-swift's web UI no longer has what the patch wraps: the one type, under its older name.
SwiftWebUIHookError = NEFTuneCompatibilityError


def _wrap_build_ui(build_ui: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(build_ui)
    def build_ui_with_neftune(cls: Any, base_tab: Any) -> Any:
        built = build_ui(cls, base_tab)
        if cls.group in ROUTES:
            try:
                slider = cls.element(SLIDER)
            except KeyError:
                raise missing_hook_point(
                    "ms-swift", [f"the web UI's {PAGES[cls.group]} page slider {SLIDER}"], WHO
                ) from None
            relabel_alpha_slider(slider)
        return built

    return build_ui_with_neftune


def route_command(command: list[str], shown: str, group: str = SFT_GROUP) -> tuple[list[str], str]:
    """``swift sft ... --neftune_noise_alpha A ...`` as ``neft-swift sft ... --neftune_alpha A ...`` (``swift
    rlhf`` as ``neft-swift rlhf`` from the RLHF and GRPO pages, the ``group``), for the command run and the one
    shown."""
    route = ROUTES[group]
    if not route.matches(command):
        raise missing_hook_point(
            "ms-swift",
            f"the web UI's {PAGES[group]} page built {command[:2]}, not {list(route.theirs)}",
            WHO,
        )
    return route.argv(command), route.text(shown)


def _wrap_train(train: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(train)
    def train_with_neftune(cls: Any, *args: Any) -> Any:
        command, envs, log_file, shown, sft_args, other = train(cls, *args)
        if cls.group in ROUTES:
            command, shown = route_command(command, shown, cls.group)
        return command, envs, log_file, shown, sft_args, other

    return train_with_neftune


@install_once
def install() -> None:
    """Patch ms-swift's web UI (once per process)."""
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


def run_web_ui(argv: list[str]) -> None:
    from swift.ui import webui_main

    install()
    webui_main(argv)
