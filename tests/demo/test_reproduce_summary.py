"""benchmarks/reproduce.py's grid and summary: paired directions and pooled intervals, on arms built by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grid
import grid_summary
import pytest

from neft_plugins.demo import measures

REFERENCES = ["the cat sat on the mat", "a dog ran in the park", "birds sing at dawn", "rain falls on roofs"]


def _arm(kind: str, alpha: float, seed: int, loss_shift: float, answers: list[str]) -> dict:
    spec = dict(kind=kind, alpha=alpha, distribution="uniform", packing=False, seed=seed)
    losses = {split: [1.0 + i + loss_shift for i in range(4)] for split in ("train", "heldback", "heldout")}
    return {
        "id": f"{kind}-{seed}",
        "spec": spec,
        "losses": losses,
        "generations": {"train": answers, "heldout": answers},
        "metrics": {
            "loss/train": measures.nanmean(losses["train"]),
            "loss/heldback": measures.nanmean(losses["heldback"]),
            "loss/heldout": measures.nanmean(losses["heldout"]),
            "rougeL": measures.mean(measures.rouge_l_scores(answers, REFERENCES)),
            "bleu": measures.bleu(answers, REFERENCES),
            "len_chars": measures.mean(measures.char_lengths(answers)),
            "len_words": measures.mean(measures.word_lengths(answers)),
            "rep2": 0.0,
            "logdiv": 0.0,
            "neft/noise_norm": 1.0 if alpha else None,
        },
    }


def test_noise_arm_minus_same_seed_none_with_pooled_interval(tmp_path):
    rewritten = [ref + " and then some more words" for ref in REFERENCES]
    arms = [
        _arm("none", 0.0, 0, 0.0, REFERENCES),
        _arm("none", 0.0, 1, 0.5, REFERENCES),
        _arm("ours", 5.0, 0, 0.1, rewritten),  # +0.1 over seed 0's none
        _arm("ours", 5.0, 1, 0.8, rewritten),  # +0.3 over seed 1's none
    ]
    (tmp_path / "arms").mkdir()
    for arm in arms:
        (tmp_path / "arms" / f"{arm['id']}.json").write_text(json.dumps(arm))
    (tmp_path / "references.json").write_text(json.dumps(REFERENCES))
    speed = "# Speed\n\nwritten by hand\n"
    (tmp_path / "SPEED.md").write_text(speed)

    grid_summary.summarize(tmp_path)

    summary = json.loads((tmp_path / "summary.json").read_text())
    (row,) = summary["directions"]
    assert row["arm"] == "ours a5 uniform, padded" and row["seeds"] == 2
    train = row["measures"]["training loss (noise off)"]
    assert train["diffs"] == pytest.approx([0.1, 0.3])
    assert train["seeds_in_paper_direction"] == 2
    # pooled over (seed, example): four pairs differ by 0.1, four by 0.3
    assert train["pooled"]["n"] == 8
    assert train["pooled"]["diff"] == pytest.approx(0.2)
    assert 0.1 - 1e-9 <= train["pooled"]["low"] < 0.2 < train["pooled"]["high"] <= 0.3 + 1e-9
    held_out = row["measures"]["held-back alpaca loss"]
    assert held_out["seeds_in_paper_direction"] == 0  # up is not "down or equal"
    rouge = row["measures"]["ROUGE-L vs training answers"]
    assert rouge["seeds_in_paper_direction"] == 2 and rouge["pooled"]["high"] < 0
    words = row["measures"]["answer length (words)"]
    assert words["diffs"] == pytest.approx([5.0, 5.0]) and words["pooled"]["low"] == pytest.approx(5.0)
    assert row["measures"]["BLEU vs training answers"]["pooled"] is None  # corpus-level: no interval
    assert (tmp_path / "directions.png").stat().st_size > 0
    pooled = train["pooled"]
    assert (
        f"2/2 up; pooled [{pooled['low']:+.3g}, {pooled['high']:+.3g}]"
        in (tmp_path / "README.md").read_text()
    )
    # hand-written SPEED.md is linked from the generated README and left as it was
    assert "[SPEED.md](SPEED.md)" in (tmp_path / "README.md").read_text()
    assert (tmp_path / "SPEED.md").read_text() == speed


def test_workers_share_the_grid_through_claim_files(tmp_path):
    arm = tmp_path / "none-padded-s0.json"
    assert grid.claim(arm)
    assert not grid.claim(arm)  # held by a live process (this one)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    arm.with_suffix(".claim").write_text(dead.stdout.strip())
    assert grid.claim(arm)  # a dead worker's claim is taken over
    assert arm.with_suffix(".claim").read_text() == str(os.getpid())


def test_full_grid_is_every_arm_the_issue_asks_for_once():
    arms = grid.full_grid([0, 1, 2])
    ids = {(a.kind, a.alpha, a.distribution, a.packing, a.seed) for a in arms}
    assert len(ids) == len(arms) == 3 * 2 * (1 + 3 + 3 + 3)
    assert {a.alpha for a in arms if a.kind == "builtin"} == {5.0, 10.0, 15.0}
    assert all(a.distribution == "gaussian" for a in arms[-18:])  # cut first when a run stops early
