"""The LLaMA Board patch, in-process: the Train tab's NEFTune controls, what a launch gets, what it runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

gr = pytest.importorskip("gradio")

from neft_plugins.integrations.llamafactory import webui  # noqa: E402
from neft_plugins.keys import KEY  # noqa: E402
from support.llamafactory_cli import assert_noise_norms, neft_llamafactory  # noqa: E402
from support.logs import attached_to_llama  # noqa: E402
from support.matrix import on_newest  # noqa: E402


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A Train tab built the way LLaMA Board builds it, with our patch installed."""
    from llamafactory.webui.components import create_top
    from llamafactory.webui.engine import Engine

    hooks = webui.install()
    engine = Engine()
    with gr.Blocks() as blocks:
        engine.manager.add_elems("top", create_top())
        with gr.Tab("Train"):
            engine.manager.add_elems("train", hooks.interface.create_train_tab(engine))
    return engine, blocks


def launch_data(engine, tmp_path, **values):
    """The {component: value} dict LLaMA Board passes to Runner.run_train."""
    manager = engine.manager
    data = {elem: getattr(elem, "value", None) for elem in manager.get_elem_list()}
    defaults = {
        "top.lang": "en",
        "top.model_name": "Custom",
        "top.model_path": "/models/tiny",
        "train.dataset": ["tiny_alpaca"],
        "train.output_dir": str(tmp_path / "out"),
    }
    for elem_id, value in {**defaults, **values}.items():
        data[manager.get_elem_by_id(elem_id)] = value
    return data


def test_train_tab_has_neftune_controls(board):
    engine, _ = board
    slider = engine.manager.get_elem_by_id("train.neftune_alpha")
    assert slider.maximum == 20 and slider.minimum == 0
    assert slider.label == "NEFTune alpha (neft-plugins)" == KEY["neftune_alpha"].label
    assert slider.info == KEY["neftune_alpha"].help
    assert webui.OPTION_KEYS == (
        "neftune_distribution",
        "neftune_schedule",
        "neftune_scope",
        "neftune_length",
    )
    for key in webui.OPTION_KEYS:
        dropdown = engine.manager.get_elem_by_id(f"train.{key}")
        assert [value for _, value in dropdown.choices] == list(KEY[key].choices())
        assert (dropdown.label, dropdown.info, dropdown.value) == (
            KEY[key].label,
            KEY[key].help,
            KEY[key].default,
        )
    # Rendered in "Extra configurations", in the row right under the one holding the alpha slider.
    rows = engine.manager.get_elem_by_id("train.extra_tab").children
    assert slider in descendants(rows[0])
    assert engine.manager.get_elem_by_id("train.neftune_distribution") in descendants(rows[1])


def descendants(block):
    found = []
    for child in getattr(block, "children", []):
        found += [child, *descendants(child)]
    return found


def test_slider_stays_0_to_20_when_gradio_rebuilds_it(board):
    """Gradio rebuilds a component from its constructor arguments on every update (LLaMA Board relabels
    all of them on page load) and validates the submitted value against the rebuilt one."""
    engine, _ = board
    slider = engine.manager.get_elem_by_id("train.neftune_alpha")
    rebuilt = type(slider)(**{**slider.constructor_args, "render": False})
    assert rebuilt.maximum == 20
    assert rebuilt.preprocess(15) == 15
    update = engine.change_lang("en")[slider]
    assert update.maximum == 20


def test_locales_follow_the_language(board):
    engine, _ = board
    updates = engine.change_lang("zh")
    labels = {engine.manager.get_id_by_elem(elem): update.label for elem, update in updates.items()}
    assert labels["train.neftune_alpha"] == "NEFTune alpha (neft-plugins)"
    assert labels["train.neftune_schedule"] == "NEFTune schedule"


def test_slider_routes_to_our_key_not_the_builtin(board, tmp_path):
    engine, _ = board
    data = launch_data(
        engine,
        tmp_path,
        **{
            "train.neftune_alpha": 15,
            "train.neftune_distribution": "gaussian",
            "train.neftune_schedule": "cosine",
        },
    )
    args = engine.runner._parse_train_args(data)
    assert "neftune_noise_alpha" not in args
    assert args["neftune_alpha"] == 15.0
    assert args["neftune_distribution"] == "gaussian" and args["neftune_schedule"] == "cosine"
    assert args["neftune_scope"] == "all" and args["neftune_length"] == "sequence"
    from llamafactory.webui import runner

    preview = runner.gen_cmd(args)
    assert "neft-llamafactory train" in preview and "llamafactory-cli" not in preview
    assert "--neftune_alpha 15.0" in preview


def test_alpha_zero_sets_no_neftune_key(board, tmp_path):
    engine, _ = board
    args = engine.runner._parse_train_args(launch_data(engine, tmp_path, **{"train.neftune_alpha": 0}))
    assert not [key for key in args if key.startswith("neftune")]


def test_builtin_key_in_extra_args_is_kept_so_the_run_refuses(board, tmp_path):
    engine, _ = board
    extra = json.dumps({"optim": "adamw_torch", "neftune_noise_alpha": 5})
    data = launch_data(engine, tmp_path, **{"train.neftune_alpha": 5, "train.extra_args": extra})
    args = engine.runner._parse_train_args(data)
    assert args["neftune_noise_alpha"] == 5 and args["neftune_alpha"] == 5.0


def test_launch_runs_our_cli(monkeypatch):
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda command, *a, **k: started.append(command))
    webui._popen(["llamafactory-cli", "train", "saves/x/training_args.yaml"], text=True)
    webui._popen(["llamafactory-cli", "export", "x.yaml"])
    our_cli = [sys.executable, "-m", "neft_plugins.integrations.llamafactory.cli"]
    assert started[0] == [*our_cli, "train", "saves/x/training_args.yaml"]
    assert started[1] == ["llamafactory-cli", "export", "x.yaml"]


FAST_RUN = {
    "optim": "adamw_torch",
    "max_steps": 2,
    "logging_steps": 1,
    "save_steps": 1000,
    "gradient_accumulation_steps": 1,
    "preprocessing_num_workers": None,
}


@on_newest("llamafactory")
def test_command_preview_trains_with_our_noise(board, tiny_model, tiny_data, tmp_path):
    """The preview LLaMA Board shows (--key value form) is a working neft-llamafactory command."""
    import shlex

    from llamafactory.webui import runner

    engine, _ = board
    data = launch_data(
        engine,
        tmp_path,
        **{
            "top.model_path": str(tiny_model),
            "top.finetuning_type": "full",
            "train.dataset_dir": str(tiny_data),
            "train.compute_type": "fp32",
            "train.cutoff_len": 128,
            "train.neftune_alpha": 15,
            "train.extra_args": json.dumps(FAST_RUN),
        },
    )
    args = engine.runner._parse_train_args(data)
    preview = runner.gen_cmd(args).replace("```bash", "").replace("```", "").replace("\\\n", " ")
    argv = shlex.split(preview)
    assert argv[:2] == ["neft-llamafactory", "train"]
    result = neft_llamafactory(*argv[1:], folder=tmp_path, output_dir=tmp_path / "out")
    assert result.returncode == 0, result.describe()
    assert attached_to_llama(15) in result.stderr
    assert_noise_norms(result.metrics, 15.0, steps=2)
    assert_noise_norms(result.written_logs(), 15.0, steps=2)
