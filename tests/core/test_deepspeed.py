"""DeepSpeed ZeRO-2, ZeRO-3 and ZeRO-3 with CPU offload, for real: TRL's SFTTrainer with NEFTuneCallback on 2 CPU
processes (DeepSpeed's CPU accelerator, gloo). What each rank's first block received is measured by the
first-block spy (``support.spy``), independently of NEFTune's own records. ZeRO-3 on every tested transformers;
ZeRO-2, offload and the resume on the newest (``support.matrix``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from support.deepspeed import require_deepspeed
from support.distributed import torchrun
from support.matrix import on_newest
from support.noise import assert_near_paper_norm
from support.spy import SITE, SPY_DIR, Pass, passes
from support.versions import transformers_resumes_under_torch_2_13

HERE = Path(__file__).parent
ALPHA = 5.0
SHORTEST = 3 * 64  # the shortest sequence: 3 tokens of width 64


@pytest.fixture(scope="module")
def zero_run(tmp_path_factory):
    """``zero_run(stage, steps, resume_from=None)`` trains once per arguments; returns (folder, result, passes)."""
    require_deepspeed()
    runs: dict[tuple, tuple[Path, dict, dict[int, list[Pass]]]] = {}

    def run(stage: str, steps: int, resume_from: Path | None = None):
        key = (stage, steps, resume_from)
        if key not in runs:
            folder = tmp_path_factory.mktemp(f"zero{stage}")
            (folder / "spy").mkdir()
            args = [str(folder), stage, str(steps), *([str(resume_from)] if resume_from else [])]
            torchrun(HERE / "deepspeed_train.py", *args, paths=(SITE,), **{SPY_DIR: str(folder / "spy")})
            result = json.loads((folder / "result.json").read_text())
            runs[key] = folder, result, passes(folder / "spy")
        return runs[key]

    return run


@pytest.mark.parametrize(
    ("stage", "steps"),
    [
        pytest.param("2", 2, marks=on_newest("transformers")),
        ("3", 4),
        pytest.param("3-offload", 2, marks=on_newest("transformers")),
    ],
)
def test_every_rank_noises_each_sequence_with_its_own_length(zero_run, stage, steps, assert_noise_norms):
    _, result, by_rank = zero_run(stage, steps)
    assert result["engine"] == "DeepSpeedEngine"
    if stage.startswith("3"):  # the weight NEFTune's hook sees is gathered for the forward pass only
        assert result["embedding_local_numel"] == 0 and result["embedding_full_shape"][1] == 64
    assert sorted(by_rank) == [0, 1]
    for rank_passes in by_rank.values():
        assert [each.training for each in rank_passes] == [True] * steps
        for each in rank_passes:
            assert_noise_norms(each.sequence_norms(), ALPHA, SHORTEST)
            assert each.largest_padding_noise() == 0.0
    padded = [each for rank_passes in by_rank.values() for each in rank_passes if (each.segments == 0).any()]
    assert padded, "no padding in any batch: the test would not see it noised"
    for first, second in zip(by_rank[0], by_rank[1], strict=True):
        assert first.first_noise != second.first_noise, "both ranks drew the same noise"
    logged = [entry for entry in result["log_history"] if "loss" in entry]
    assert len(logged) == steps
    assert [entry["neft/alpha"] for entry in logged] == [ALPHA] * steps
    assert_near_paper_norm([entry["neft/noise_norm"] for entry in logged], ALPHA, rel=0.1)


@transformers_resumes_under_torch_2_13
@on_newest("transformers")
def test_resume_from_a_zero3_checkpoint_gets_the_noise_of_an_uninterrupted_run(zero_run):
    folder, uninterrupted, whole = zero_run("3", 4)
    checkpoint = folder / "out" / "checkpoint-2"
    assert {"global_step2", "latest", "neft_state_rank0.pt", "neft_state_rank1.pt"} <= {
        path.name for path in checkpoint.iterdir()
    }
    _, resumed, after = zero_run("3", 4, resume_from=checkpoint)
    for rank in (0, 1):
        assert len(after[rank]) == 2
        for expected, got in zip(whole[rank][2:], after[rank], strict=True):
            assert torch.equal(expected.noise_square, got.noise_square)
            assert expected.first_noise == got.first_noise
    losses = [
        [entry["loss"] for entry in run["log_history"] if "loss" in entry] for run in (uninterrupted, resumed)
    ]
    assert losses[0][2:] == losses[1][2:]
