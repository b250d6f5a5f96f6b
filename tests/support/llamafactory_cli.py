"""Real ``neft-llamafactory`` runs for the LLaMA-Factory tests (through ``support.cli_run``), and the torchaudio
stub where it is missing."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from support import ROOT, TESTS
from support.cli_run import CliRun, run_cli
from support.env import subprocess_env
from support.noise import assert_near_paper_norm

EXAMPLES = ROOT / "example_configs" / "llamafactory"
# LLaMA-Factory imports torchaudio at module level, only for audio inputs: where torchaudio is missing, the
# stub (see its docstring) stands in for it, in this process and in the runs the tests start.
STUBS = [TESTS / "llamafactory_adapter" / "stubs"] if importlib.util.find_spec("torchaudio") is None else []
sys.path[:0] = [str(path) for path in STUBS]
NORM_TOLERANCE = 0.06  # relative, for the mean over one logging step's sequences (measured spread ~1-2%)


def run_env(**extra: str) -> dict[str, str]:
    """The environment of a process that imports LLaMA-Factory (the stubs on PYTHONPATH)."""
    return subprocess_env(*STUBS, **extra)


def neft_llamafactory(*args: str | Path, **options) -> CliRun:
    """``neft-llamafactory ARGS`` from the repository root (the example configs' ``dataset_dir`` is relative to
    it), the stubs on PYTHONPATH; ``options`` as ``support.cli_run.run_cli`` takes them."""
    return run_cli(["neft-llamafactory", *args], ROOT, paths=STUBS, **options)


def train(
    config: Path,
    model: Path,
    folder: Path,
    spy: bool = False,
    env: Mapping[str, str] | None = None,
    **extra: object,
) -> CliRun:
    """``neft-llamafactory train CONFIG`` on the tiny model (``tiny_overrides``, ``extra`` on top), writing into
    ``folder/out``, asserted to succeed; with ``spy``, the first-block spy on (``run.passes()``)."""
    output_dir = folder / "out"
    overrides = tiny_overrides(model, output_dir, **extra)
    run = neft_llamafactory(
        "train", config, *overrides, folder=folder, output_dir=output_dir, spy=spy, **(env or {})
    )
    assert run.returncode == 0, run.describe()
    return run


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
        assert_near_paper_norm([entry["neft/noise_norm"]], alpha, rel=NORM_TOLERANCE, context=entry)
