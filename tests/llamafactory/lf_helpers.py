"""Helpers for the LLaMA-Factory tests: environment, real CLI runs, parsing their metrics."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EXAMPLES = ROOT / "example_configs" / "llamafactory"
STUBS = HERE / "stubs"
sys.path.insert(0, str(ROOT / "tests"))  # tiny.py


if importlib.util.find_spec("torchaudio") is None:  # see stubs/torchaudio/__init__.py
    sys.path.insert(0, str(STUBS))

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
    "DISABLE_VERSION_CHECK": "1",
    "BROWSER": "true",  # gradio's launch(inbrowser=True) must not open a browser of its own
}
UNIFORM_NORM = 1 / math.sqrt(3)  # expected noise norm of one sequence, per unit of alpha
NORM_TOLERANCE = 0.06  # relative, for the mean over one logging step's sequences (measured spread ~1-2%)
RUN_TIMEOUT = 420


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **OFFLINE_ENV, **extra}
    if importlib.util.find_spec("torchaudio") is None or str(STUBS) in sys.path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(STUBS), env.get("PYTHONPATH", "")) if p)
    return env


def console_script(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed beside {sys.executable}"
    return found


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    output_dir: Path | None = None
    metrics: list[dict[str, float]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.stdout + self.stderr

    def history(self) -> list[dict[str, float]]:
        """Training log entries of trainer_state.json that carry neft/* metrics."""
        assert self.output_dir is not None
        state = json.loads((self.output_dir / "trainer_state.json").read_text())
        return [entry for entry in state["log_history"] if "neft/noise_norm" in entry]


def printed_metrics(stdout: str) -> list[dict[str, float]]:
    """The per-step metric dicts transformers prints: {'loss': '4.28', 'neft/noise_norm': '2.9', ...}."""
    found = []
    for line in stdout.splitlines():
        start = line.find("{'loss'")
        if start < 0:
            continue
        entry = ast.literal_eval(line[start : line.rindex("}") + 1])
        found.append({key: float(value) for key, value in entry.items()})
    return found


def run(command: list[str], cwd: Path, output_dir: Path | None = None, timeout: int = RUN_TIMEOUT) -> Run:
    done = subprocess.run(
        command, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    return Run(done.returncode, done.stdout, done.stderr, output_dir, printed_metrics(done.stdout))


def tiny_overrides(model_dir: Path, output_dir: Path, **extra: object) -> list[str]:
    """Point an example config at the tiny local model and keep the run short."""
    values: dict[str, object] = {
        "model_name_or_path": model_dir,
        "template": "default",
        "trust_remote_code": "false",
        "output_dir": output_dir,
        "max_steps": 3,
        "logging_steps": 1,
        "save_steps": 1000,
        "cutoff_len": 128,
        "bf16": "false",
        "preprocessing_num_workers": "null",
        "dataloader_num_workers": 0,
        "warmup_steps": 0,
        "gradient_accumulation_steps": 1,
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


def assert_noise_norms(entries: list[dict[str, float]], alpha: float, steps: int) -> None:
    """Every logging step reports alpha and a mean per-sequence noise norm of alpha/sqrt(3)."""
    assert len(entries) == steps, entries
    for entry in entries:
        assert entry["neft/alpha"] == pytest.approx(alpha)
        assert entry["neft/tokens_noised"] > 0
        assert entry["neft/noise_norm"] == pytest.approx(alpha * UNIFORM_NORM, rel=NORM_TOLERANCE), entry
