"""Reproduce the NEFTune paper's Section 5 directions on a real small model, over seeds.

Arms: no noise; NEFTuneCallback (per-sequence L) at alpha 5/10/15, uniform and gaussian; transformers'
built-in ``neftune_noise_alpha`` at the same alphas; each with and without packing; several seeds.
Every arm writes ``<out>/arms/<id>.json`` as soon as it finishes, and a rerun skips finished arms, so
the grid can be run in pieces. ``--summarize`` rebuilds the tables and plots from what is there.

    python benchmarks/reproduce.py                       # the full grid (hours on a CPU)
    python benchmarks/reproduce.py --grid reduced        # 15 arms in priority order, a quick look
    python benchmarks/reproduce.py --summarize           # tables + plots only
    python benchmarks/reproduce.py & python benchmarks/reproduce.py   # two workers share the grid

benchmarks/results/FINDINGS.md gives the exact command behind the committed results.

Packed arms pack `batch_size` records into each row (TRL bfd, padding-free, restarting position_ids):
one row of `batch_size * max_length` tokens per step, so they see about as many tokens per step as the
padded arms.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from neft_plugins.demo import measures

ROOT = Path(__file__).resolve().parent
MEASURES = [
    # key, label, paper's direction for NEFTune vs none (+1 up, -1 down, 0 equal or down)
    ("loss/train", "training loss (noise off)", +1),
    ("loss/heldback", "held-back alpaca loss", 0),
    ("loss/heldout", "AlpacaEval loss", 0),
    ("rougeL", "ROUGE-L vs training answers", -1),
    ("bleu", "BLEU vs training answers", -1),
    ("len_chars", "answer length (chars)", +1),
    ("len_words", "answer length (words)", +1),
    ("rep2", "rep-2", None),
    ("logdiv", "log-diversity", None),
    ("neft/noise_norm", "logged noise norm / (alpha/sqrt3)", None),
]


ALPHAS = (5.0, 10.0, 15.0)


def arm_id(kind: str, alpha: float, distribution: str, packing: bool, seed: int) -> str:
    base = "none" if alpha == 0 else f"{kind}-a{alpha:g}-{distribution}"
    return f"{base}-{'packed' if packing else 'padded'}-s{seed}"


def full_grid(seeds: list[int]) -> list[dict]:
    """Uniform noise (ours, built-in) seed by seed, then gaussian: a run cut short loses gaussian seeds first."""

    def arm(kind: str, alpha: float, distribution: str, packing: bool, seed: int) -> dict:
        return dict(kind=kind, alpha=alpha, distribution=distribution, packing=packing, seed=seed)

    uniform, gaussian = [], []
    for seed in seeds:
        for packing in (False, True):
            uniform.append(arm("none", 0.0, "uniform", packing, seed))
            for kind in ("ours", "builtin"):
                uniform += [arm(kind, alpha, "uniform", packing, seed) for alpha in ALPHAS]
            gaussian += [arm("ours", alpha, "gaussian", packing, seed) for alpha in ALPHAS]
    return uniform + gaussian


def reduced_grid() -> list[dict]:
    """Priority order: what answers the paper's directions first, then packing, then the rest."""

    def arm(kind, alpha, seed, packing=False, distribution="uniform"):
        return dict(kind=kind, alpha=alpha, distribution=distribution, packing=packing, seed=seed)

    arms = []
    for seed in (0, 1):
        arms += [arm("none", 0.0, seed), arm("ours", 5.0, seed), arm("builtin", 5.0, seed)]
    arms += [arm("none", 0.0, 0, True), arm("ours", 5.0, 0, True), arm("builtin", 5.0, 0, True)]
    arms += [arm("ours", 15.0, 0), arm("ours", 15.0, 1), arm("ours", 5.0, 0, distribution="gaussian")]
    arms += [arm("none", 0.0, 2), arm("ours", 5.0, 2), arm("builtin", 5.0, 2)]
    arms += [arm("builtin", 15.0, 0), arm("ours", 10.0, 0), arm("builtin", 10.0, 0)]
    return arms


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "results"))
    p.add_argument("--grid", choices=("full", "reduced"), default="full")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="full grid only")
    p.add_argument("--max-arms", type=int, default=None, help="stop after this many new arms")
    p.add_argument("--deadline-minutes", type=float, default=None, help="start no new arm after this long")
    p.add_argument("--summarize", action="store_true", help="only rebuild the summary from finished arms")
    p.add_argument("--train-size", type=int, default=None, help="training records (default: all that fit)")
    p.add_argument("--heldback-size", type=int, default=32)
    p.add_argument("--heldout-size", type=int, default=32)
    p.add_argument("--gen-train", type=int, default=16)
    p.add_argument("--gen-heldout", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=16, help="rows per loss and generation batch")
    p.add_argument("--prefix-tokens", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="default: one epoch of the training records")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--full-ft", action="store_true", help="full fine-tuning (default LoRA r=16)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--model", default=None, help="model folder or GGUF (default SmolLM2-135M-Instruct)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    import torch

    from neft_plugins.demo import assets, noise_probe, pipeline
    from neft_plugins.demo.cli import _quiet_libraries

    _quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    (out / "arms").mkdir(parents=True, exist_ok=True)
    model_path = Path(args.model) if args.model else assets.fetch(assets.SMOLLM2)
    if model_path.suffix == ".gguf":
        model_path = assets.convert_gguf(model_path)
    records = pipeline.load_records(assets.fetch(assets.ALPACA_DEMO))
    heldout = pipeline.load_records(assets.fetch(assets.ALPACA_EVAL))
    model, tokenizer = pipeline.load_model(model_path)
    formatter = pipeline.Formatter(tokenizer)
    train_size = args.train_size or len(records)
    splits = pipeline.select_splits(
        records, heldout, formatter, train_size, args.heldback_size, args.heldout_size, args.max_length
    )
    if args.train_size is None:  # everything that fits, minus the held-back part
        splits = pipeline.select_splits(
            records,
            heldout,
            formatter,
            len(splits.train) - args.heldback_size,
            args.heldback_size,
            args.heldout_size,
            args.max_length,
        )
    steps = args.steps or math.ceil(len(splits.train) / args.batch_size)
    setup = {
        "model": str(model_path),
        "train_records": len(splits.train),
        "heldback_records": len(splits.heldback),
        "heldout_records": len(splits.heldout),
        "steps": steps,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "fine_tuning": "full" if args.full_ft else "LoRA r=16 all-linear",
        "lr": args.lr or (1e-4 if args.full_ft else 5e-4),
        "gen_train": args.gen_train,
        "gen_heldout": args.gen_heldout,
        "max_new_tokens": args.max_new_tokens,
        "prefix_tokens": args.prefix_tokens,
        "eval_batch_size": args.eval_batch_size,
        "grid": args.grid,
        "threads": torch.get_num_threads(),
        "licences": assets.licence_lines(),
    }
    _write_whole(out / "setup.json", setup)
    _write_whole(out / "references.json", [ex.answer for ex in splits.train[: args.gen_train]])
    probe_path = out / "noise_probe.json"
    if not probe_path.exists() and _claim(probe_path):
        seqs = [formatter.example_ids(ex)[0] for ex in splits.train[:8]]
        probes = {
            str(alpha): noise_probe.measure(
                model, seqs, tokenizer.pad_token_id, alpha, noise_probe.default_fixed_length(args.max_length)
            )
            for alpha in (5.0, 15.0)
        }
        _write_whole(probe_path, probes)
        probe_path.with_suffix(".claim").unlink()
    del model

    grid = reduced_grid() if args.grid == "reduced" else full_grid(args.seeds)
    start = time.time()
    done_now = 0
    for spec in grid:
        ident = arm_id(spec["kind"], spec["alpha"], spec["distribution"], spec["packing"], spec["seed"])
        path = out / "arms" / f"{ident}.json"
        if path.exists():
            continue
        if args.max_arms is not None and done_now >= args.max_arms:
            break
        if args.deadline_minutes is not None and (time.time() - start) / 60 > args.deadline_minutes:
            print(f"reproduce: deadline reached, stopping before {ident}", flush=True)
            break
        if not _claim(path):
            continue  # another worker is on it
        try:
            _run_arm(args, spec, ident, path, model_path, splits, steps)
        finally:
            path.with_suffix(".claim").unlink()
        done_now += 1
        summarize(out)


def _write_whole(path: Path, payload: object) -> None:
    """Written to a side file and renamed: another worker may be reading the folder for its summary."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(payload, indent=2) + "\n")
    partial.replace(path)


def _claim(path: Path) -> bool:
    """Take `path`'s claim file for this process; False while another live worker holds it."""
    claim = path.with_suffix(".claim")
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        holder = claim.read_text().strip()
        if not holder or _alive(int(holder)):  # empty: the holder is writing its pid right now
            return False
        claim.unlink(missing_ok=True)  # left by a worker that died
        return _claim(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(str(os.getpid()))
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_arm(
    args: argparse.Namespace, spec: dict, ident: str, path: Path, model_path: Path, splits, steps: int
) -> None:
    from neft_plugins.demo import pipeline

    arm = pipeline.Arm(
        ident,
        alpha=spec["alpha"],
        distribution=spec["distribution"],
        builtin=spec["kind"] == "builtin",
        packing=spec["packing"],
        seed=spec["seed"],
    )
    packed = spec["packing"]
    train = pipeline.TrainSettings(
        steps=steps,
        batch_size=1 if packed else args.batch_size,
        max_length=args.max_length * (args.batch_size if packed else 1),
        learning_rate=args.lr,
        full=args.full_ft,
        logging_steps=max(1, steps // 10),
        progress=False,
    )
    ev = pipeline.EvalSettings(
        args.gen_train, args.gen_heldout, args.max_new_tokens, args.eval_batch_size, progress=False
    )
    print(f"reproduce: {ident} ...", flush=True)
    t0 = time.time()
    cpu0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix="neft-reproduce-") as scratch:
        model, tok, seconds, logs = pipeline.train_arm(model_path, splits, arm, train, scratch)
    eval_train = pipeline.TrainSettings(max_length=args.max_length)
    losses, generations = pipeline.evaluate_arm(model, tok, splits, eval_train, ev)
    del model
    refs = [ex.answer for ex in splits.train[: len(generations["train"])]]
    noise = [h["neft/noise_norm"] for h in logs if "neft/noise_norm" in h]
    result = {
        "id": ident,
        "spec": spec,
        "arm": asdict(arm),
        "train_seconds": round(seconds, 1),
        "total_seconds": round(time.time() - t0, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "losses": losses,
        "generations": generations,
        "log_history": logs,
    }
    result["metrics"] = {
        **{key: measures.nanmean(_per_example(result, key, refs)) for key in PER_EXAMPLE},
        "bleu": measures.bleu(generations["train"], refs),
        "rep2": measures.repetition_rate(generations["heldout"], 2, args.prefix_tokens),
        "logdiv": measures.log_diversity(generations["heldout"], args.prefix_tokens),
        "neft/noise_norm": (measures.mean(noise) / (spec["alpha"] / math.sqrt(3))) if noise else None,
    }
    _write_whole(path, result)
    print(
        f"reproduce: {ident} done in {result['total_seconds']:.0f} s: "
        + ", ".join(f"{k}={v:.4g}" for k, v in result["metrics"].items() if v is not None),
        flush=True,
    )


# ------------------------------------------------------------------------------------------ summary


def _config_key(spec: dict) -> str:
    if spec["alpha"] == 0:
        name = "none"
    elif spec["kind"] == "builtin":
        name = f"built-in a{spec['alpha']:g}"
    else:
        name = f"ours a{spec['alpha']:g} {spec['distribution']}"
    return f"{name}, {'packed' if spec['packing'] else 'padded'}"


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g} (n=1)"
    return f"{measures.mean(values):.4g} ± {measures.std(values):.2g} (n={len(values)})"


def summarize(out: Path) -> None:
    arms = [json.loads(p.read_text()) for p in sorted((out / "arms").glob("*.json"))]
    if not arms:
        return
    setup = json.loads((out / "setup.json").read_text()) if (out / "setup.json").exists() else {}
    refs_path = out / "references.json"
    references = json.loads(refs_path.read_text()) if refs_path.exists() else None
    groups: dict[str, list[dict]] = {}
    for a in arms:
        groups.setdefault(_config_key(a["spec"]), []).append(a)
    kinds = ("none", "ours uniform", "builtin uniform", "ours gaussian")

    def position(key: str) -> tuple:
        spec = groups[key][0]["spec"]
        kind = "none" if spec["alpha"] == 0 else f"{spec['kind']} {spec['distribution']}"
        return (spec["packing"], kinds.index(kind), spec["alpha"])

    order = sorted(groups, key=position)
    table = []
    for key in order:
        row = [key]
        for m, _, _ in MEASURES:
            row.append(_mean_std([a["metrics"].get(m) for a in groups[key]]))
        table.append(row)

    # Directions: each noise arm minus the no-noise arm of the same seed and packing.
    directions = []
    for key in order:
        if key.startswith("none"):
            continue
        layout = key.split(", ")[1]
        base = {a["spec"]["seed"]: a for a in groups.get(f"none, {layout}", [])}
        pairs = [(a, base[a["spec"]["seed"]]) for a in groups[key] if a["spec"]["seed"] in base]
        if not pairs:
            continue
        row = {"arm": key, "seeds": len(pairs), "measures": {}}
        for m, label, direction in MEASURES:
            if direction is None:
                continue
            pooled = _pooled_difference(m, label, pairs, references)
            diffs = [a["metrics"][m] - b["metrics"][m] for a, b in pairs]
            rel = [
                d / b["metrics"][m] * 100 for d, (_, b) in zip(diffs, pairs, strict=False) if b["metrics"][m]
            ]
            agree = sum(d <= 0 for d in diffs) if direction == 0 else sum(d * direction > 0 for d in diffs)
            row["measures"][label] = {
                "diffs": diffs,
                "mean_diff": measures.mean(diffs),
                "std_diff": measures.std(diffs),
                "rel_percents": rel,
                "mean_rel_percent": measures.mean(rel) if rel else None,
                "seeds_in_paper_direction": agree,
                "paper_direction": {1: "up", -1: "down", 0: "down or equal"}[direction],
                "pooled": pooled,
            }
        directions.append(row)

    payload = {"setup": setup, "table": table, "directions": directions, "arms_done": [a["id"] for a in arms]}
    (out / "summary.json").write_text(json.dumps(payload, indent=2) + "\n")
    _plots(out, groups, order)
    _direction_plot(out, directions)
    header = ["arm (mean ± std over seeds)"] + [label for _, label, _ in MEASURES]
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
        _md(header, table),
        "",
        "Losses are measured with the noise off (eval mode). Generation measures use greedy decoding; "
        "lengths, rep-2 and log-diversity are on held-out AlpacaEval instructions, ROUGE-L/BLEU on training "
        "prompts against the training answers. The last column is the trainer-logged `neft/noise_norm` "
        "(our callback only) divided by alpha/sqrt(3).",
        "",
        "## Paper's directions: each noise arm minus no noise (same seed, same packing)",
        "",
    ]
    dir_header = ["arm", "seeds"] + [label for _, label, d in MEASURES if d is not None]
    dir_rows = []
    for row in directions:
        cells = [row["arm"], str(row["seeds"])]
        for _, label, d in MEASURES:
            if d is None:
                continue
            r = row["measures"][label]
            rel = f" ({r['mean_rel_percent']:+.1f}%)" if r["mean_rel_percent"] is not None else ""
            spread = f" ± {r['std_diff']:.2g}" if row["seeds"] > 1 else ""
            ci = f"; pooled [{r['pooled']['low']:+.3g}, {r['pooled']['high']:+.3g}]" if r["pooled"] else ""
            cells.append(
                f"{r['mean_diff']:+.4g}{spread}{rel}; {r['seeds_in_paper_direction']}/{row['seeds']} "
                f"{r['paper_direction']}{ci}"
            )
        dir_rows.append(cells)
    lines += [
        _md(dir_header, dir_rows),
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
    probe_path = out / "noise_probe.json"
    if probe_path.exists():
        from neft_plugins.demo import noise_probe, report

        probes = json.loads(probe_path.read_text())
        for alpha, probe in probes.items():
            lines += [
                f"alpha {float(alpha):g}:",
                "",
                report.markdown_table(
                    report.NOISE_HEADER, report.noise_rows(noise_probe.summary_rows(probe))
                ),
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
    findings = out / "FINDINGS.md"
    if findings.exists():
        lines += ["## Findings", "", findings.read_text(), ""]
    (out / "README.md").write_text("\n".join(lines))


PER_EXAMPLE = ("loss/train", "loss/heldback", "loss/heldout", "rougeL", "len_chars", "len_words")


def _per_example(arm: dict, key: str, references: list[str] | None) -> list[float] | None:
    """The per-example values behind a metric in PER_EXAMPLE (the metric is their mean), else None."""
    if key.startswith("loss/"):
        return arm["losses"][key.removeprefix("loss/")]
    if key == "rougeL" and references is not None:
        answers = arm["generations"]["train"]
        return measures.rouge_l_scores(answers, references[: len(answers)])
    if key == "len_chars":
        return measures.char_lengths(arm["generations"]["heldout"])
    if key == "len_words":
        return measures.word_lengths(arm["generations"]["heldout"])
    return None


def _pooled_difference(
    key: str, label: str, pairs: list[tuple[dict, dict]], references: list[str] | None
) -> dict | None:
    """Paired bootstrap of (noise - none) over every (seed, example) pair of the arm's seeds."""
    noised: list[float] = []
    plain: list[float] = []
    for arm, base in pairs:
        values, base_values = _per_example(arm, key, references), _per_example(base, key, references)
        if values is None or base_values is None:
            return None
        noised += values
        plain += base_values
    d = measures.paired_bootstrap(label, plain, noised, statistic=measures.nanmean)
    return {"diff": d.diff, "low": d.low, "high": d.high, "n": d.n, "none": d.a}


def _md(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _direction_plot(out: Path, directions: list[dict]) -> None:
    """One panel per per-example measure: each arm's pooled change against no noise, with its interval."""
    from neft_plugins.demo import report

    if not directions:
        return
    plt = report._pyplot()
    labels = [label for key, label, d in MEASURES if d is not None and key != "bleu"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 2 * (0.3 * len(directions) + 1.5)), sharey=True)
    names = [row["arm"] for row in directions]
    for ax, label in zip(axes.flat, labels, strict=True):
        for i, row in enumerate(directions):
            r = row["measures"][label]
            pooled = r["pooled"]
            if pooled:
                scale = 100 / pooled["none"]
                centre = pooled["diff"] * scale
                ax.errorbar(
                    centre,
                    i,
                    xerr=[[centre - pooled["low"] * scale], [pooled["high"] * scale - centre]],
                    fmt="o",
                    color="tab:blue",
                    capsize=2,
                )
            ax.scatter(r["rel_percents"], [i] * len(r["rel_percents"]), color="black", s=6, zorder=3)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(f"{label} (paper: {directions[0]['measures'][label]['paper_direction']})", fontsize=9)
        ax.set_xlabel("% change against no noise", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=7)
    axes[0, 0].invert_yaxis()
    fig.suptitle(
        "noise arm vs no noise, same seed: pooled paired bootstrap 95% interval (blue), single seeds (dots)"
    )
    fig.tight_layout()
    fig.savefig(out / "directions.png", dpi=100)
    plt.close(fig)


def _plots(out: Path, groups: dict[str, list[dict]], order: list[str]) -> None:
    from neft_plugins.demo import report

    plt = report._pyplot()
    shown = [m for m in MEASURES if m[0] != "neft/noise_norm"]
    fig, axes = plt.subplots(3, 3, figsize=(15, 11))
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
    fig.tight_layout()
    fig.savefig(out / "measures.png", dpi=100)
    plt.close(fig)
    probe_path = out / "noise_probe.json"
    if probe_path.exists():
        probe = json.loads(probe_path.read_text())["5.0"]
        report.plot_noise(probe, out / "noise_per_sequence.png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.summarize:
        run(args)
    summarize(Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
