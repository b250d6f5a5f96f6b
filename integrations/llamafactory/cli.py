"""``neft-llamafactory``: ``train CONFIG.yaml [key=value ...]``, ``webui``, ``version``.

``train`` takes the YAML ``llamafactory-cli train`` takes, plus neft-plugins' ``neftune_*`` keys
(:mod:`neft_plugins.keys`). Usage, versions, errors and the torchrun re-launch: :mod:`..launcher`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from neft_plugins.integrations.launcher import Launcher, is_torchrun_worker
from neft_plugins.integrations.llamafactory.compat import env_flag


def _needs_torchrun() -> bool:
    """As ``llamafactory-cli train`` decides, unless this process is already a torchrun worker."""
    if is_torchrun_worker():
        return False
    if env_flag("FORCE_TORCHRUN") or env_flag("USE_MCA"):
        return True
    from llamafactory.extras import misc

    # use_kt (KTransformers) exists from llamafactory 0.9.4 on; before it, there is no such mode.
    use_kt = getattr(misc, "use_kt", lambda: False)
    return misc.get_device_count() > 1 and not misc.use_ray() and not use_kt()


def _torchrun(args: Sequence[str]) -> int:
    """``train args`` on every rank, torchrun started by name with the options ``llamafactory-cli`` gives it."""
    from llamafactory.extras.misc import find_available_port, get_device_count

    torchrun = [
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
    ]
    return LAUNCHER.relaunch(torchrun, "train", args)


def train(args: Sequence[str]) -> int:
    if not args:
        return LAUNCHER.usage_error("neft-llamafactory train: expected CONFIG.yaml or --key value ...")
    from neft_plugins.integrations.llamafactory.train import load_args, prepare_args, run_prepared

    from_file = args[0].endswith((".yaml", ".yml", ".json"))
    # Bad keys stop here, before LLaMA-Factory loads.
    neft_config, rest = prepare_args(load_args(args[0], args[1:]) if from_file else args)
    if _needs_torchrun():
        return _torchrun(args)
    run_prepared(neft_config, rest)
    return 0


def webui(args: Sequence[str]) -> int:
    from neft_plugins.integrations.llamafactory.webui import run_web_ui

    run_web_ui()
    return 0


LAUNCHER = Launcher(
    prog="neft-llamafactory",
    framework="llamafactory",
    module="neft_plugins.integrations.llamafactory.cli",
    commands={"train": train, "webui": webui},
    synopsis=[
        ("train CONFIG.yaml [key=value ...]", "`llamafactory-cli train` with neft-plugins' NEFTune"),
        ("train --key value ...", "the same, arguments as in LLaMA Board's preview"),
        ("webui", "LLaMA Board, NEFTune options in the Train tab"),
    ],
    keys_how="YAML, key=value or --key value",
    others="llamafactory-cli",
)
main = LAUNCHER.main

if __name__ == "__main__":
    sys.exit(main())
