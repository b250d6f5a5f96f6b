"""The summary of ``benchmarks/reproduce.py``'s finished arms: summary.json, README.md and plots.

``summarize_arms`` computes (arms in, Summary out), ``summary_markdown`` and the ``plot_*`` functions
render, ``summarize`` reads and writes the results folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from grid import MEASURES, ArmRecord, GridArm, per_example

from neft_plugins.demo import measures, noise_probe, report

PAPER_DIRECTIONS = {1: "up", -1: "down", 0: "down or equal"}
KIND_ORDER = ("none", "ours uniform", "builtin uniform", "ours gaussian")
SPEED_PAGE = "SPEED.md"  # hand-written timings beside the generated README.md, which links to it


@dataclass
class Pooled:
    """Paired bootstrap of (noise - none) over every (seed, example) pair."""

    diff: float
    low: float
    high: float
    n: int
    none: float  # the no-noise arms' value


@dataclass
class MeasureDirection:
    diffs: list[float]  # one per seed: noise arm - no-noise arm
    mean_diff: float
    std_diff: float
    rel_percents: list[float]
    mean_rel_percent: float | None
    seeds_in_paper_direction: int
    paper_direction: str
    pooled: Pooled | None  # None for corpus-level measures (BLEU)


@dataclass
class Direction:
    arm: str
    seeds: int
    measures: dict[str, MeasureDirection]  # by measure label


@dataclass
class Summary:
    setup: dict[str, Any]
    groups: dict[str, list[ArmRecord]]  # the arms of each configuration over seeds, in table order
    table: list[list[str]]
    directions: list[Direction]
    arms_done: list[str]

    def as_dict(self) -> dict[str, Any]:
        """summary.json"""
        return {
            "setup": self.setup,
            "table": self.table,
            "directions": [asdict(d) for d in self.directions],
            "arms_done": self.arms_done,
        }


def summarize(out: Path) -> None:
    """Rebuild summary.json, README.md and the plots in `out` from the arms finished so far."""
    arms = [json.loads(p.read_text()) for p in sorted((out / "arms").glob("*.json"))]
    if not arms:
        return
    setup = _read_json(out / "setup.json") or {}
    probes = _read_json(out / "noise_probe.json")
    findings_path = out / "FINDINGS.md"
    findings = findings_path.read_text() if findings_path.exists() else None
    summary = summarize_arms(arms, setup, _read_json(out / "references.json"))
    (out / "summary.json").write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    plot_measures(summary.groups, out / "measures.png")
    if probes:
        report.plot_noise(probes["5.0"], out / "noise_per_sequence.png")
    if summary.directions:
        plot_directions(summary.directions, out / "directions.png")
    speed = (out / SPEED_PAGE).exists()
    (out / "README.md").write_text(summary_markdown(summary, probes, findings, speed))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _config_key(arm: GridArm) -> str:
    if arm.alpha == 0:
        name = "none"
    elif arm.kind == "builtin":
        name = f"built-in a{arm.alpha:g}"
    else:
        name = f"ours a{arm.alpha:g} {arm.distribution}"
    return f"{name}, {'packed' if arm.packing else 'padded'}"


def _table_position(arm: GridArm) -> tuple[bool, int, float]:
    kind = "none" if arm.alpha == 0 else f"{arm.kind} {arm.distribution}"
    return (arm.packing, KIND_ORDER.index(kind), arm.alpha)


def _mean_std(values: list[float | None]) -> str:
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return "-"
    if len(present) == 1:
        return f"{present[0]:.4g} (n=1)"
    return f"{measures.mean(present):.4g} ± {measures.std(present):.2g} (n={len(present)})"


def summarize_arms(arms: list[ArmRecord], setup: dict[str, Any], references: list[str] | None) -> Summary:
    unordered: dict[str, list[ArmRecord]] = {}
    for a in arms:
        unordered.setdefault(_config_key(GridArm(**a["spec"])), []).append(a)
    order = sorted(unordered, key=lambda key: _table_position(GridArm(**unordered[key][0]["spec"])))
    groups = {key: unordered[key] for key in order}
    table = [
        [key] + [_mean_std([a["metrics"].get(m.key) for a in group]) for m in MEASURES]
        for key, group in groups.items()
    ]
    directions = [d for key, group in groups.items() if (d := _direction(key, group, groups, references))]
    return Summary(setup, groups, table, directions, [a["id"] for a in arms])


def _direction(
    key: str, group: list[ArmRecord], groups: dict[str, list[ArmRecord]], references: list[str] | None
) -> Direction | None:
    """Each noise arm minus the no-noise arm of the same seed and packing; None for no-noise arms."""
    if key.startswith("none"):
        return None
    layout = key.split(", ")[1]
    base = {a["spec"]["seed"]: a for a in groups.get(f"none, {layout}", [])}
    pairs = [(a, base[a["spec"]["seed"]]) for a in group if a["spec"]["seed"] in base]
    if not pairs:
        return None
    by_label = {}
    for m, label, direction in MEASURES:
        if direction is None:
            continue
        diffs = [a["metrics"][m] - b["metrics"][m] for a, b in pairs]
        rel = [d / b["metrics"][m] * 100 for d, (_, b) in zip(diffs, pairs, strict=False) if b["metrics"][m]]
        agree = sum(d <= 0 for d in diffs) if direction == 0 else sum(d * direction > 0 for d in diffs)
        by_label[label] = MeasureDirection(
            diffs=diffs,
            mean_diff=measures.mean(diffs),
            std_diff=measures.std(diffs),
            rel_percents=rel,
            mean_rel_percent=measures.mean(rel) if rel else None,
            seeds_in_paper_direction=agree,
            paper_direction=PAPER_DIRECTIONS[direction],
            pooled=_pooled_difference(m, label, pairs, references),
        )
    return Direction(key, len(pairs), by_label)


def _pooled_difference(
    key: str, label: str, pairs: list[tuple[ArmRecord, ArmRecord]], references: list[str] | None
) -> Pooled | None:
    noised: list[float] = []
    plain: list[float] = []
    for arm, base in pairs:
        values, base_values = per_example(arm, key, references), per_example(base, key, references)
        if values is None or base_values is None:
            return None
        noised += values
        plain += base_values
    d = measures.paired_bootstrap(label, plain, noised, statistic=measures.nanmean)
    return Pooled(diff=d.diff, low=d.low, high=d.high, n=d.n, none=d.a)


# ------------------------------------------------------------------------------------------ rendering


def summary_markdown(
    summary: Summary, probes: dict[str, dict] | None, findings: str | None, speed: bool
) -> str:
    """README.md of the results folder; `probes` is noise_probe.json, `findings` FINDINGS.md, `speed`
    whether the folder holds SPEED.md (hand-written timings: linked, not copied)."""
    setup = summary.setup
    header = ["arm (mean ± std over seeds)"] + [m.label for m in MEASURES]
    lines = [
        "# NEFTune reproduction on SmolLM2-135M-Instruct (CPU)",
        "",
        "Generated by `benchmarks/reproduce.py` (see `setup.json` for every setting; `arms/*.json` hold "
        "each arm's per-example losses, generations and trainer logs).",
        "",
        "## Setup",
        "",
        *[f"- {k}: {v}" for k, v in setup.items() if k != "licences"],
        "",
        "## Results",
        "",
        report.markdown_table(header, summary.table),
        "",
        "Losses are measured with the noise off (eval mode). Generation measures use greedy decoding; "
        "lengths, rep-2 and log-diversity are on held-out AlpacaEval instructions, ROUGE-L/BLEU on training "
        "prompts against the training answers. The last column is the trainer-logged `neft/noise_norm` "
        "(our callback only) divided by alpha/sqrt(3).",
        "",
        "## Paper's directions: each noise arm minus no noise (same seed, same packing)",
        "",
        report.markdown_table(
            ["arm", "seeds"] + [m.label for m in MEASURES if m.paper_direction is not None],
            [_direction_cells(row) for row in summary.directions],
        ),
        "",
        "Each cell: mean ± std over seeds of (noise arm - no-noise arm), relative change in brackets, "
        "how many seeds moved the way the paper reports (training loss up, held-out loss down or equal, "
        "ROUGE-L/BLEU down, answers longer), and the 95% interval of a paired bootstrap over all "
        "(seed, example) pairs where the measure is per example (losses, ROUGE-L, lengths). An interval "
        "that contains 0 is no measurable difference.",
        "",
        "![directions](directions.png)",
        "",
        "## Noise each sequence received (measured, not estimated)",
        "",
    ]
    for alpha, probe in (probes or {}).items():
        lines += [
            f"alpha {float(alpha):g}:",
            "",
            report.markdown_table(report.NOISE_HEADER, report.noise_rows(noise_probe.summary_rows(probe))),
            "",
        ]
    lines += [
        "## Plots",
        "",
        "![measures](measures.png)",
        "",
        "![noise](noise_per_sequence.png)",
        "",
        "## Licences",
        "",
        *[f"- {line}" for line in setup.get("licences", [])],
        "",
    ]
    if findings is not None:
        lines += ["## Findings", "", findings, ""]
    if speed:
        lines += [
            "## Speed",
            "",
            f"What NEFTune and `neftune_clean_loss` cost in time and memory: [{SPEED_PAGE}]({SPEED_PAGE}) "
            "(written by hand from `benchmarks/noise_op.py`, `overhead.py` and `clean_loss.py`; not generated).",
            "",
        ]
    return "\n".join(lines)


def _direction_cells(row: Direction) -> list[str]:
    cells = [row.arm, str(row.seeds)]
    for r in row.measures.values():
        rel = f" ({r.mean_rel_percent:+.1f}%)" if r.mean_rel_percent is not None else ""
        spread = f" ± {r.std_diff:.2g}" if row.seeds > 1 else ""
        ci = f"; pooled [{r.pooled.low:+.3g}, {r.pooled.high:+.3g}]" if r.pooled else ""
        cells.append(
            f"{r.mean_diff:+.4g}{spread}{rel}; {r.seeds_in_paper_direction}/{row.seeds} {r.paper_direction}{ci}"
        )
    return cells


def plot_directions(directions: list[Direction], path: Path) -> Path:
    """One panel per per-example measure: each arm's pooled change against no noise, with its interval."""
    labels = [m.label for m in MEASURES if m.paper_direction is not None and m.key != "bleu"]
    fig, axes = report.pyplot().subplots(2, 3, figsize=(16, 2 * (0.3 * len(directions) + 1.5)), sharey=True)
    names = [row.arm for row in directions]
    for ax, label in zip(axes.flat, labels, strict=True):
        for i, row in enumerate(directions):
            r = row.measures[label]
            pooled = r.pooled
            if pooled:
                scale = 100 / pooled.none
                centre = pooled.diff * scale
                ax.errorbar(
                    centre,
                    i,
                    xerr=[[centre - pooled.low * scale], [pooled.high * scale - centre]],
                    fmt="o",
                    color="tab:blue",
                    capsize=2,
                )
            ax.scatter(r.rel_percents, [i] * len(r.rel_percents), color="black", s=6, zorder=3)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(f"{label} (paper: {directions[0].measures[label].paper_direction})", fontsize=9)
        ax.set_xlabel("% change against no noise", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=7)
    axes[0, 0].invert_yaxis()
    fig.suptitle(
        "noise arm vs no noise, same seed: pooled paired bootstrap 95% interval (blue), single seeds (dots)"
    )
    return report.save_figure(fig, path, dpi=100)


def plot_measures(groups: dict[str, list[ArmRecord]], path: Path) -> Path:
    """Each measure's mean ± std over seeds per configuration, single seeds as dots."""
    order = list(groups)
    shown = [m for m in MEASURES if m.key != "neft/noise_norm"]
    fig, axes = report.pyplot().subplots(3, 3, figsize=(15, 11))
    for ax, (key, label, _) in zip(axes.flat, shown, strict=False):
        means, stds = [], []
        for g in order:
            vals = [a["metrics"][key] for a in groups[g] if a["metrics"].get(key) is not None]
            means.append(measures.mean(vals) if vals else float("nan"))
            stds.append(measures.std(vals) if len(vals) > 1 else 0.0)
        ax.barh(range(len(order)), means, xerr=stds, color="tab:blue", alpha=0.7, capsize=2)
        for i, g in enumerate(order):
            xs = [a["metrics"][key] for a in groups[g] if a["metrics"].get(key) is not None]
            ax.scatter(xs, [i] * len(xs), color="black", s=8, zorder=3)
        ax.set_yticks(range(len(order)), order if ax in axes[:, 0] else [""] * len(order), fontsize=7)
        ax.set_title(label, fontsize=9)
        finite = [m for m in means if not math.isnan(m)]
        if finite:
            lo = min(min(xs) for g in order for xs in [[a["metrics"][key] for a in groups[g]]] if xs)
            hi = max(max(xs) for g in order for xs in [[a["metrics"][key] for a in groups[g]]] if xs)
            pad = (hi - lo) * 0.3 or abs(hi) * 0.05 or 1.0
            ax.set_xlim(lo - pad, hi + pad)
    fig.suptitle("mean ± std over seeds (dots: single seeds)")
    return report.save_figure(fig, path, dpi=100)
