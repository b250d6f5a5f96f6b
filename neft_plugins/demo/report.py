"""Tables, markdown, JSON and PNG plots for ``neft demo``, ``neft report`` and ``benchmarks/reproduce.py``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neft_plugins.demo.measures import DEFINITIONS, Difference
from neft_plugins.demo.pipeline import Splits

HONESTY = (
    "How to read this: each row is arm B minus arm A with a 95% paired-bootstrap interval over the "
    "examples. An interval that includes 0 means this run cannot tell the arms apart. The interval covers "
    "the choice of examples only, not the training seed: one run per arm cannot separate an effect of "
    "NEFTune from seed-to-seed variation, so no row here is evidence of an effect on its own. "
    "benchmarks/results/ repeats the comparison over seeds. At 135M parameters and a few dozen steps the "
    "paper's quality effects are expected to be small. The noise table is exact: it is measured, not estimated."
)
# `neft report` compares generations only: no seeds over which to repeat, no noise table.
REPORT_HONESTY = HONESTY.split(" benchmarks/")[0]


def fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.{digits}f}"


def difference_rows(diffs: Sequence[Difference]) -> list[list[str]]:
    return [
        [
            d.name,
            fmt(d.a),
            fmt(d.b),
            f"{'+' if d.diff >= 0 else ''}{fmt(d.diff)} [{fmt(d.low)}, {fmt(d.high)}]",
            fmt(d.p_b_greater, 2),
            d.verdict(),
        ]
        for d in diffs
    ]


DIFF_HEADER = ["measure", "A", "B", "B - A [95% CI]", "P(B>A)", "reading"]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=False))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
    return "\n".join(out)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


NOISE_HEADER = ["layout", "implementation", "noise / (alpha/sqrt3): mean", "min", "max", "noise on padding"]


def noise_rows(summary: Sequence[dict]) -> list[list[str]]:
    return [
        [
            r["layout"],
            r["implementation"],
            f"{r['mean_ratio']:.3f}",
            f"{r['min_ratio']:.3f}",
            f"{r['max_ratio']:.3f}",
            f"{r['padding_noise_norm']:.3f}",
        ]
        for r in summary
    ]


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8")


def _json_default(value: Any) -> Any:
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write `fig` with nothing clipped: its own layout engine (the demo's figures are constrained) or
    tight_layout, and a bounding box grown to every artist, legends outside the axes included."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    pyplot().close(fig)
    return path


def _legend_beside(ax: Any, **kwargs: Any) -> Any:
    """The axes' legend to the right of it, off the data (none if nothing is labelled)."""
    if not ax.get_legend_handles_labels()[0]:
        return None
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def _legend_below(ax: Any, **kwargs: Any) -> Any:
    """The axes' legend under its x label, off the data (none if nothing is labelled)."""
    if not ax.get_legend_handles_labels()[0]:
        return None
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), borderaxespad=0.0, **kwargs)


def differences_figure(diffs: Sequence[Difference], title: str) -> Any:
    """Each difference relative to A's value, with its interval, so unlike units share one axis."""
    usable = [d for d in diffs if not any(math.isnan(x) for x in (d.a, d.low, d.high)) and d.a != 0]
    fig, ax = pyplot().subplots(figsize=(8, 0.5 * len(usable) + 1.5), layout="constrained")
    for i, d in enumerate(usable):
        scale = 100.0 / abs(d.a)
        ax.errorbar(
            d.diff * scale,
            i,
            xerr=[[(d.diff - d.low) * scale], [(d.high - d.diff) * scale]],
            fmt="o",
            color="tab:red" if d.excludes_zero else "tab:gray",
            capsize=3,
        )
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(usable)), [d.name for d in usable])
    ax.set_xlabel("B - A, % of A (95% paired-bootstrap interval; red: excludes 0)")
    ax.set_title(title, fontsize=10)
    return fig


def plot_differences(diffs: Sequence[Difference], path: Path, title: str) -> Path:
    return save_figure(differences_figure(diffs, title), path)


def noise_figure(probe: dict) -> Any:
    """One panel per batch layout: each sequence's noise norm over the paper's, ours and the built-in; the
    legend under the panels."""
    layouts = probe["layouts"]
    fig, axes = pyplot().subplots(
        1, len(layouts), figsize=(4.2 * len(layouts), 3.8), sharey=True, squeeze=False, layout="constrained"
    )
    axes = axes[0]
    for ax, row in zip(axes, layouts, strict=False):
        lengths = row["lengths"]
        for impl, marker, color in (("ours", "o", "tab:blue"), ("built-in", "x", "tab:orange")):
            ratios = [v / probe["target"] for v in row[impl]["per_sequence"]]
            ax.scatter(lengths, ratios, marker=marker, color=color, label=impl)
        ax.axhline(1.0, color="black", lw=0.8, ls="--", label="1.0 = the paper's alpha / sqrt 3")
        ax.set_title(f"{row['layout']} (row length {row['row_length']})", fontsize=9)
        ax.set_xlabel("sequence length (tokens)")
    axes[0].set_ylabel("noise norm / (alpha / sqrt 3)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize="small")
    fig.suptitle(f"Noise each sequence received, alpha={probe['alpha']:g}", fontsize=11)
    return fig


def plot_noise(probe: dict, path: Path) -> Path:
    return save_figure(noise_figure(probe), path)


# What a training log carries, and how the report names it: the Trainer's logged loss, a mean over every
# optimizer step since the previous log (noise on in a NEFTune arm), and, where the callback measures them,
# the loss of the last of those steps' micro-batches with the noise on and, on the same micro-batches, off.
TRAINING_LOSSES = {
    "loss": "loss (mean since the last log)",
    "neft/noised_loss": "neft/noised_loss (noise on)",
    "neft/clean_loss": "neft/clean_loss (noise off)",
}
# Measured on the last step's micro-batches only: drawn on their own panel, never beside the window mean.
STEP_LOSSES = {"neft/noised_loss": "-", "neft/clean_loss": "--"}


def training_loss_series(history: list[dict], key: str) -> list[tuple[int, float]]:
    return [(h["step"], h[key]) for h in history if key in h and "step" in h]


def training_loss_table(logs: dict[str, list[dict]]) -> str:
    """Markdown: each logging step's losses per arm; an arm has a column for each key it logs."""
    columns = [
        (name, key)
        for name, history in logs.items()
        for key in TRAINING_LOSSES
        if any(key in h for h in history)
    ]
    series = {(name, key): dict(training_loss_series(logs[name], key)) for name, key in columns}
    steps = sorted({step for values in series.values() for step in values})
    header = ["step", *(f"{name} {TRAINING_LOSSES[key]}" for name, key in columns)]
    rows = [[str(step), *(fmt(series[column].get(step)) for column in columns)] for step in steps]
    return markdown_table(header, rows)


def training_figure(logs: dict[str, list[dict]]) -> Any:
    """Each arm's logged training loss (`loss`, a mean over the steps since the previous log) on the left
    panel; where an arm logs ``neft/noised_loss`` and ``neft/clean_loss`` (one step's micro-batches, noise on
    and off) they get a right panel of their own, as the two must not be compared. An arm keeps its colour
    in both panels; each legend sits under its panel."""
    paired = any(key in h for history in logs.values() for h in history for key in STEP_LOSSES)
    fig, axes = pyplot().subplots(
        1, 2 if paired else 1, figsize=(11, 4.4) if paired else (6, 4.2), squeeze=False, layout="constrained"
    )
    window_ax = axes[0][0]
    for i, (name, history) in enumerate(logs.items()):
        points = training_loss_series(history, "loss")
        if points:
            window_ax.plot(*zip(*points, strict=False), color=f"C{i}", marker=".", label=name)
    window_ax.set_title(
        "Training loss as logged (loss): the mean over every step\nsince the previous log (noise on in a "
        "NEFTune arm)",
        fontsize=9,
    )
    for ax in axes[0]:
        ax.xaxis.get_major_locator().set_params(integer=True)  # optimizer steps
    window_ax.set_xlabel("step")
    window_ax.set_ylabel("loss, mean since the last log")
    _legend_below(window_ax, fontsize="small")
    if paired:
        step_ax = axes[0][1]
        for i, (name, history) in enumerate(logs.items()):
            for key, style in STEP_LOSSES.items():
                points = training_loss_series(history, key)
                if points:
                    label = f"{name}, {TRAINING_LOSSES[key]}"
                    step_ax.plot(
                        *zip(*points, strict=False), color=f"C{i}", ls=style, marker=".", label=label
                    )
        step_ax.set_title(
            "Last step before each log: the same micro-batches with the\nnoise on and off "
            "(neft/noised_loss vs neft/clean_loss)",
            fontsize=9,
        )
        step_ax.set_xlabel("step")
        step_ax.set_ylabel("loss of that step's micro-batches")
        _legend_below(step_ax, fontsize="small")
        fig.suptitle(
            "Compare lines within a panel: the panels cover different batches (a window vs one step)",
            fontsize=10,
        )
    return fig


def plot_training(logs: dict[str, list[dict]], path: Path) -> Path:
    return save_figure(training_figure(logs), path)


def lengths_figure(a: Sequence[str], b: Sequence[str], names: tuple[str, str]) -> Any:
    fig, ax = pyplot().subplots(figsize=(6.5, 3.6), layout="constrained")
    la = [len(t.split()) for t in a]
    lb = [len(t.split()) for t in b]
    top = max([*la, *lb, 1])
    bins = list(range(0, top + 10, max(1, top // 15)))
    ax.hist([la, lb], bins=bins, label=list(names))
    ax.set_xlabel("answer length (whitespace tokens), held-out instructions")
    ax.set_ylabel("answers")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Length of each answer to a held-out instruction", fontsize=10)
    _legend_beside(ax, fontsize="small")
    return fig


def plot_lengths(a: Sequence[str], b: Sequence[str], names: tuple[str, str], path: Path) -> Path:
    return save_figure(lengths_figure(a, b, names), path)


def demo_plots(
    out: Path,
    probe: dict,
    diffs: Sequence[Difference],
    names: tuple[str, str],
    logs: tuple[list[dict], list[dict]],
    heldout: tuple[Sequence[str], Sequence[str]],
) -> list[Path]:
    """The PNGs of ``neft demo``, in report order: `names`, `logs` (log histories) and `heldout` (held-out
    answers) are arm A's and arm B's."""
    name_a, name_b = names
    return [
        plot_noise(probe, out / "noise_per_sequence.png"),
        plot_differences(diffs, out / "differences.png", f"{name_b} minus {name_a}"),
        plot_training({name_a: logs[0], name_b: logs[1]}, out / "training_loss.png"),
        plot_lengths(heldout[0], heldout[1], ("A", "B"), out / "answer_lengths.png"),
    ]


def redraw_demo_plots(directory: Path) -> list[Path]:
    """Draw a finished ``neft demo`` report's PNGs again from its report.json and generations_*.json, in
    place, without training: ``python -c "from pathlib import Path; from neft_plugins.demo.report import
    redraw_demo_plots as r; r(Path('benchmarks/results/demo-run'))"``."""
    directory = Path(directory)
    payload = json.loads((directory / "report.json").read_text(encoding="utf-8"))
    fields = Difference.__dataclass_fields__
    diffs = [Difference(**{k: v for k, v in d.items() if k in fields}) for d in payload["differences"]]
    generations = [
        json.loads((directory / f"generations_{arm}.json").read_text(encoding="utf-8")) for arm in "AB"
    ]
    return demo_plots(
        directory,
        payload["noise_probe"],
        diffs,
        (payload["arms"]["A"]["arm"]["name"], payload["arms"]["B"]["arm"]["name"]),
        (payload["log_history"]["A"], payload["log_history"]["B"]),
        tuple([x["output"] for x in g["heldout"]] for g in generations),
    )


def definitions_markdown(prefix: int) -> str:
    return "\n".join(f"- **{k}**: {v.replace('PREFIX', str(prefix))}" for k, v in DEFINITIONS.items())


def write_generations(path: Path, splits: Splits, generations: dict[str, list[str]]) -> None:
    payload = {
        "train": [
            {"instruction": ex.instruction, "output": out, "reference": ex.answer}
            for ex, out in zip(splits.train, generations["train"], strict=False)
        ],
        "heldout": [
            {"instruction": ex.instruction, "output": out}
            for ex, out in zip(splits.heldout, generations["heldout"], strict=False)
        ],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def demo_markdown(
    payload: dict[str, Any], diffs: Sequence[Difference], name_a: str, name_b: str, plots: Sequence[Path]
) -> str:
    """report.md of ``neft demo``; `payload` is its report.json."""
    s = payload["settings"]
    lines = [
        "# neft demo report",
        "",
        f"- A = **{name_a}**, B = **{name_b}**; same seed ({s['seed']}), data and steps ({s['steps']} x batch "
        f"{s['batch_size']}, {'full fine-tuning' if s['full'] else 'LoRA r=16'}, max length {s['max_length']}).",
        f"- Model: `{s['model']}`; data: `{s['data']}`; held-out: `{s['heldout']}`.",
        f"- Wall time: {payload['timings_seconds']}",
        "",
        "## Licences",
        "",
        *[f"- {line}" for line in payload["licences"]],
        "",
        "## What changed (B - A)",
        "",
        markdown_table(DIFF_HEADER, difference_rows(diffs)),
        "",
        f"{payload['identical_train_answers']} greedy answers to training prompts are identical in A and B.",
        "",
        HONESTY,
        "",
        "## Training loss, noise on and off",
        "",
        training_loss_table(payload["log_history"]),
        "",
        "`loss` is the Trainer's logged loss: the mean over every optimizer step since the previous log, taken "
        "with the noise on in B. B's `neft/noised_loss` and `neft/clean_loss` are the loss of the same batches, "
        "the micro-batches of the last optimizer step before each log, with the noise on and off (one extra "
        "`no_grad` forward per micro-batch of that step): the paper's Section 5 comparison, measured as training "
        "goes. They cover one step, not the whole window, so compare them with each other, not with `loss`. A "
        "trains without noise, so its logged loss is already clean.",
        "",
        "## The certain part: noise each sequence received",
        "",
        f"alpha = {payload['noise_probe']['alpha']:g}, embedding width d = {payload['noise_probe']['d']}, paper's "
        f"per-sequence noise norm alpha/sqrt(3) = {payload['noise_probe']['target']:.3f}; median token-embedding "
        f"norm {payload['noise_probe']['median_token_embedding_norm']:.3f}. Ratios are measured noise norm / "
        "(alpha/sqrt(3)) over each sequence's real tokens; transformers' built-in uses alpha/sqrt(row length * d) "
        "on every position, padding included.",
        "",
        markdown_table(NOISE_HEADER, noise_rows(payload["noise_summary"])),
        "",
        "## Both models' answers",
        "",
        f"**{payload['quantum']['prompt']}**",
        "",
        f"A: {payload['quantum']['A']}",
        "",
        f"B: {payload['quantum']['B']}",
        "",
        "## Plots",
        "",
        *_image_lines(plots),
        "",
        "## Definitions",
        "",
        definitions_markdown(s["prefix_tokens"]),
        "",
    ]
    return "\n".join(lines)


def report_markdown(
    payload: dict[str, Any], diffs: Sequence[Difference], plots: Sequence[Path], prefix: int
) -> str:
    """report.md of ``neft report``; `payload` is its report.json."""
    names, inputs, counts = payload["names"], payload["inputs"], payload["counts"]
    lines = [
        "# neft report",
        "",
        f"A = **{names['A']}** (`{inputs['A']}`), B = **{names['B']}** (`{inputs['B']}`); {counts['train']} "
        f"answers to training prompts, {counts['heldout']} held-out answers.",
        "",
        markdown_table(DIFF_HEADER, difference_rows(diffs)),
        "",
        REPORT_HONESTY,
        "",
        *_image_lines(plots),
        "",
        "## Definitions",
        "",
        definitions_markdown(prefix),
        "",
    ]
    return "\n".join(lines)


def _image_lines(plots: Sequence[Path]) -> list[str]:
    return [f"![{p.stem}]({p.name})" for p in plots]
