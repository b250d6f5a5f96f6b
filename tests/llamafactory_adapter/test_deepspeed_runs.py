"""DeepSpeed ZeRO-3 under a real ``neft-llamafactory train``: the example config with ``deepspeed: <ZeRO json>``
added, on 2 CPU processes (torchrun, started as ``llamafactory-cli`` starts it with ``FORCE_TORCHRUN=1``;
DeepSpeed's CPU accelerator, gloo). What each rank's first block received is measured by the first-block spy
(``support.spy``), independently of NEFTune's own records and of LLaMA-Factory's logs. ZeRO-2 and ZeRO-3 with CPU
offload reach the Trainer the same way; they run in ``tests/core/test_deepspeed.py``. On the newest LLaMA-Factory
only (``support.matrix``)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from support import ROOT
from support.deepspeed import deepspeed_config, require_deepspeed
from support.llamafactory_cli import EXAMPLES, Run, assert_noise_norms, console_script, run, tiny_overrides
from support.matrix import on_newest
from support.noise import assert_near_paper_norm, uniform_norm_tolerance
from support.spy import SITE, SPY_DIR, Pass, passes

ALPHA = 5.0  # the example config's neftune_alpha
WIDTH = 64  # the tiny model's hidden size (conftest's tiny_model)
STAGE = "3"
STEPS = 4
RESUME_STEP = 2
# The CLI starts torchrun by name, as llamafactory-cli does: the one beside this Python, as in an activated venv.
VENV_PATH = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


@dataclass(frozen=True)
class ZeroRun:
    result: Run
    passes: dict[int, list[Pass]]  # by rank

    @property
    def output_dir(self) -> Path:
        assert self.result.output_dir is not None
        return self.result.output_dir


pytestmark = on_newest("llamafactory")


def zero_config(folder: Path) -> Path:
    """The example SFT config with ``deepspeed:`` pointing at a ZeRO json, as a user writes it."""
    zero_json = folder / f"ds_z{STAGE}_config.json"
    zero_json.write_text(json.dumps(deepspeed_config(STAGE)))
    config = yaml.safe_load((EXAMPLES / "sft_full_neftune.yaml").read_text())
    path = folder / "sft_full_neftune_zero.yaml"
    path.write_text(yaml.safe_dump({**config, "deepspeed": str(zero_json)}))
    return path


@pytest.fixture(scope="module")
def zero_run(tiny_model, tmp_path_factory):
    """``zero_run(resume_from=None)`` trains once per argument, saving every 2 steps; resuming copies the
    checkpoint into the new run's output dir first and resumes from the copy."""
    require_deepspeed()
    runs: dict[Path | None, ZeroRun] = {}

    def train(resume_from: Path | None = None) -> ZeroRun:
        if resume_from not in runs:
            folder = tmp_path_factory.mktemp(f"zero{STAGE}")
            output_dir, spy = folder / "out", folder / "spy"
            spy.mkdir()
            extra: dict[str, object] = {"max_steps": STEPS, "save_steps": RESUME_STEP}
            if resume_from is not None:
                copy = shutil.copytree(resume_from, output_dir / resume_from.name)
                extra["resume_from_checkpoint"] = copy
            command = [console_script("neft-llamafactory"), "train", str(zero_config(folder))]
            result = run(
                [*command, *tiny_overrides(tiny_model, output_dir, **extra)],
                cwd=ROOT,
                output_dir=output_dir,
                paths=(SITE,),
                PATH=VENV_PATH,
                FORCE_TORCHRUN="1",
                NPROC_PER_NODE="2",
                **{SPY_DIR: str(spy)},
            )
            assert result.returncode == 0, result.text[-6000:]
            runs[resume_from] = ZeroRun(result, passes(spy))
        return runs[resume_from]

    return train


def test_every_rank_noises_each_sequence_with_its_own_length(zero_run):
    trained = zero_run()
    # ZeRO-3 saves each rank's partition of the parameters.
    saved = trained.output_dir / f"checkpoint-{RESUME_STEP}" / f"global_step{RESUME_STEP}"
    model_states = {path.name for path in saved.glob("*model*")}
    partitioned = {f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" for rank in (0, 1)}
    assert model_states == partitioned

    assert sorted(trained.passes) == [0, 1]
    for rank_passes in trained.passes.values():
        assert [each.training for each in rank_passes] == [True] * STEPS
        for each in rank_passes:
            for norm, length in zip(each.sequence_norms().tolist(), each.sequence_lengths(), strict=True):
                # 5 standard deviations of a uniform-noise norm over this sequence's length x width entries
                assert_near_paper_norm(
                    [norm], ALPHA, rel=uniform_norm_tolerance(length * WIDTH), context=length
                )
            assert each.largest_padding_noise() == 0.0
    everyone = [each for rank_passes in trained.passes.values() for each in rank_passes]
    assert any((each.segments == 0).any() for each in everyone), "no padding in any batch: noise on it unseen"
    for first, second in zip(trained.passes[0], trained.passes[1], strict=True):
        assert first.first_noise != second.first_noise, "both ranks drew the same noise"
    # Rank 0's logs: printed to the console and in trainer_state.json (TensorBoard/W&B get the same).
    assert_noise_norms(trained.result.metrics, ALPHA, STEPS)
    assert_noise_norms(trained.result.history(), ALPHA, STEPS)


def test_resume_from_a_zero3_checkpoint_gets_the_noise_of_an_uninterrupted_run(zero_run):
    whole = zero_run()
    checkpoint = whole.output_dir / f"checkpoint-{RESUME_STEP}"
    assert {f"global_step{RESUME_STEP}", "latest", "neft_state_rank0.pt", "neft_state_rank1.pt"} <= {
        path.name for path in checkpoint.iterdir()
    }
    resumed = zero_run(resume_from=checkpoint)
    for rank in (0, 1):
        assert len(resumed.passes[rank]) == STEPS - RESUME_STEP
        for expected, got in zip(whole.passes[rank][RESUME_STEP:], resumed.passes[rank], strict=True):
            assert torch.equal(expected.noise_square, got.noise_square)
            assert expected.first_noise == got.first_noise
    losses = [
        [(entry["step"], entry["loss"]) for entry in trained.result.history() if entry["step"] > RESUME_STEP]
        for trained in (whole, resumed)
    ]
    assert len(losses[0]) == STEPS - RESUME_STEP
    assert losses[0] == losses[1]
