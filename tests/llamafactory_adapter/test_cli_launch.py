"""``neft-llamafactory train`` starts torchrun when ``llamafactory-cli train`` would, on every tested version.

LLaMA-Factory's helpers differ by version: ``misc.use_kt`` (KTransformers) exists from 0.9.4 only,
``misc.find_available_port`` from 0.9.3. Nothing here starts a process: the decision and the command are checked.
"""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from neft_plugins.integrations.llamafactory import cli

LAUNCH_ENV = ("LOCAL_RANK", "WORLD_SIZE", "FORCE_TORCHRUN", "USE_MCA", "NPROC_PER_NODE", "MASTER_PORT")


@pytest.fixture
def misc(monkeypatch):
    from llamafactory.extras import misc

    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    return misc


def test_torchrun_only_with_several_devices_or_when_forced(misc, monkeypatch):
    monkeypatch.setattr(misc, "get_device_count", lambda: 1)
    assert cli._needs_torchrun() is False
    monkeypatch.setattr(misc, "get_device_count", lambda: 2)
    assert cli._needs_torchrun() is True  # on 0.9.3 too, which has no use_kt
    monkeypatch.setattr(misc, "use_ray", lambda: True)
    assert cli._needs_torchrun() is False
    monkeypatch.setenv("FORCE_TORCHRUN", "1")
    assert cli._needs_torchrun() is True
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli._needs_torchrun() is False  # already a torchrun worker


def test_torchrun_command_reruns_our_cli(misc, monkeypatch):
    started: list[list[str]] = []

    def fake_run(command: list[str], check: bool) -> SimpleNamespace:
        started.append(command)
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(misc, "get_device_count", lambda: 2)
    monkeypatch.setattr(subprocess, "run", fake_run)
    assert cli._torchrun(["sft.yaml", "neftune_alpha=5"]) == 0
    command = started[0]
    assert command[0] == "torchrun"
    assert command[command.index("--nproc_per_node") + 1] == "2"
    assert command[command.index("--master_port") + 1].isdigit()  # llamafactory's find_available_port
    module = "neft_plugins.integrations.llamafactory.cli"
    assert command[-5:] == ["-m", module, "train", "sft.yaml", "neftune_alpha=5"]


def test_usage_lists_every_key_from_the_core_declaration():
    from neft_plugins.keys import usage_lines

    usage = cli.LAUNCHER.usage().splitlines()
    assert all(line in usage for line in usage_lines())
