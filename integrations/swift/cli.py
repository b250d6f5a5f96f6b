"""``neft-swift``: ``sft ARGS`` and ``rlhf ARGS`` (``swift sft`` / ``swift rlhf`` with neft-plugins' NEFTune),
``plugin``, ``web-ui``, ``version``.

``sft`` and ``rlhf`` take every argument of ms-swift's command (or a YAML/JSON config first, as it does) plus the
``--neftune_*`` keys (:mod:`neft_plugins.keys`). Usage, versions, errors and the torchrun re-launch:
:mod:`..launcher`.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from collections.abc import Sequence

from neft_plugins.integrations.launcher import Launcher, is_torchrun_worker


def run_swift(command: str, argv: Sequence[str]) -> int:
    """``swift COMMAND argv`` (``sft``, ``rlhf``) with our keys taken out and checked first and our callback named:
    ms-swift's own entry point for it (``swift/cli/COMMAND.py``) runs in this process."""
    from swift.cli.main import get_torchrun_args, parse_yaml_args

    from neft_plugins.integrations.swift.callback import prepare_argv, register, with_callback

    argv = list(argv)
    parse_yaml_args(argv)  # a YAML/JSON config first becomes --key value items, as `swift COMMAND` reads it
    config, rest = prepare_argv(argv)  # bad keys stop here, before ms-swift loads a model
    torchrun = None if is_torchrun_worker() else get_torchrun_args()
    if torchrun is not None:  # as `swift COMMAND` does (NPROC_PER_NODE, NNODES): each rank runs this command
        launch = [sys.executable, "-m", "torch.distributed.run", *torchrun]
        return LAUNCHER.relaunch(launch, command, argv, echo="run sh: `{}`")
    register(config)
    # ms-swift's own entry point (the file `swift COMMAND` runs), in this process, with our callback named.
    entry = importlib.util.find_spec(f"swift.cli.{command}").origin
    sys.argv = [entry, *with_callback(rest)]
    runpy.run_path(entry, run_name="__main__")
    return 0


def sft(argv: Sequence[str]) -> int:
    return run_swift("sft", argv)


def rlhf(argv: Sequence[str]) -> int:
    """``swift rlhf`` (DPO and the other preference types, KTO, GRPO, ...): our callback reaches its trainers as
    it reaches SFT's (ms-swift's trainer mixin builds ``--callbacks``); generation and the reference and old-policy
    passes run under no_grad, which NEFTune never noises."""
    return run_swift("rlhf", argv)


def plugin(argv: Sequence[str]) -> int:
    from neft_plugins.integrations.swift.callback import CALLBACK_NAME, PLUGIN_FILE

    if "--path" in argv:
        print(PLUGIN_FILE)
        return 0
    print(
        f"# swift sft / swift rlhf themselves: our keys as NEFTUNE_* variables, the plugin file and the callback\n"
        f"NEFTUNE_ALPHA=5 swift sft ... --external_plugins {PLUGIN_FILE} --callbacks {CALLBACK_NAME}\n"
        f"NEFTUNE_ALPHA=5 swift rlhf --rlhf_type dpo ... --external_plugins {PLUGIN_FILE} --callbacks {CALLBACK_NAME}"
    )
    return 0


def web_ui(argv: Sequence[str]) -> int:
    from neft_plugins.integrations.swift.webui import run_web_ui

    run_web_ui(list(argv))
    return 0


LAUNCHER = Launcher(
    prog="neft-swift",
    framework="ms-swift",
    module="neft_plugins.integrations.swift.cli",
    commands={"sft": sft, "rlhf": rlhf, "plugin": plugin, "web-ui": web_ui},
    synopsis=[
        ("sft [CONFIG.yaml] [--key value ...]", "`swift sft` with neft-plugins' NEFTune (--neftune_alpha 5)"),
        (
            "rlhf [CONFIG.yaml] [--key value ...]",
            "`swift rlhf` (DPO, KTO, GRPO, ...) with neft-plugins' NEFTune",
        ),
        ("plugin [--path]", "the plugin file and flags for `swift sft` / `swift rlhf` themselves"),
        ("web-ui [--key value ...]", "`swift web-ui`, its SFT, RLHF and GRPO pages' NEFTune sliders ours"),
    ],
    keys_how="--key value; NEFTUNE_KEY=value for `swift sft` itself",
    others="swift",
)
main = LAUNCHER.main

if __name__ == "__main__":
    sys.exit(main())
