"""The adapters' kit (``integrations/launcher.py``, ``integrations/webui_patch.py``), with no framework installed:
usage from the keys, versions, our errors as exit 2, torchrun workers and re-launch, and the web UI mechanics."""

from __future__ import annotations

import sys
from importlib import metadata
from types import SimpleNamespace

import pytest

import neft_plugins
from neft_plugins.config import NEFTuneConfig
from neft_plugins.integrations import launcher as launcher_module
from neft_plugins.integrations.launcher import Launcher, is_torchrun_worker
from neft_plugins.integrations.webui_patch import Route, install_once, relabel_alpha_slider
from neft_plugins.keys import KEY, usage_lines
from neft_plugins.versions import TESTED

MODULE = "neft_plugins.integrations.example.cli"


def make_launcher(framework: str = "llamafactory", **commands) -> Launcher:
    return Launcher(
        prog="neft-example",
        framework=framework,
        module=MODULE,
        commands=commands or {"train": lambda argv: 0},
        synopsis=[("train CONFIG.yaml", "train with NEFTune"), ("webui", "the web UI")],
        keys_how="--key value",
        others="example-cli",
    )


def test_usage_lists_the_commands_aligned_and_every_key_from_the_declaration():
    usage = make_launcher().usage().splitlines()
    assert usage[:4] == [
        "usage:",
        "  neft-example train CONFIG.yaml  train with NEFTune",
        "  neft-example webui              the web UI",
        "  neft-example version            versions of neft-plugins and llamafactory",
    ]
    assert "NEFTune keys (--key value; `neft keys` explains each):" in usage
    assert usage[-len(usage_lines()) - 1 : -1] == usage_lines()
    assert usage[-1] == "Other commands: use example-cli."


@pytest.mark.parametrize("argv", [[], ["help"], ["-h"], ["--help"]])
def test_help_prints_the_usage(argv, capsys):
    launcher = make_launcher()
    assert launcher.main(argv) == 0
    assert capsys.readouterr().out == launcher.usage() + "\n"


@pytest.mark.parametrize("argv", [["version"], ["--version"]])
def test_version_names_ours_the_installed_framework_and_the_tested_ones(argv, capsys):
    assert make_launcher("transformers").main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"neft-plugins {neft_plugins.__version__}",
        f"transformers {metadata.version('transformers')} (tested: {', '.join(TESTED['transformers'])})",
    ]


def test_version_of_a_framework_not_installed(capsys):
    assert make_launcher("ms-swift").main(["--version"]) == 0
    assert f"ms-swift not installed (tested: {', '.join(TESTED['ms-swift'])})" in capsys.readouterr().out


def test_an_unknown_command_is_a_usage_error(capsys):
    launcher = make_launcher()
    assert launcher.main(["trian"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"neft-example: unknown command 'trian'\n\n{launcher.usage()}\n"


def test_our_error_in_any_command_is_one_line_and_exit_2(capsys):
    def train(argv: list[str]) -> int:
        NEFTuneConfig.from_mapping({"neftune_alhpa": 5})
        return 0

    assert make_launcher(train=train).main(["train", "x.yaml"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(
        "neft-example: error: neftune_alhpa: unknown key; did you mean neftune_alpha?"
    )
    assert captured.err.count("\n") == 1 and captured.out == ""


def test_a_command_gets_the_rest_of_the_line_and_gives_its_status():
    seen: list[list[str]] = []
    launcher = make_launcher(train=lambda argv: seen.append(argv) or 3)
    assert launcher.main(["train", "x.yaml", "--neftune_alpha", "5"]) == 3
    assert seen == [["x.yaml", "--neftune_alpha", "5"]]


def test_other_errors_are_not_ours_to_hide():
    def train(argv: list[str]) -> int:
        raise KeyError("framework bug")

    with pytest.raises(KeyError, match="framework bug"):
        make_launcher(train=train).main(["train"])


@pytest.mark.parametrize(
    ("environ", "worker"),
    [
        ({}, False),
        ({"LOCAL_RANK": "0"}, False),
        ({"WORLD_SIZE": "2"}, False),
        ({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, True),
    ],
)
def test_a_torchrun_worker_has_local_rank_and_world_size(environ, worker, monkeypatch):
    assert is_torchrun_worker(environ) is worker
    for name in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert is_torchrun_worker() is worker


def test_relaunch_runs_the_same_command_on_every_rank(monkeypatch, capsys):
    started: list[list[str]] = []

    def fake_run(command: list[str], check: bool) -> SimpleNamespace:
        started.append(command)
        return SimpleNamespace(returncode=7)

    monkeypatch.setattr(launcher_module.subprocess, "run", fake_run)
    launcher = make_launcher()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    assert launcher.relaunch(torchrun, "train", ["x.yaml"]) == 7
    assert started[0] == [*torchrun, "-m", MODULE, "train", "x.yaml"]
    assert capsys.readouterr().out == ""
    assert launcher.relaunch(["torchrun"], "train", ["x.yaml"], echo="run sh: `{}`") == 7
    assert capsys.readouterr().out == f"run sh: `torchrun -m {MODULE} train x.yaml`\n"


def test_install_once_runs_once_and_again_after_it_raised():
    calls: list[int] = []

    @install_once
    def install() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a missing hook point")
        return "hooks"

    with pytest.raises(RuntimeError):
        install()
    assert install() == "hooks" and install() == "hooks"
    assert len(calls) == 2 and install.__name__ == "install"


def test_the_slider_becomes_our_key_and_stays_so_when_rebuilt():
    slider = SimpleNamespace(label="NEFTune", info="", minimum=0, maximum=10, constructor_args={"step": 0.1})
    relabel_alpha_slider(slider, elem_id="neftune-alpha")
    key = KEY["neftune_alpha"]
    expected = {
        "label": key.label,
        "info": key.help,
        "minimum": key.ui_range[0],
        "maximum": key.ui_range[1],
        "elem_id": "neftune-alpha",
    }
    assert {name: getattr(slider, name) for name in expected} == expected
    assert slider.constructor_args == {"step": 0.1, **expected}


def test_the_frameworks_command_runs_as_ours_and_is_shown_as_ours():
    route = Route(("fw", "train"), MODULE, "train", "neft-fw train", {"--builtin_alpha": "--neftune_alpha"})
    assert route.ours == [sys.executable, "-m", MODULE, "train"]
    command = ["fw", "train", "--model", "m", "--builtin_alpha", "5"]
    assert route.matches(command) and route.matches(tuple(command))
    assert not route.matches(["fw", "export", "x"]) and not route.matches("fw train")
    assert route.argv(command) == [*route.ours, "--model", "m", "--neftune_alpha", "5"]
    shown = "nohup fw train --model 'm' --builtin_alpha '5' > run.log &"
    assert route.text(shown) == "nohup neft-fw train --model 'm' --neftune_alpha '5' > run.log &"
