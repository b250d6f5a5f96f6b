"""The demo report's training-loss table and plot on log histories written by hand (which losses it pairs,
which it keeps apart), and how every plot of the demo is laid out."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import pytest

from neft_plugins.demo import report
from neft_plugins.demo.measures import Difference

# Logged at steps 2, 4, ..., 16. B's `loss` is the mean of the two steps since the last log; its
# neft/noised_loss and neft/clean_loss are the last step's micro-batches only, with the noise on and off:
# at step 16, 1.1905 beside 0.8012 and 0.7871.
LOG_HISTORY = {
    "A": [
        *({"loss": 1.5 - 0.02 * step, "grad_norm": 1.0, "step": step} for step in range(2, 17, 2)),
        {"train_loss": 1.3, "step": 16},
    ],
    "B": [
        *(
            {
                "loss": 1.5 - 0.02 * step + 0.01,
                "neft/noise_norm": 2.887,
                "neft/noised_loss": 1.2 - 0.025 * step,
                "neft/clean_loss": 1.2 - 0.025 * step - 0.0141,
                "step": step,
            }
            for step in range(2, 16, 2)
        ),
        {"loss": 1.1905, "neft/noised_loss": 0.8012, "neft/clean_loss": 0.7871, "step": 16},
        {"train_loss": 1.35, "step": 16},
    ],
}


def _demo_markdown(log_history: dict[str, list[dict]]) -> str:
    settings = dict(
        seed=0,
        steps=16,
        batch_size=4,
        full=False,
        max_length=128,
        model="m",
        data="d",
        heldout=None,
        prefix_tokens=64,
    )
    payload = {
        "settings": settings,
        "licences": [],
        "timings_seconds": {},
        "identical_train_answers": 0,
        "log_history": log_history,
        "noise_probe": {"alpha": 5.0, "d": 576, "target": 2.887, "median_token_embedding_norm": 3.154},
        "noise_summary": [],
        "quantum": {"prompt": "q", "A": "a", "B": "b"},
    }
    return report.demo_markdown(payload, [], "A: no noise", "B: NEFTune alpha 5", [])


def _table(md: str) -> dict[str, dict[str, str]]:
    """The training-loss table as {step: {column header: cell}}."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| step |"))
    table = itertools.takewhile(lambda line: line.startswith("|"), lines[start:])
    header, _, *rows = ([cell.strip() for cell in line.strip("|").split("|")] for line in table)
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def test_training_loss_table_sets_the_noised_loss_beside_the_clean_loss_of_the_same_batches():
    md = _demo_markdown(LOG_HISTORY)
    row = _table(md)["16"]
    assert row["B neft/noised_loss (noise on)"] == "0.8012"
    assert row["B neft/clean_loss (noise off)"] == "0.7871"
    # the Trainer's loss is still shown, named as the window mean it is, and not called noise on or off
    assert row["B loss (mean since the last log)"] == "1.1905"
    assert row["A loss (mean since the last log)"] == report.fmt(1.5 - 0.02 * 16)
    assert "since the previous log" in md
    # "the same batches" is said only of the pair that is the same batches
    sentences = [s for s in re.split(r"(?<=[.:])\s", md) if "same batches" in s]
    assert sentences and all("`neft/noised_loss`" in s and "`neft/clean_loss`" in s for s in sentences)
    assert "Its `neft/clean_loss` is the loss of the same batches" not in md


def test_training_loss_table_gives_an_arm_only_the_losses_it_logs():
    table = _table(_demo_markdown(LOG_HISTORY))
    assert list(table["2"]) == [
        "step",
        "A loss (mean since the last log)",
        "B loss (mean since the last log)",
        "B neft/noised_loss (noise on)",
        "B neft/clean_loss (noise off)",
    ]
    assert list(table) == [str(step) for step in range(2, 17, 2)]


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


def test_training_loss_plot_keeps_the_window_mean_and_the_logged_step_on_separate_panels():
    fig = report.training_figure(LOG_HISTORY)
    try:
        window_ax, step_ax = fig.axes
        lines = {
            (i, line.get_label()): list(line.get_ydata())
            for i, ax in enumerate(fig.axes)
            for line in ax.get_lines()
        }
        titles = [ax.get_title() for ax in fig.axes]
        # no panel mixes `loss` (a window mean) with neft/noised_loss or neft/clean_loss (one step)
        for ax in fig.axes:
            step_lines = [label for label in _labels(ax) if "neft/" in label]
            assert not step_lines or len(step_lines) == len(ax.get_lines()), _labels(ax)
    finally:
        report.pyplot().close(fig)
    assert _labels(window_ax) == ["A", "B"]
    assert _labels(step_ax) == ["B, neft/noised_loss (noise on)", "B, neft/clean_loss (noise off)"]
    assert lines[(0, "B")][-1] == 1.1905
    assert lines[(1, "B, neft/noised_loss (noise on)")][-1] == 0.8012
    assert lines[(1, "B, neft/clean_loss (noise off)")][-1] == 0.7871
    # each title says what its panel is
    assert "mean" in titles[0] and "since the previous log" in titles[0]
    assert (
        "noise on and off" in titles[1] and "neft/noised_loss" in titles[1] and "neft/clean_loss" in titles[1]
    )


def test_training_loss_plot_without_noised_and_clean_losses_has_one_panel():
    fig = report.training_figure({"A": LOG_HISTORY["A"]})
    try:
        assert [_labels(ax) for ax in fig.axes] == [["A"]]
    finally:
        report.pyplot().close(fig)


REFERENCE_RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "demo-run"


def _figures():
    """Every figure the demo draws, on the committed reference run's data and on LOG_HISTORY."""
    payload = json.loads((REFERENCE_RUN / "report.json").read_text(encoding="utf-8"))
    diffs = [
        Difference(**{k: v for k, v in d.items() if k in Difference.__dataclass_fields__})
        for d in payload["differences"]
    ]
    return {
        "noise": lambda: report.noise_figure(payload["noise_probe"]),
        "differences": lambda: report.differences_figure(diffs, "B: a long arm name minus A: another"),
        "training, paired": lambda: report.training_figure(LOG_HISTORY),
        "training, reference": lambda: report.training_figure(payload["log_history"]),
        "lengths": lambda: report.lengths_figure(
            ["one two three"] * 5 + ["a " * 40] * 4, ["a " * 40] * 9, ("A: no noise", "B: NEFTune")
        ),
    }


@pytest.mark.parametrize("name", list(_figures()))
def test_plots_have_their_legends_off_the_data_and_nothing_outside_the_figure(name):
    fig = _figures()[name]()
    try:
        renderer = fig.canvas.get_renderer()
        fig.draw_without_rendering()
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                assert not box.overlaps(ax.get_window_extent(renderer)), (name, legend, ax.get_title())
        # the layout keeps every label, title and legend inside the figure: nothing is clipped
        tight = fig.get_tightbbox(renderer)
        page = fig.bbox_inches
        assert tight.x0 >= page.x0 and tight.y0 >= page.y0, (name, tight, page)
        assert tight.x1 <= page.x1 and tight.y1 <= page.y1, (name, tight, page)
    finally:
        report.pyplot().close(fig)


def test_redraw_demo_plots_draws_a_finished_report_again_from_its_json(tmp_path):
    for name in ("report.json", "generations_A.json", "generations_B.json"):
        shutil.copy(REFERENCE_RUN / name, tmp_path / name)
    paths = report.redraw_demo_plots(tmp_path)
    assert [p.name for p in paths] == [
        "noise_per_sequence.png",
        "differences.png",
        "training_loss.png",
        "answer_lengths.png",
    ]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
