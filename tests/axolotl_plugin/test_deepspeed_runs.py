"""``axolotl train`` with ``deepspeed:`` (ZeRO-3) in the YAML on 2 CPU processes, started by Axolotl's default
launcher (accelerate), with the plugin: what each rank's first block received is measured by the first-block spy
(``support.spy``), independently of NEFTune's own records; the rank-0 logs are read from the run's output. ZeRO-2
and ZeRO-3 with CPU offload: the same measure on runs of their own. On the newest Axolotl only (``support.matrix``).

The example ``full.yml`` packed (``sample_packing``, rows padded to ``sequence_len``): Axolotl puts segment ids
1..K in ``attention_mask``, so each row holds several sequences and a padding tail. What the CPU needs beyond
``CPU_OVERRIDES`` (see ``cpu_yaml``): accelerate's ``--num_processes 2 --use_deepspeed`` (with no GPU to count,
accelerate launches one process), ``max_memory`` (Axolotl's ``device_map`` for several processes names a CUDA
device) and the test plugin ``cpu_deepspeed.DeepSpeedOnGloo`` (accelerate has no process-group backend for the CPU
under DeepSpeed).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from support.axolotl_cli import example_config, run_axolotl
from support.cli_run import CliRun
from support.deepspeed import deepspeed_config, require_deepspeed
from support.matrix import on_newest
from support.noise import assert_near_paper_norm, uniform_norm_tolerance
from support.tiny import Tiny

ALPHA = 5.0
WIDTH = 64  # the tiny Llama's hidden size (support.tiny.make_llama)
GLOO_PLUGIN = "axolotl_plugin.cpu_deepspeed.DeepSpeedOnGloo"
ACCELERATE_ARGS = ("--num_processes", "2", "--use_deepspeed")
STAGE = "3"
STEPS = 4  # a checkpoint at step 2: the resumed run trains steps 3 and 4 again
CHECKPOINT_STEP = 2

pytestmark = on_newest("axolotl")


def logged_losses(run: CliRun) -> dict[int, float]:
    """Step -> loss from the last checkpoint's trainer state: full precision, unlike the printed logs."""
    assert run.output_dir is not None
    last = max(run.output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    history = json.loads((last / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def cpu_yaml(tiny: Tiny, folder: Path, stage: str = STAGE, **overrides: Any) -> dict[str, Any]:
    """``full.yml``, packed, with ``deepspeed:`` pointing at a ZeRO JSON file as Axolotl users do."""
    deepspeed = folder / f"zero{stage}.json"
    deepspeed.write_text(json.dumps(deepspeed_config(stage)))
    config = example_config(
        "full",
        tiny,
        folder,
        sample_packing=True,
        pad_to_sequence_len=True,
        deepspeed=str(deepspeed),
        learning_rate=1e-3,  # the example's 2e-5 barely moves the weights in 4 steps: the resume check compares losses
        # With WORLD_SIZE > 1 Axolotl loads the model with device_map {"": LOCAL_RANK}, a CUDA device; from
        # max_memory it computes the map instead ({"": "cpu"}). ZeRO-3 loads without a device_map anyway.
        max_memory={"cpu": "8GiB"},
        **overrides,
    )
    config["plugins"] = [*config["plugins"], GLOO_PLUGIN]
    return config


@pytest.fixture(scope="module")
def zero_run(tiny, prepared, runs):
    """``zero_run(resume=False, stage="3")``: the run, once per session (``runs``). It saves a checkpoint every 2
    steps; ``resume=True`` trains again from a copy of its checkpoint-2, in a folder of its own."""
    require_deepspeed()

    def axolotl_zero(folder: Path, resume: bool, stage: str) -> CliRun:
        overrides: dict[str, Any] = {
            "max_steps": STEPS,
            "dataset_prepared_path": str(prepared),
            "save_strategy": "steps",
            "save_steps": CHECKPOINT_STEP,
        }
        if resume:
            saved = zero_run_of(False).output_dir / f"checkpoint-{CHECKPOINT_STEP}"
            copy = shutil.copytree(saved, folder / "output" / saved.name)
            overrides["resume_from_checkpoint"] = str(copy)
        run = run_axolotl(
            cpu_yaml(tiny, folder, stage, **overrides),
            folder,
            launcher_args=ACCELERATE_ARGS,
            spy=True,
            OMP_NUM_THREADS="1",  # 2 processes on 2 cores
        )
        assert run.returncode == 0, run.describe()
        return run

    def zero_run_of(resume: bool = False, stage: str = STAGE) -> CliRun:
        return runs(axolotl_zero, resume, stage)

    return zero_run_of


def assert_each_rank_noised_each_packed_sequence(by_rank: dict) -> None:
    assert sorted(by_rank) == [0, 1]
    for rank_passes in by_rank.values():
        assert [each.training for each in rank_passes] == [True] * STEPS
        for each in rank_passes:
            lengths = each.sequence_lengths()  # several sequences per packed row
            assert len(lengths) > each.segments.shape[0], "rows were not packed"
            # 5 sigmas of the shortest sequence's norm; L = the packed row (256) would miss each by 35% or more.
            rel = uniform_norm_tolerance(min(lengths) * WIDTH)
            assert_near_paper_norm(each.sequence_norms().tolist(), ALPHA, rel=rel)
            assert (each.segments == 0).any(), "no padding: the test would not see it noised"
            assert each.largest_padding_noise() == 0.0
    for first, second in zip(by_rank[0], by_rank[1], strict=True):
        assert not torch.equal(first.segments, second.segments), "both ranks trained on the same batch"
        assert first.first_noise != second.first_noise, "both ranks drew the same noise"


@pytest.mark.parametrize("stage", ["3", "2", "3-offload"])
def test_every_rank_noises_each_packed_sequence_with_its_own_length(zero_run, stage):
    assert_each_rank_noised_each_packed_sequence(zero_run(stage=stage).passes())


def test_rank0_logs_the_noise_rank0_applied(zero_run):
    """Only rank 0 prints the step logs, and they hold what rank 0's first block received (printed to 4 digits)."""
    run = zero_run()
    assert run.metric("neft/alpha") == [ALPHA] * STEPS, run.describe()
    applied = run.passes()[0]
    assert run.metric("neft/tokens_noised") == [float((each.segments > 0).sum()) for each in applied]
    means = [float(each.sequence_norms().mean()) for each in applied]
    assert run.metric("neft/noise_norm") == pytest.approx(means, rel=1e-3)


def test_resume_from_a_zero3_checkpoint_gets_the_noise_of_an_uninterrupted_run(zero_run):
    uninterrupted = zero_run()
    checkpoint = uninterrupted.output_dir / f"checkpoint-{CHECKPOINT_STEP}"
    assert {"global_step2", "latest", "neft_state_rank0.pt", "neft_state_rank1.pt"} <= {
        path.name for path in checkpoint.iterdir()
    }
    # ZeRO-3 keeps each rank's partition of the parameters
    assert {path.name for path in (checkpoint / "global_step2").glob("zero_pp_rank_*_model_states.pt")} == {
        "zero_pp_rank_0_mp_rank_00_model_states.pt",
        "zero_pp_rank_1_mp_rank_00_model_states.pt",
    }
    resumed = zero_run(resume=True)
    assert len(resumed.metrics) == 2, resumed.describe()
    expected_passes, got_passes = uninterrupted.passes(), resumed.passes()
    for rank in (0, 1):
        assert len(got_passes[rank]) == 2
        for expected, got in zip(expected_passes[rank][CHECKPOINT_STEP:], got_passes[rank], strict=True):
            assert torch.equal(expected.noise_square, got.noise_square)
            assert expected.first_noise == got.first_noise
    expected_losses = logged_losses(uninterrupted)
    assert {step: expected_losses[step] for step in (3, 4)} == {
        step: loss for step, loss in logged_losses(resumed).items() if step > CHECKPOINT_STEP
    }
