"""Real `neft-swift sft` and `swift sft --external_plugins` runs on a tiny local Llama, on CPU: the noise the first
decoder layer gets, measured per sequence by the independent spy, and the neft/* logs; and resume through
ms-swift's `--resume_from_checkpoint`: the seeded run interrupted after its step-2 checkpoint and resumed from it
gets, at steps 3 and 4, the noise and the neft/* logs of the uninterrupted run, bit for bit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from neft_plugins.engine.noise_stream import STATE_FILE
from neft_plugins.integrations.swift.callback import PLUGIN_FILE
from support.cli_run import CliRun
from support.distributed import free_port
from support.logs import ATTACHED, DETACHED_FROM_LLAMA, attached_to_llama
from support.matrix import on_newest
from support.noise import (
    assert_near_paper_norm,
    assert_the_builtin_on_padded_rows,
    uniform_norm_tolerance,
)

ALPHA = 5.0
LOG_TOLERANCE = 0.06  # the mean over one step's sequences (measured spread ~1%)
SEEDED_STEPS = 4
CHECKPOINT_STEP = 2


@pytest.fixture(scope="module")
def seeded_sft(swift_run, swift_args) -> CliRun:
    """The seeded LoRA `neft-swift sft` run, 4 steps with a checkpoint at step 2: its noise is checked per sequence,
    and it is resumed from its checkpoint."""
    argv = swift_args("lora", steps=SEEDED_STEPS, save_strategy="steps", save_steps=CHECKPOINT_STEP)
    return swift_run(["neft-swift", "sft", *argv, "--neftune_alpha", str(ALPHA), "--neftune_seed", "1"])


def check_noise(run: CliRun, hidden: int, alpha: float = ALPHA, steps: int = 2) -> None:
    assert run.returncode == 0, run.text[-4000:]
    assert attached_to_llama(alpha) in run.text and DETACHED_FROM_LLAMA in run.text
    passes = run.passes()[0]
    assert passes and all(each.training for each in passes)
    for each in passes:
        assert each.largest_padding_noise() == 0.0, "padding gets no noise"
        for length, norm in each.sequences():
            assert_near_paper_norm([norm], alpha, rel=uniform_norm_tolerance(length * hidden), context=length)
    logged = [entry for entry in run.metrics if "neft/noise_norm" in entry]
    assert len(logged) == steps, run.text[-4000:]
    assert all(entry["neft/alpha"] == alpha and entry["neft/tokens_noised"] > 0 for entry in logged)
    assert_near_paper_norm([entry["neft/noise_norm"] for entry in logged], alpha, rel=LOG_TOLERANCE)
    assert [entry["neft/noise_norm"] for entry in run.written_logs()] == [
        entry["neft/noise_norm"] for entry in logged
    ]


def test_neft_swift_lora(seeded_sft, hidden_size):
    check_noise(seeded_sft, hidden_size, steps=SEEDED_STEPS)


@on_newest("ms-swift")
def test_neft_swift_full_from_a_yaml_config(swift_run, swift_args, tmp_path, hidden_size):
    """A YAML config first, as `swift sft config.yaml` takes it, our key inside."""
    argv = swift_args("full")
    config = {argv[i][2:]: argv[i + 1] for i in range(0, len(argv), 2)}
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump({**config, "neftune_alpha": ALPHA}))
    check_noise(swift_run(["neft-swift", "sft", str(path)]), hidden_size)


@on_newest("ms-swift")
def test_swift_sft_itself_with_the_plugin(swift_run, swift_args, hidden_size):
    argv = [*swift_args("lora"), "--external_plugins", str(PLUGIN_FILE), "--callbacks", "neftune"]
    check_noise(swift_run(["swift", "sft", *argv], NEFTUNE_ALPHA=str(ALPHA)), hidden_size)


@on_newest("ms-swift")
@pytest.mark.parametrize("route", ["neft-swift", "plugin"])
def test_alpha_unset_noises_nothing(swift_run, swift_args, route):
    if route == "neft-swift":
        run = swift_run(["neft-swift", "sft", *swift_args("lora", steps=1)])
    else:
        run = swift_run(
            [
                "swift",
                "sft",
                *swift_args("lora", steps=1),
                "--external_plugins",
                str(PLUGIN_FILE),
                "--callbacks",
                "neftune",
            ]
        )
    assert run.returncode == 0, run.text[-4000:]
    assert ATTACHED not in run.text and not run.passes()


@on_newest("ms-swift")
def test_the_builtin_key_through_swift_sft_noises_padding_and_scales_by_the_padded_row(swift_run, swift_args):
    """What `swift sft --neftune_noise_alpha 5` (transformers' built-in) gives, measured the same way: the padded
    row's length as L (each sequence's norm is alpha/sqrt(3) * sqrt(L_s / L_row)) and padding noised. The ratios
    are printed (`pytest -s`) for docs/swift.md."""
    spy = Path(__file__).with_name("builtin_spy.py")
    argv = [*swift_args("lora"), "--neftune_noise_alpha", str(ALPHA), "--external_plugins", str(spy)]
    run = swift_run(["swift", "sft", *argv, "--callbacks", "builtin_spy"])
    assert run.returncode == 0, run.text[-4000:]
    assert ATTACHED not in run.text
    passes = run.passes()[0]
    assert passes
    assert_the_builtin_on_padded_rows(passes, ALPHA)


@on_newest("ms-swift")
def test_two_processes_through_ms_swifts_own_torchrun_launch(swift_run, swift_args, hidden_size):
    """`NPROC_PER_NODE=2 neft-swift sft`: ms-swift's torchrun launch on CPU, each rank with its own noise
    stream (seeded: a per-rank generator), each sequence alpha/sqrt(3), padding 0; the logs rank 0 writes hold
    the noise rank 0's first block received."""
    argv = [
        *swift_args("lora", per_device_train_batch_size=2),
        "--neftune_alpha",
        str(ALPHA),
        "--neftune_seed",
        "1",
    ]
    run = swift_run(["neft-swift", "sft", *argv], NPROC_PER_NODE="2", MASTER_PORT=free_port())
    assert run.returncode == 0, run.text[-4000:]
    assert "torch.distributed.run --nproc_per_node 2" in run.text
    by_rank = run.passes()
    assert sorted(by_rank) == [0, 1]
    for passes in by_rank.values():
        for each in passes:
            assert each.largest_padding_noise() == 0.0
            for length, norm in each.sequences():
                assert_near_paper_norm([norm], ALPHA, rel=uniform_norm_tolerance(length * hidden_size))
    assert by_rank[0][0].first_noise != by_rank[1][0].first_noise, "the ranks draw different noise"
    logged = run.written_logs()  # one pass per step and log (batch 2, no accumulation)
    applied = by_rank[0]
    assert [entry["neft/alpha"] for entry in logged] == [ALPHA] * len(applied) == [ALPHA] * 2
    assert [entry["neft/tokens_noised"] for entry in logged] == [
        float((each.segments > 0).sum()) for each in applied
    ]
    means = [float(each.sequence_norms().mean()) for each in applied]
    assert [entry["neft/noise_norm"] for entry in logged] == pytest.approx(means, rel=1e-5)


def neft_logs(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{key: value for key, value in entry.items() if key.startswith("neft/")} for entry in logs]


@on_newest("ms-swift")
def test_a_run_resumed_from_its_checkpoint_gets_the_noise_and_logs_of_an_uninterrupted_one(
    seeded_sft, swift_run, tmp_path
):
    whole = seeded_sft
    assert whole.returncode == 0, whole.text[-4000:]
    (checkpoint,) = whole.output_dir.glob(f"v*/checkpoint-{CHECKPOINT_STEP}")
    assert (checkpoint / STATE_FILE.format(rank=0)).is_file(), (
        "our noise state is saved with ms-swift's checkpoint"
    )
    # What a run stopped after its step-2 checkpoint leaves, resumed in a folder of its own (its own output_dir).
    copy = shutil.copytree(checkpoint, tmp_path / "interrupted" / checkpoint.name)
    resumed = swift_run(["neft-swift", *whole.command[1:], "--resume_from_checkpoint", str(copy)])
    assert resumed.returncode == 0, resumed.text[-4000:]
    assert "starts afresh" not in resumed.text, resumed.text[-4000:]
    expected, got = whole.passes()[0][CHECKPOINT_STEP:], resumed.passes()[0]
    assert len(got) == SEEDED_STEPS - CHECKPOINT_STEP
    for before, after in zip(expected, got, strict=True):
        assert torch.equal(before.noise_square, after.noise_square)
        assert before.first_noise == after.first_noise
    assert neft_logs(resumed.written_logs()) == neft_logs(whole.written_logs())[CHECKPOINT_STEP:]
