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
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import grid
import grid_summary

from neft_plugins.demo import assets, noise_probe, pipeline

ROOT = Path(__file__).resolve().parent


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

    pipeline.quiet_libraries()
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
    grid.write_whole(out / "setup.json", setup)
    grid.write_whole(out / "references.json", [ex.answer for ex in splits.train[: args.gen_train]])
    probe_path = out / "noise_probe.json"
    if not probe_path.exists() and grid.claim(probe_path):
        seqs = [formatter.example_ids(ex)[0] for ex in splits.train[:8]]
        probes = {
            str(alpha): noise_probe.measure(
                model, seqs, tokenizer.pad_token_id, alpha, noise_probe.default_fixed_length(args.max_length)
            )
            for alpha in (5.0, 15.0)
        }
        grid.write_whole(probe_path, probes)
        probe_path.with_suffix(".claim").unlink()
    del model

    arms = grid.reduced_grid() if args.grid == "reduced" else grid.full_grid(args.seeds)
    start = time.time()
    done_now = 0
    for arm in arms:
        path = out / "arms" / f"{arm.ident}.json"
        if path.exists():
            continue
        if args.max_arms is not None and done_now >= args.max_arms:
            break
        if args.deadline_minutes is not None and (time.time() - start) / 60 > args.deadline_minutes:
            print(f"reproduce: deadline reached, stopping before {arm.ident}", flush=True)
            break
        if not grid.claim(path):
            continue  # another worker is on it
        try:
            _run_arm(args, arm, path, model_path, splits, steps)
        finally:
            path.with_suffix(".claim").unlink()
        done_now += 1
        grid_summary.summarize(out)


def _run_arm(
    args: argparse.Namespace,
    grid_arm: grid.GridArm,
    path: Path,
    model_path: Path,
    splits: pipeline.Splits,
    steps: int,
) -> None:
    arm = grid_arm.arm()
    train = pipeline.TrainSettings(
        steps=steps,
        batch_size=1 if arm.packing else args.batch_size,
        max_length=args.max_length * (args.batch_size if arm.packing else 1),
        learning_rate=args.lr,
        full=args.full_ft,
        logging_steps=max(1, steps // 10),
        progress=False,
    )
    ev = pipeline.EvalSettings(
        args.gen_train, args.gen_heldout, args.max_new_tokens, args.eval_batch_size, progress=False
    )
    print(f"reproduce: {arm.name} ...", flush=True)
    t0 = time.time()
    cpu0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix="neft-reproduce-") as scratch:
        model, tok, seconds, logs = pipeline.train_arm(model_path, splits, arm, train, scratch)
    eval_train = pipeline.TrainSettings(max_length=args.max_length)
    losses, generations = pipeline.evaluate_arm(model, tok, splits, eval_train, ev)
    del model
    refs = [ex.answer for ex in splits.train[: len(generations["train"])]]
    result = {
        "id": arm.name,
        "spec": grid_arm.spec(),
        "arm": asdict(arm),
        "train_seconds": round(seconds, 1),
        "total_seconds": round(time.time() - t0, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "losses": losses,
        "generations": generations,
        "log_history": logs,
    }
    result["metrics"] = grid.arm_metrics(result, refs, args.prefix_tokens)
    grid.write_whole(path, result)
    print(
        f"reproduce: {arm.name} done in {result['total_seconds']:.0f} s: "
        + ", ".join(f"{k}={v:.4g}" for k, v in result["metrics"].items() if v is not None),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.summarize:
        run(args)
    grid_summary.summarize(Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
