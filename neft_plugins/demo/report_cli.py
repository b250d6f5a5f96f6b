"""``neft report``: the measures of ``neft demo`` for any two sets of generations."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from neft_plugins.demo import measures


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neft report",
        description="Compare two sets of generations with the NEFTune paper's Section 5 measures, each "
        "difference with a paired-bootstrap interval. Inputs: JSON/JSONL lists of {instruction, output} "
        "(AlpacaEval style) or of strings, or the generations_*.json files of `neft demo`.",
    )
    p.add_argument("a", help="generations of arm A (the baseline)")
    p.add_argument("b", help="generations of arm B")
    p.add_argument(
        "--references",
        help="Alpaca-style JSON/JSONL of training records: answers to these instructions are scored with "
        "ROUGE-L/BLEU against their outputs; the other answers count as held-out",
    )
    p.add_argument("--names", nargs=2, default=("A", "B"), metavar=("NAME_A", "NAME_B"))
    p.add_argument("--prefix-tokens", type=int, default=measures.DEFAULT_PREFIX_TOKENS)
    p.add_argument("--bootstrap", type=int, default=measures.DEFAULT_BOOTSTRAP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write report.json, report.md and PNGs here")
    return p


def _read_items(path: str) -> Any:
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def load_generations(path: str, references: dict[str, str] | None = None) -> dict[str, list[dict]]:
    """{'train': [{instruction, output, reference}], 'heldout': [{instruction, output}]} from any input form."""
    data = _read_items(path)
    if isinstance(data, dict) and ("train" in data or "heldout" in data):
        return {"train": list(data.get("train", [])), "heldout": list(data.get("heldout", []))}
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of generations or a neft demo generations file")
    items = [{"instruction": None, "output": x} if isinstance(x, str) else dict(x) for x in data]
    for item in items:
        if "output" not in item:
            raise ValueError(f"{path}: every item needs an 'output'")
    out: dict[str, list[dict]] = {"train": [], "heldout": []}
    for item in items:
        ref = references.get(item.get("instruction")) if references else None
        if ref is not None:
            out["train"].append({**item, "reference": ref})
        else:
            out["heldout"].append(item)
    return out


def _pair(name: str, a: list[dict], b: list[dict]) -> tuple[list[dict], list[dict]]:
    """Pair answers by instruction when every answer has one, else by position."""
    if a and b and all(x.get("instruction") for x in a + b):
        by_b = {x["instruction"]: x for x in b}
        pairs = [(x, by_b[x["instruction"]]) for x in a if x["instruction"] in by_b]
        if not pairs:
            raise ValueError(f"{name}: A and B share no instruction")
        return [p[0] for p in pairs], [p[1] for p in pairs]
    if len(a) != len(b):
        raise ValueError(
            f"{name}: A has {len(a)} answers and B {len(b)}; without instructions they pair by position"
        )
    return a, b


def report_main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from neft_plugins.demo import pipeline, report

    try:
        refs = None
        if args.references:
            refs = {ex.instruction: ex.answer for ex in pipeline.load_records(args.references)}
        ga = load_generations(args.a, refs)
        gb = load_generations(args.b, refs)
        train_a, train_b = (
            _pair("training-prompt answers", ga["train"], gb["train"]) if ga["train"] else ([], [])
        )
        held_a, held_b = (
            _pair("held-out answers", ga["heldout"], gb["heldout"]) if ga["heldout"] else ([], [])
        )
    except (OSError, ValueError) as error:
        print(f"neft report: {error}", file=sys.stderr)
        return 2
    if not train_a and not held_a:
        print("neft report: no answers to compare", file=sys.stderr)
        return 2
    diffs = measures.compare_generations(
        [x["output"] for x in held_a] if held_a else None,
        [x["output"] for x in held_b] if held_b else None,
        [x["output"] for x in train_a] if train_a else None,
        [x["output"] for x in train_b] if train_b else None,
        [x["reference"] for x in train_a] if train_a else None,
        prefix=args.prefix_tokens,
        n_boot=args.bootstrap,
        seed=args.seed,
    )
    name_a, name_b = args.names
    print(f"A = {name_a} ({args.a});  B = {name_b} ({args.b})")
    print(f"{len(train_a)} answers to training prompts, {len(held_a)} held-out answers")
    print(report.text_table(report.DIFF_HEADER, report.difference_rows(diffs)))
    print(f"\n{report.REPORT_HONESTY}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        payload = {
            "inputs": {"A": args.a, "B": args.b, "references": args.references},
            "names": {"A": name_a, "B": name_b},
            "counts": {"train": len(train_a), "heldout": len(held_a)},
            "differences": [d.as_dict() for d in diffs],
            "definitions": measures.DEFINITIONS,
        }
        report.write_json(out / "report.json", payload)
        plots = [report.plot_differences(diffs, out / "differences.png", f"{name_b} minus {name_a}")]
        if held_a:
            plots.append(
                report.plot_lengths(
                    [x["output"] for x in held_a],
                    [x["output"] for x in held_b],
                    (name_a, name_b),
                    out / "answer_lengths.png",
                )
            )
        md = report.report_markdown(payload, diffs, plots, args.prefix_tokens)
        (out / "report.md").write_text(md, encoding="utf-8")
        print(f"neft report: written to {out}/")
    return 0
