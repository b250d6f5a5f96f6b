"""``neft-llamafactory``: ``train CONFIG.yaml [key=value ...]``, ``webui``, ``version``.

``train`` takes the YAML ``llamafactory-cli train`` takes, plus neft-plugins' ``neftune_*`` keys
(:mod:`neft_plugins.keys`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from neft_plugins.integrations.llamafactory.compat import env_flag
from neft_plugins.keys import usage_lines

USAGE = "\n".join(
    [
        "usage:",
        "  neft-llamafactory train CONFIG.yaml [key=value ...]  `llamafactory-cli train` with neft-plugins' NEFTune",
        "  neft-llamafactory train --key value ...              the same, arguments as in LLaMA Board's preview",
        "  neft-llamafactory webui                              LLaMA Board, NEFTune options in the Train tab",
        "  neft-llamafactory version                            versions of neft-plugins and llamafactory",
        "",
        "NEFTune keys (YAML, key=value or --key value; `neft keys` explains each):",
        *usage_lines(),
        "Other commands: use llamafactory-cli.",
        "",
    ]
)


def _needs_torchrun() -> bool:
    """As ``llamafactory-cli train`` decides, unless this process is already a torchrun worker."""
    if "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return False
    if env_flag("FORCE_TORCHRUN") or env_flag("USE_MCA"):
        return True
    from llamafactory.extras import misc

    # use_kt (KTransformers) exists from llamafactory 0.9.4 on; before it, there is no such mode.
    use_kt = getattr(misc, "use_kt", lambda: False)
    return misc.get_device_count() > 1 and not misc.use_ray() and not use_kt()


def _torchrun(args: Sequence[str]) -> int:
    from llamafactory.extras.misc import find_available_port, get_device_count

    command = [
        "torchrun",
        "--nnodes",
        os.environ.get("NNODES", "1"),
        "--node_rank",
        os.environ.get("NODE_RANK", "0"),
        "--nproc_per_node",
        os.environ.get("NPROC_PER_NODE", str(get_device_count())),
        "--master_addr",
        os.environ.get("MASTER_ADDR", "127.0.0.1"),
        "--master_port",
        os.environ.get("MASTER_PORT", str(find_available_port())),
        "-m",
        "neft_plugins.integrations.llamafactory.cli",
        "train",
        *args,
    ]
    return subprocess.run(command, check=False).returncode


def train(args: Sequence[str]) -> int:
    if not args:
        print("neft-llamafactory train: expected CONFIG.yaml or --key value ...\n\n" + USAGE, file=sys.stderr)
        return 2
    from neft_plugins.integrations.llamafactory.train import load_args, prepare_args, run_prepared

    from_file = args[0].endswith((".yaml", ".yml", ".json"))
    # Bad keys stop here, before LLaMA-Factory loads.
    neft_config, rest = prepare_args(load_args(args[0], args[1:]) if from_file else args)
    if _needs_torchrun():
        return _torchrun(args)
    run_prepared(neft_config, rest)
    return 0


def version() -> int:
    import neft_plugins
    from neft_plugins.integrations.llamafactory.compat import TESTED_VERSIONS, llamafactory_version

    print(f"neft-plugins {neft_plugins.__version__}")
    print(f"llamafactory {llamafactory_version()} (tested: {', '.join(TESTED_VERSIONS)})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if command == "train":
        from neft_plugins.errors import NEFTuneError

        try:
            return train(rest)
        except NEFTuneError as error:
            print(f"neft-llamafactory: error: {error}", file=sys.stderr)
            return 1
    if command == "webui":
        from neft_plugins.integrations.llamafactory.webui import run_web_ui

        run_web_ui()
        return 0
    if command == "version":
        return version()
    if command in ("help", "-h", "--help"):
        print(USAGE)
        return 0
    print(f"neft-llamafactory: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
