"""Starting a test's worker script in 2 CPU processes under torchrun, and the end of such a script."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import torch.distributed as dist

from support.env import subprocess_env


def free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def torchrun(script: Path, *args: str, paths: tuple[Path, ...] = (), **env: str) -> None:
    """Run ``script`` in 2 CPU processes (gloo), with ``paths`` on PYTHONPATH after ``tests/``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    subprocess.run(
        [*command, "--master_addr", "127.0.0.1", "--master_port", free_port(), str(script), *args],
        check=True,
        timeout=300,
        env=subprocess_env(*paths, **env),
    )


def leave_process_group() -> NoReturn:
    """Meet the other ranks, destroy the group and exit 0.

    torch 2.13's gloo leaves a joinable thread behind, and now and then the interpreter's normal exit aborts on
    it ("terminate called without an active exception"), failing torchrun after the work is done and written;
    so the process leaves without running C++ static destructors.
    """
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
