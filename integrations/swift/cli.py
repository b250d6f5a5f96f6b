"""``neft-swift``: ``sft ARGS`` (``swift sft`` with neft-plugins' NEFTune), ``plugin``, ``web-ui``, ``version``.

``sft`` takes every ``swift sft`` argument (or a YAML/JSON config first, as ``swift sft`` does) plus the
``--neftune_*`` keys (:mod:`neft_plugins.keys`).
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import subprocess
import sys
from collections.abc import Sequence

from neft_plugins.keys import usage_lines

USAGE = "\n".join(
    [
        "usage:",
        "  neft-swift sft [CONFIG.yaml] [--key value ...]  `swift sft` with neft-plugins' NEFTune (--neftune_alpha 5)",
        "  neft-swift plugin [--path]                       the plugin file and flags for `swift sft` itself",
        "  neft-swift web-ui [--key value ...]              `swift web-ui`, its SFT page's NEFTune slider ours",
        "  neft-swift version                               versions of neft-plugins and ms-swift",
        "",
        "NEFTune keys (--key value; NEFTUNE_KEY=value for `swift sft` itself; `neft keys` explains each):",
        *usage_lines(),
        "Other commands: use swift.",
        "",
    ]
)


def _is_worker() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def sft(argv: Sequence[str]) -> int:
    from swift.cli.main import get_torchrun_args, parse_yaml_args

    from neft_plugins.integrations.swift.callback import prepare_argv, register, with_callback

    argv = list(argv)
    parse_yaml_args(argv)  # a YAML/JSON config first becomes --key value items, as `swift sft` reads it
    config, rest = prepare_argv(argv)  # bad keys stop here, before ms-swift loads a model
    torchrun = None if _is_worker() else get_torchrun_args()
    if torchrun is not None:  # as `swift sft` does (NPROC_PER_NODE, NNODES): each rank runs this command
        module = "neft_plugins.integrations.swift.cli"
        command = [sys.executable, "-m", "torch.distributed.run", *torchrun, "-m", module, "sft", *argv]
        print(f"run sh: `{' '.join(command)}`", flush=True)
        return subprocess.run(command, check=False).returncode
    register(config)
    # ms-swift's own entry point (the file `swift sft` runs), in this process, with our callback named.
    entry = importlib.util.find_spec("swift.cli.sft").origin
    sys.argv = [entry, *with_callback(rest)]
    runpy.run_path(entry, run_name="__main__")
    return 0


def plugin(argv: Sequence[str]) -> int:
    from neft_plugins.integrations.swift.callback import CALLBACK_NAME, PLUGIN_FILE

    if "--path" in argv:
        print(PLUGIN_FILE)
        return 0
    print(
        f"# swift sft itself: our keys as NEFTUNE_* variables, the plugin file and the callback's name\n"
        f"NEFTUNE_ALPHA=5 swift sft ... --external_plugins {PLUGIN_FILE} --callbacks {CALLBACK_NAME}"
    )
    return 0


def web_ui(argv: Sequence[str]) -> int:
    from neft_plugins.integrations.swift.webui import run_web_ui

    run_web_ui(list(argv))
    return 0


def version(argv: Sequence[str]) -> int:
    import neft_plugins
    from neft_plugins.versions import TESTED, installed_version

    print(f"neft-plugins {neft_plugins.__version__}")
    print(f"ms-swift {installed_version('ms-swift')} (tested: {', '.join(TESTED['ms-swift'])})")
    return 0


COMMANDS = {"sft": sft, "plugin": plugin, "web-ui": web_ui, "version": version}


def main(argv: Sequence[str] | None = None) -> int:
    from neft_plugins.errors import NEFTuneError

    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else ("--help", [])
    if command in ("help", "-h", "--help"):
        print(USAGE)
        return 0
    if command not in COMMANDS:
        print(f"neft-swift: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](rest)
    except NEFTuneError as error:  # a bad key: before ms-swift loads a model
        print(f"neft-swift: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
