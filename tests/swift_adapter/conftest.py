"""Fixtures for the ms-swift tests: a tiny local Llama folder, a local dataset, and real CLI runs with the
first-block spy (``support.spy``) on; on CPU (``CUDA_VISIBLE_DEVICES=-1``), nothing from a model hub."""

from __future__ import annotations

import ast
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support import ROOT
from support.env import subprocess_env
from support.llamafactory_cli import console_script
from support.logs import METRICS
from support.spy import SITE, SPY_DIR, Pass, passes
from support.tiny import alpaca_records, save_tiny_llama

RUN_TIMEOUT = 420
HIDDEN = 64  # the tiny Llama's width: d in alpha / sqrt(L * d)
OUTPUT_DIR = "out"  # --output_dir, in the run's working directory


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), hidden_size=HIDDEN)


@pytest.fixture(scope="session")
def hidden_size() -> int:
    return HIDDEN


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ms-swift's query/response records, in the tiny model's vocabulary, prompts and answers 3-30 words."""
    path = tmp_path_factory.mktemp("tiny-data") / "data.jsonl"
    records = alpaca_records(32, 0, instruction=(3, 8, 20), output=(3, 10, 30))
    path.write_text(
        "".join(json.dumps({"query": r["instruction"], "response": r["output"]}) + "\n" for r in records)
    )
    return path


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    folder: Path  # the run's working directory: its spy records in spy/, its output_dir out/

    @property
    def text(self) -> str:
        return self.stdout + self.stderr

    @property
    def spy_dir(self) -> Path:
        return self.folder / "spy"

    @property
    def output_dir(self) -> Path:
        return self.folder / OUTPUT_DIR

    def metrics(self) -> list[dict[str, float]]:
        """The per-step logs ms-swift prints (``{'loss': ..., 'neft/noise_norm': ...}``), numbers only: it adds
        ``'global_step/max_steps': '1/2'`` and times as text."""
        logs = [ast.literal_eval(match.group(0)) for match in METRICS.finditer(self.text)]
        return [
            {key: float(value) for key, value in log.items() if isinstance(value, (int, float))}
            for log in logs
        ]

    def written_logs(self) -> list[dict[str, Any]]:
        """The step logs (those with a loss) that ms-swift's rank 0 alone writes, at full precision, to
        ``logging.jsonl`` in the run's versioned folder ``out/v*-*/``."""
        (log_file,) = self.output_dir.glob("v*/logging.jsonl")
        entries = [json.loads(line) for line in log_file.read_text().splitlines()]
        return [entry for entry in entries if "loss" in entry]

    def passes(self) -> dict[int, list[Pass]]:
        return passes(self.spy_dir)


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


@pytest.fixture
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


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., Run]:
    """``command`` (a console script's name first) on CPU, offline, with the first-block spy on, in
    ``tmp_path / folder`` (one folder per run where a test runs several); ``ROOT`` on PYTHONPATH: the runs import
    this source tree's neft_plugins, not a copy installed before an edit."""

    def run(command: list[str], folder: str = ".", **env: str) -> Run:
        where = tmp_path / folder
        (where / "spy").mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [console_script(command[0]), *command[1:]],
            cwd=where,
            env=subprocess_env(
                SITE, ROOT, **{SPY_DIR: str(where / "spy"), "CUDA_VISIBLE_DEVICES": "-1", **env}
            ),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr, where)

    return run
