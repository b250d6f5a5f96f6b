"""Real ``neft-llamafactory`` runs for the LLaMA-Factory tests, and the torchaudio stub where it is missing."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support import ROOT, TESTS
from support.env import subprocess_env
from support.logs import printed_metrics
from support.noise import assert_near_paper_norm
from support.spy import SITE, SPY_DIR, Pass, passes

EXAMPLES = ROOT / "example_configs" / "llamafactory"
# LLaMA-Factory imports torchaudio at module level, only for audio inputs: where torchaudio is missing, the
# stub (see its docstring) stands in for it, in this process and in the runs the tests start.
STUBS = [TESTS / "llamafactory_adapter" / "stubs"] if importlib.util.find_spec("torchaudio") is None else []
sys.path[:0] = [str(path) for path in STUBS]
NORM_TOLERANCE = 0.06  # relative, for the mean over one logging step's sequences (measured spread ~1-2%)
RUN_TIMEOUT = 420


def run_env(*paths: Path, **extra: str) -> dict[str, str]:
    return subprocess_env(*STUBS, *paths, **extra)


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


def run(
    command: list[str],
    cwd: Path,
    output_dir: Path | None = None,
    timeout: int = RUN_TIMEOUT,
    paths: tuple[Path, ...] = (),
    **env: str,
) -> Run:
    """``command`` with ``paths`` on PYTHONPATH after the stubs and ``env`` added to the environment."""
    done = subprocess.run(
        command,
        cwd=cwd,
        env=run_env(*paths, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr, output_dir, printed_metrics(done.stdout))


def spied_train(config: Path, overrides: list[str], output_dir: Path, spy: Path) -> tuple[Run, list[Pass]]:
    """``neft-llamafactory train CONFIG key=value ...``, asserted to succeed, with the first-block spy
    (``support.spy``) recording in the new folder ``spy``: the run, and every pass of the model's first block."""
    spy.mkdir()
    command = [console_script("neft-llamafactory"), "train", str(config), *overrides]
    result = run(command, cwd=ROOT, output_dir=output_dir, paths=(SITE,), **{SPY_DIR: str(spy)})
    assert result.returncode == 0, result.text[-6000:]
    return result, passes(spy).get(0, [])


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
