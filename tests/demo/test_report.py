"""The demo report's training-loss table and plot on log histories written by hand: which losses it pairs."""

from __future__ import annotations

import itertools
import re

from neft_plugins.demo import report

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


def test_training_loss_plot_draws_the_noised_loss_beside_the_clean_loss(monkeypatch, tmp_path):
    figures = []

    def keep(fig, path):
        figures.append(fig)
        return path

    monkeypatch.setattr(report, "save_figure", keep)
    report.plot_training(LOG_HISTORY, tmp_path / "training_loss.png")
    (ax,) = figures[0].axes
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    report.pyplot().close(figures[0])
    assert list(lines) == ["A", "B", "B, neft/noised_loss (noise on)", "B, neft/clean_loss (noise off)"]
    assert lines["B, neft/noised_loss (noise on)"][-1] == 0.8012
    assert lines["B, neft/clean_loss (noise off)"][-1] == 0.7871
