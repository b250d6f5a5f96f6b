"""DeepSpeed ZeRO-3 under a real ``neft-llamafactory train``: the example config with ``deepspeed: <ZeRO json>``
added, on 2 CPU processes (torchrun, started as ``llamafactory-cli`` starts it with ``FORCE_TORCHRUN=1``;
DeepSpeed's CPU accelerator, gloo). What each rank's first block received is measured by the first-block spy
(``support.spy``), independently of NEFTune's own records and of LLaMA-Factory's logs. ZeRO-2 and ZeRO-3 with CPU
offload: the same measure on a shorter run. On the newest LLaMA-Factory only (``support.matrix``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from support.cli_run import CliRun
from support.deepspeed import deepspeed_config, require_deepspeed
from support.llamafactory_cli import EXAMPLES, assert_noise_norms, train
from support.matrix import on_newest
from support.noise import assert_near_paper_norm, uniform_norm_tolerance
from support.tiny import HIDDEN

ALPHA = 5.0  # the example config's neftune_alpha
WIDTH = HIDDEN  # the tiny model's hidden size
STAGE = "3"
STEPS = 4
RESUME_STEP = 2


pytestmark = on_newest("llamafactory")


def zero_config(folder: Path, stage: str) -> Path:
    """The example SFT config with ``deepspeed:`` pointing at a ZeRO json, as a user writes it."""
    zero_json = folder / f"ds_z{stage}_config.json"
    zero_json.write_text(json.dumps(deepspeed_config(stage)))
    config = yaml.safe_load((EXAMPLES / "sft_full_neftune.yaml").read_text())
    path = folder / "sft_full_neftune_zero.yaml"
    path.write_text(yaml.safe_dump({**config, "deepspeed": str(zero_json)}))
    return path


@pytest.fixture(scope="module")
def zero_run(tiny_model, runs):
    """``zero_run(resume_from=None, stage="3")``: the run, once per session (``runs``), saving every 2 steps;
    resuming copies the checkpoint into the new run's output dir first and resumes from the copy."""
    require_deepspeed()

    def llamafactory_zero(folder: Path, resume_from: Path | None, stage: str) -> CliRun:
        extra: dict[str, object] = {"max_steps": STEPS, "save_steps": RESUME_STEP}
        if resume_from is not None:
            extra["resume_from_checkpoint"] = shutil.copytree(resume_from, folder / "out" / resume_from.name)
        # torchrun started as llamafactory-cli starts it (by name: the one beside this Python)
        env = {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"}
        return train(zero_config(folder, stage), tiny_model, folder, spy=True, env=env, **extra)

    def zero_run_of(resume_from: Path | None = None, stage: str = STAGE) -> CliRun:
        return runs(llamafactory_zero, resume_from, stage)

    return zero_run_of


def assert_each_rank_noised_each_sequence(by_rank: dict) -> None:
    assert sorted(by_rank) == [0, 1]
    for rank_passes in by_rank.values():
        assert [each.training for each in rank_passes] == [True] * STEPS
        for each in rank_passes:
            for norm, length in zip(each.sequence_norms().tolist(), each.sequence_lengths(), strict=True):
                # 5 standard deviations of a uniform-noise norm over this sequence's length x width entries
                assert_near_paper_norm(
                    [norm], ALPHA, rel=uniform_norm_tolerance(length * WIDTH), context=length
                )
            assert each.largest_padding_noise() == 0.0
    everyone = [each for rank_passes in by_rank.values() for each in rank_passes]
    assert any((each.segments == 0).any() for each in everyone), "no padding in any batch: noise on it unseen"
    for first, second in zip(by_rank[0], by_rank[1], strict=True):
        assert first.first_noise != second.first_noise, "both ranks drew the same noise"


def test_every_rank_noises_each_sequence_with_its_own_length(zero_run):
    trained = zero_run()
    by_rank = trained.passes()
    # ZeRO-3 saves each rank's partition of the parameters.
    saved = trained.output_dir / f"checkpoint-{RESUME_STEP}" / f"global_step{RESUME_STEP}"
    model_states = {path.name for path in saved.glob("*model*")}
    partitioned = {f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" for rank in (0, 1)}
    assert model_states == partitioned

    assert_each_rank_noised_each_sequence(by_rank)
    # Rank 0's logs: printed to the console and in trainer_state.json (TensorBoard/W&B get the same).
    assert_noise_norms(trained.metrics, ALPHA, STEPS)
    assert_noise_norms(trained.written_logs(), ALPHA, STEPS)


def test_resume_from_a_zero3_checkpoint_gets_the_noise_of_an_uninterrupted_run(zero_run):
    whole = zero_run()
    checkpoint = whole.output_dir / f"checkpoint-{RESUME_STEP}"
    assert {f"global_step{RESUME_STEP}", "latest", "neft_state_rank0.pt", "neft_state_rank1.pt"} <= {
        path.name for path in checkpoint.iterdir()
    }
    resumed = zero_run(resume_from=checkpoint)
    expected_passes, got_passes = whole.passes(), resumed.passes()
    for rank in (0, 1):
        assert len(got_passes[rank]) == STEPS - RESUME_STEP
        for expected, got in zip(expected_passes[rank][RESUME_STEP:], got_passes[rank], strict=True):
            assert torch.equal(expected.noise_square, got.noise_square)
            assert expected.first_noise == got.first_noise
    losses = [
        [(entry["step"], entry["loss"]) for entry in trained.written_logs() if entry["step"] > RESUME_STEP]
        for trained in (whole, resumed)
    ]
    assert len(losses[0]) == STEPS - RESUME_STEP
    assert losses[0] == losses[1]


@pytest.mark.parametrize("stage", ["2", "3-offload"])
def test_zero2_and_zero3_offload_noise_each_sequence_on_every_rank(zero_run, stage):
    trained = zero_run(stage=stage)
    assert trained.returncode == 0, trained.describe()
    assert_each_rank_noised_each_sequence(trained.passes())
    assert_noise_norms(trained.metrics, ALPHA, STEPS)
