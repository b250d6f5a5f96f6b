"""Fixtures for the ms-swift tests: the shared tiny records (``tests/conftest.py``'s ``tiny``) in ms-swift's
format, and real CLI runs with the first-block spy (``support.spy``) on, each once per session
(``support.cli_run``); on CPU (``CUDA_VISIBLE_DEVICES=-1``), nothing from a model hub."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from support import ROOT
from support.cli_run import CliRun, run_cli

OUTPUT_DIR = "out"  # --output_dir, in the run's working directory


@pytest.fixture(scope="session")
def tiny_data(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Alpaca records as ms-swift's query/response records."""
    path = tmp_path_factory.mktemp("tiny-data") / "data.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {"query": " ".join(filter(None, (r["instruction"], r["input"]))), "response": r["output"]}
            )
            + "\n"
            for r in tiny.alpaca_records()
        )
    )
    return path


@pytest.fixture(scope="session")
def cpu_run_settings(tiny_data: Path) -> dict[str, object]:
    """What a 2-step CPU run on the tiny data needs beside the model, the tuner and the output folder."""
    return {
        "model_type": "llama",
        "template": "default",
        "dataset": str(tiny_data),
        "torch_dtype": "float32",
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "dataloader_num_workers": 0,
        "dataset_num_proc": 1,
    }


@pytest.fixture(scope="session")
def swift_args(tiny_model: Path, cpu_run_settings: dict[str, object]) -> Callable[..., list[str]]:
    """``swift sft`` arguments for a 2-step CPU run on the tiny model (LoRA unless ``tuner_type`` says), writing
    into ``out/`` in the run's working directory."""

    def build(tuner_type: str = "lora", steps: int = 2, **extra: object) -> list[str]:
        args = {
            "model": tiny_model,
            **cpu_run_settings,
            "tuner_type": tuner_type,
            "max_steps": steps,
            "output_dir": OUTPUT_DIR,
            **extra,
        }
        return [item for key, value in args.items() for item in (f"--{key}", str(value))]

    return build


@pytest.fixture(scope="session")
def swift_run(runs) -> Callable[..., CliRun]:
    """``swift_run(command, **env)``: ``command`` (a console script's name first: ``neft-swift``, ``swift``) on CPU,
    offline, with the first-block spy on, in a folder of its own (its output_dir ``out/`` there), once per session
    for each command and environment; ``ROOT`` on PYTHONPATH: the runs import this source tree's neft_plugins, not
    a copy installed before an edit."""

    def swift_cli(folder: Path, *command: str, **env: str) -> CliRun:
        return run_cli(
            command,
            folder,
            folder=folder,
            output_dir=folder / OUTPUT_DIR,
            spy=True,
            paths=(ROOT,),
            CUDA_VISIBLE_DEVICES="-1",
            **env,
        )

    def run(command: list[str], **env: str) -> CliRun:
        return runs(swift_cli, *map(str, command), **env)

    return run
