"""``neft-llamafactory webui``: LLaMA Board whose training runs use neft-plugins' NEFTune.

Small, checked patches (see :mod:`.compat`):

- Train tab: the existing "NEFTune alpha" slider goes up to 20 (LLaMA Board caps it at 10), and
  distribution, schedule, scope and length drop-downs appear under it, in "Extra configurations".
- ``Runner._parse_train_args``: the slider becomes our ``neftune_alpha`` (plus the drop-downs' keys)
  instead of transformers' ``neftune_noise_alpha``, so nothing is noised twice.
- ``Runner._launch``: ``llamafactory-cli train`` becomes ``neft-llamafactory train``, which accepts our keys;
  the command preview says so.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Callable
from typing import Any

from neft_plugins.config import BUILTIN_KEY
from neft_plugins.integrations.llamafactory.compat import WHO, WebUIHooks, webui_hooks
from neft_plugins.integrations.webui_patch import Route, install_once, relabel_alpha_slider
from neft_plugins.keys import KEY, KEYS
from neft_plugins.versions import missing_hook_point

# `llamafactory-cli train` (what Runner._launch starts, what gen_cmd previews) as `neft-llamafactory train`
ROUTE = Route(
    theirs=("llamafactory-cli", "train"),
    module="neft_plugins.integrations.llamafactory.cli",
    command="train",
    shown="neft-llamafactory train",
)
# The form's controls, from the core's one declaration of the keys: LLaMA-Factory's own alpha slider (relabelled,
# its range widened) and a drop-down per key with named choices.
ALPHA_MAX = KEY["neftune_alpha"].ui_range[1]
OPTION_KEYS = tuple(key.name for key in KEYS if key.choices is not None)


def _make_controls() -> dict[str, Any]:
    import gradio as gr

    return {
        name: gr.Dropdown(
            choices=list(KEY[name].choices()),
            value=KEY[name].default,
            label=KEY[name].label,
            info=KEY[name].help,
            elem_id=name.replace("_", "-"),
            render=False,
        )
        for name in OPTION_KEYS
    }


def _wrap_create_train_tab(create_train_tab: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    @functools.wraps(create_train_tab)
    def create_train_tab_with_neftune(engine: Any) -> dict[str, Any]:
        import gradio as gr

        controls = _make_controls()
        manager = engine.manager
        base_elems = manager.get_base_elems
        # The tab's start/preview/save buttons take the set built from get_base_elems(): put ours in it.
        manager.get_base_elems = lambda: base_elems() | set(controls.values())
        try:
            elems = create_train_tab(engine)
        finally:
            del manager.get_base_elems
        slider, extra_tab = elems.get("neftune_alpha"), elems.get("extra_tab")
        if slider is None or extra_tab is None:
            missing = [name for name in ("neftune_alpha", "extra_tab") if elems.get(name) is None]
            raise missing_hook_point(
                "llamafactory", [f"the web UI's Train tab {name}" for name in missing], WHO
            )
        relabel_alpha_slider(slider, elem_id="neftune-alpha")  # LLaMA Board relabels every component on load
        with extra_tab, gr.Row() as row:
            for control in controls.values():
                control.render()
        children = getattr(extra_tab, "children", None)
        if isinstance(children, list) and len(children) > 2 and children[-1] is row:
            children.insert(1, children.pop())  # right under the row holding the alpha slider
        elems.update(controls)
        return elems

    return create_train_tab_with_neftune


def _wrap_parse_train_args(parse: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    @functools.wraps(parse)
    def parse_train_args_with_neftune(self: Any, data: dict[Any, Any]) -> dict[str, Any]:
        args = parse(self, data)

        def get(elem_id: str) -> Any:
            try:
                return data[self.manager.get_elem_by_id(elem_id)]
            except KeyError:
                raise missing_hook_point(
                    "llamafactory", [f"the web UI's Train tab input {elem_id}"], WHO
                ) from None

        extra = json.loads(get("train.extra_args") or "{}")
        if BUILTIN_KEY not in extra:  # it came from the slider: the slider is ours now
            args.pop(BUILTIN_KEY, None)
        alpha = get("train.neftune_alpha") or 0
        if alpha and "neftune_alpha" not in extra:
            args["neftune_alpha"] = float(alpha)
            for key in OPTION_KEYS:
                if key not in extra:
                    args[key] = get(f"train.{key}")
        return args

    return parse_train_args_with_neftune


def _popen(command: Any, *args: Any, **kwargs: Any) -> subprocess.Popen:
    if ROUTE.matches(command):
        command = ROUTE.argv(command)
    return subprocess.Popen(command, *args, **kwargs)


def _wrap_gen_cmd(gen_cmd: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(gen_cmd)
    def gen_cmd_with_neftune(args: dict[str, Any]) -> str:
        return ROUTE.text(gen_cmd(args))

    return gen_cmd_with_neftune


def _update_locales(locales: dict[str, dict[str, dict[str, str]]]) -> None:
    languages = list(locales["neftune_alpha"])
    for key in ("neftune_alpha", *OPTION_KEYS):
        entry = locales.setdefault(key, {})
        for language in languages:
            entry[language] = {"label": KEY[key].label, "info": KEY[key].help}
            if key == "neftune_alpha":
                entry[language]["maximum"] = ALPHA_MAX


@install_once
def install() -> WebUIHooks:
    """Patch LLaMA Board (once per process); every hook point is checked first."""
    hooks = webui_hooks()
    hooks.interface.create_train_tab = _wrap_create_train_tab(hooks.interface.create_train_tab)
    runner_class = hooks.runner.Runner
    runner_class._parse_train_args = _wrap_parse_train_args(runner_class._parse_train_args)
    hooks.runner.Popen = _popen
    hooks.runner.gen_cmd = _wrap_gen_cmd(hooks.runner.gen_cmd)
    _update_locales(hooks.locales.LOCALES)
    return hooks


def create_ui(demo_mode: bool = False) -> Any:
    """LLaMA Board's Blocks with the NEFTune option, for embedding or tests."""
    return install().interface.create_ui(demo_mode=demo_mode)


def run_web_ui() -> None:
    install().interface.run_web_ui()
