"""Unsloth's GPU code path, as far as it runs on a CPU (``UNSLOTH_ALLOW_CPU=1``, in ``gpu_path_sft.py``): its
loader stops at CUDA; its rewritten SFTTrainer (``unsloth.models.rl``) trains the tiny Llama with padding-free
batches, and with our callback each packed sequence gets the paper's noise."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from unsloth_runs import HIDDEN

from support import ROOT
from support.cli_run import CliRun, run_cli
from support.logs import double_noise_error
from support.noise import (
    assert_near_paper_norm,
    assert_scaled_by_the_row,
    uniform_norm_tolerance,
)
from support.spy import Pass

ALPHA = 5.0
SCRIPT = Path(__file__).with_name("gpu_path_sft.py")


@pytest.fixture(scope="module")
def gpu_path_run(tiny_model: Path, runs) -> CliRun:
    def unsloth_gpu_path(folder: Path) -> CliRun:
        command = [sys.executable, SCRIPT, tiny_model, folder]
        run = run_cli(command, folder, folder=folder, paths=(SCRIPT.parent, ROOT), UNSLOTH_ALLOW_CPU="1")
        assert run.returncode == 0, run.text[-4000:]
        return run

    return runs(unsloth_gpu_path)


def written_passes(run: CliRun, name: str) -> list[Pass]:
    assert run.folder is not None
    return [Pass.from_json(line) for line in (run.folder / f"{name}.jsonl").read_text().splitlines()]


def written_logs(run: CliRun, name: str) -> list[dict[str, float]]:
    assert run.folder is not None
    return json.loads((run.folder / f"{name}-logs.json").read_text())


def test_unsloths_gpu_loader_stops_at_cuda_on_a_cpu(gpu_path_run):
    assert "FastLanguageModel.from_pretrained: AssertionError: Torch not compiled with CUDA enabled" in (
        gpu_path_run.text
    )


def test_the_rewritten_trainer_refuses_the_builtin_key_beside_ours(gpu_path_run):
    assert "rewritten: UnslothSFTTrainer" in gpu_path_run.text
    assert f"refused: {double_noise_error('neftune_noise_alpha', ALPHA, ALPHA)}" in gpu_path_run.text


def test_our_callback_on_the_rewritten_trainer_noises_each_packed_sequence(gpu_path_run):
    """Padding-free rows: one row per micro-batch, sequences told apart by the restarting position_ids."""
    passes = written_passes(gpu_path_run, "ours")
    assert passes
    for each in passes:
        assert each.rows == 1 and each.mask_shape is None and len(each.sequences()) > 1
        assert each.largest_padding_noise() == 0.0
        for length, norm in each.sequences():
            assert_near_paper_norm([norm], ALPHA, rel=uniform_norm_tolerance(length * HIDDEN), context=length)
    logged = written_logs(gpu_path_run, "ours")
    assert len(logged) == 2 and all(entry["neft/alpha"] == ALPHA for entry in logged)
    assert_near_paper_norm([entry["neft/noise_norm"] for entry in logged], ALPHA, rel=0.06)


def test_the_builtin_on_the_rewritten_trainer_scales_by_the_whole_packed_row(gpu_path_run):
    """Unsloth's ``neftune_noise_alpha`` alone, padding-free: L is the whole row, so each sequence gets
    alpha/sqrt(3) * sqrt(L_s / L_row). The ratios are printed (``pytest -s``) for docs/unsloth.md."""
    passes = written_passes(gpu_path_run, "builtin")
    ratios = assert_scaled_by_the_row(passes, ALPHA)
    print(f"built-in, padding-free: per-sequence ratios {[round(r, 2) for r in ratios]}")
    assert max(ratios) < 0.9
