"""Resume through ms-swift's `--resume_from_checkpoint`: a seeded `neft-swift sft` run interrupted after its step-2
checkpoint and resumed from it gets, at steps 3 and 4, the noise (measured by the first-block spy) and the neft/*
logs of the uninterrupted run, bit for bit."""

from __future__ import annotations

import shutil

import torch

from neft_plugins.engine.noise_stream import STATE_FILE
from support.matrix import on_newest

STEPS = 4
CHECKPOINT_STEP = 2


def neft_logs(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{key: value for key, value in entry.items() if key.startswith("neft/")} for entry in logs]


@on_newest("ms-swift")
def test_a_run_resumed_from_its_checkpoint_gets_the_noise_and_logs_of_an_uninterrupted_one(
    run_cli, swift_args, tmp_path
):
    argv = [
        *swift_args("lora", steps=STEPS, save_strategy="steps", save_steps=CHECKPOINT_STEP),
        *("--neftune_alpha", "5", "--neftune_seed", "1"),
    ]
    whole = run_cli(["neft-swift", "sft", *argv], folder="whole")
    assert whole.returncode == 0, whole.text[-4000:]
    (checkpoint,) = whole.output_dir.glob(f"v*/checkpoint-{CHECKPOINT_STEP}")
    assert (checkpoint / STATE_FILE.format(rank=0)).is_file(), (
        "our noise state is saved with ms-swift's checkpoint"
    )
    # What a run stopped after its step-2 checkpoint leaves, resumed in a folder of its own (its own output_dir).
    copy = shutil.copytree(checkpoint, tmp_path / "interrupted" / checkpoint.name)
    resumed = run_cli(["neft-swift", "sft", *argv, "--resume_from_checkpoint", str(copy)], folder="resumed")
    assert resumed.returncode == 0, resumed.text[-4000:]
    assert "starts afresh" not in resumed.text, resumed.text[-4000:]
    expected, got = whole.passes()[0][CHECKPOINT_STEP:], resumed.passes()[0]
    assert len(got) == STEPS - CHECKPOINT_STEP
    for before, after in zip(expected, got, strict=True):
        assert torch.equal(before.noise_square, after.noise_square)
        assert before.first_noise == after.first_noise
    assert neft_logs(resumed.written_logs()) == neft_logs(whole.written_logs())[CHECKPOINT_STEP:]
