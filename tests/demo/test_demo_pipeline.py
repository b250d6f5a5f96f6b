"""`neft demo` and `neft report` end to end on a tiny random Llama: no hub, no network, a few steps."""

from __future__ import annotations

import json
import math

import pytest

from neft_plugins.demo.cli import demo_main
from neft_plugins.demo.report_cli import report_main
from support.noise import assert_near_paper_norm


@pytest.fixture(scope="module")
def demo_run(tiny_model_dir, tiny_data, tmp_path_factory, capsys_module=None):
    train, heldout = tiny_data
    out = tmp_path_factory.mktemp("demo-report")
    argv = [
        "--model",
        str(tiny_model_dir),
        "--data",
        str(train),
        "--heldout",
        str(heldout),
        "--steps",
        "3",
        "--alpha",
        "5",
        "--train-size",
        "8",
        "--heldback-size",
        "4",
        "--heldout-size",
        "4",
        "--gen-train",
        "4",
        "--gen-heldout",
        "4",
        "--max-new-tokens",
        "8",
        "--max-length",
        "64",
        "--bootstrap",
        "50",
        "--full",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert demo_main(argv) == 0
    return out


def test_demo_writes_the_report(demo_run):
    names = {p.name for p in demo_run.iterdir()}
    assert {"report.json", "report.md", "generations_A.json", "generations_B.json"} <= names
    assert {"noise_per_sequence.png", "differences.png", "training_loss.png", "answer_lengths.png"} <= names
    report = json.loads((demo_run / "report.json").read_text())
    measured = [d["name"] for d in report["differences"]]
    for name in (
        "training loss (noise off)",
        "held-back alpaca loss",
        "AlpacaEval loss",
        "ROUGE-L vs training answers",
        "BLEU vs training answers",
        "answer length (chars)",
        "answer length (words)",
    ):
        assert name in measured
    for d in report["differences"]:
        assert {"diff", "low", "high", "verdict"} <= set(d)
    assert report["quantum"]["prompt"] == "Can you explain the basics of quantum computing?"
    md = (demo_run / "report.md").read_text()
    assert "95%" in md and "cannot separate an effect" in md


def test_demo_trains_with_our_callback_and_logs_noise(demo_run):
    report = json.loads((demo_run / "report.json").read_text())
    logs_b = report["log_history"]["B"]
    noise = [h["neft/noise_norm"] for h in logs_b if "neft/noise_norm" in h]
    assert noise, "arm B must train with NEFTuneCallback, whose logs carry neft/noise_norm"
    assert_near_paper_norm(noise[:1], 5, rel=0.05)
    assert not any("neft/noise_norm" in h for h in report["log_history"]["A"])
    assert report["arms"]["A"]["arm"]["alpha"] == 0.0
    assert report["arms"]["B"]["arm"]["alpha"] == 5.0


def test_demo_logs_clean_loss_beside_the_noised_loss_in_the_neftune_arm_only(demo_run):
    report = json.loads((demo_run / "report.json").read_text())
    logs_b = report["log_history"]["B"]
    logged = [h for h in logs_b if "loss" in h]
    clean = [h["neft/clean_loss"] for h in logged if "neft/clean_loss" in h]
    assert logged and len(clean) == len(logged), "every logging step of arm B carries neft/clean_loss"
    assert all(math.isfinite(value) and value > 0 for value in clean)
    assert report["arms"]["B"]["neft/clean_loss"] == pytest.approx(sum(clean) / len(clean))
    assert not any("neft/clean_loss" in h for h in report["log_history"]["A"])
    # step 1: same seed, data and starting weights, so B's batch without noise is A's batch
    first_a = next(h["loss"] for h in report["log_history"]["A"] if "loss" in h)
    assert clean[0] == pytest.approx(first_a, rel=1e-3)
    md = (demo_run / "report.md").read_text()
    assert (
        "| step | A loss (mean since the last log) | B loss (mean since the last log) "
        "| B neft/noised_loss (noise on) | B neft/clean_loss (noise off) |"
    ) in md


def test_demo_noise_probe_ours_vs_builtin(demo_run):
    report = json.loads((demo_run / "report.json").read_text())
    rows = {(r["layout"], r["implementation"]): r for r in report["noise_summary"]}
    for (layout, impl), row in rows.items():
        if impl == "ours":
            # per-sequence L: every sequence gets the paper's norm, padding gets none
            assert row["mean_ratio"] == pytest.approx(1.0, abs=0.05), layout
            assert row["padding_noise_norm"] == 0.0
    packed_builtin = next(
        r for (lay, impl), r in rows.items() if lay.startswith("packed") and impl == "built-in"
    )
    assert packed_builtin["mean_ratio"] < 0.6  # 8 sequences in one row: ~1/sqrt(8) of the norm each
    fixed_builtin = next(
        r for (lay, impl), r in rows.items() if lay == "padded to 256" and impl == "built-in"
    )
    assert fixed_builtin["padding_noise_norm"] > 0


def test_report_cli_on_demo_generations(demo_run, tmp_path, capsys):
    out = tmp_path / "rep"
    code = report_main(
        [
            str(demo_run / "generations_A.json"),
            str(demo_run / "generations_B.json"),
            "--bootstrap",
            "30",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "ROUGE-L vs training answers" in printed and "B - A [95% CI]" in printed
    assert (
        (out / "report.json").exists() and (out / "report.md").exists() and (out / "differences.png").exists()
    )


def test_report_cli_alpacaeval_style_lists(tmp_path, capsys):
    refs = [{"instruction": "q1", "input": "", "output": "the cat sat on the mat"}]
    a = [{"instruction": "q1", "output": "the cat sat"}, {"instruction": "h1", "output": "short"}]
    b = [
        {"instruction": "h1", "output": "a longer answer here"},
        {"instruction": "q1", "output": "the cat sat on it"},
    ]
    for name, data in (("refs.json", refs), ("a.json", a), ("b.json", b)):
        (tmp_path / name).write_text(json.dumps(data))
    code = report_main(
        [
            str(tmp_path / "a.json"),
            str(tmp_path / "b.json"),
            "--references",
            str(tmp_path / "refs.json"),
            "--bootstrap",
            "20",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "1 answers to training prompts, 1 held-out answers" in printed
    # held-out answer lengths paired by instruction: 1 word -> 4 words
    assert "answer length (words)" in printed


def test_report_cli_rejects_unpairable(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps(["x", "y"]))
    (tmp_path / "b.json").write_text(json.dumps(["x"]))
    assert report_main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "pair by position" in capsys.readouterr().err


def test_demo_rejects_bad_alpha_before_loading_anything(capsys):
    assert demo_main(["--alpha", "-1", "--model", "/nonexistent"]) == 2
    assert "neftune_alpha" in capsys.readouterr().err
