"""Fixtures for the ms-swift tests: a tiny local Llama folder, a local dataset, and real CLI runs with the
first-block spy (``support.spy``) on; on CPU (``CUDA_VISIBLE_DEVICES=-1``), nothing from a model hub."""

from __future__ import annotations

import ast
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import ROOT
from support.env import subprocess_env
from support.llamafactory_cli import console_script
from support.logs import METRICS
from support.spy import SITE, SPY_DIR, Pass, passes
from support.tiny import alpaca_records, make_llama, make_tokenizer

RUN_TIMEOUT = 420
HIDDEN = 64  # the tiny Llama's width: d in alpha / sqrt(L * d)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_tokenizer().save_pretrained(folder)
    make_llama(hidden_size=HIDDEN, layers=2).save_pretrained(folder)
    return folder


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
    spy_dir: Path

    @property
    def text(self) -> str:
        return self.stdout + self.stderr

    def metrics(self) -> list[dict[str, float]]:
        """The per-step logs ms-swift prints (``{'loss': ..., 'neft/noise_norm': ...}``), numbers only: it adds
        ``'global_step/max_steps': '1/2'`` and times as text."""
        logs = [ast.literal_eval(match.group(0)) for match in METRICS.finditer(self.text)]
        return [
            {key: float(value) for key, value in log.items() if isinstance(value, (int, float))}
            for log in logs
        ]

    def passes(self) -> dict[int, list[Pass]]:
        return passes(self.spy_dir)


@pytest.fixture
def swift_args(tiny_model: Path, tiny_data: Path, tmp_path: Path) -> Callable[..., list[str]]:
    """``swift sft`` arguments for a 2-step CPU run on the tiny model (LoRA unless ``tuner_type`` says)."""

    def build(tuner_type: str = "lora", steps: int = 2, **extra: object) -> list[str]:
        args = {
            "model": tiny_model,
            "model_type": "llama",
            "template": "default",
            "dataset": tiny_data,
            "tuner_type": tuner_type,
            "torch_dtype": "float32",
            "max_steps": steps,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 1,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "dataloader_num_workers": 0,
            "dataset_num_proc": 1,
            "output_dir": tmp_path / "out",
            **extra,
        }
        return [item for key, value in args.items() for item in (f"--{key}", str(value))]

    return build


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., Run]:
    """``command`` (a console script's name first) on CPU, offline, with the first-block spy on; ``ROOT`` on
    PYTHONPATH: the runs import this source tree's neft_plugins, not a copy installed before an edit."""

    def run(command: list[str], **env: str) -> Run:
        spy_dir = tmp_path / "spy"
        spy_dir.mkdir(exist_ok=True)
        done = subprocess.run(
            [console_script(command[0]), *command[1:]],
            cwd=tmp_path,
            env=subprocess_env(SITE, ROOT, **{SPY_DIR: str(spy_dir), "CUDA_VISIBLE_DEVICES": "-1", **env}),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr, spy_dir)

    return run
