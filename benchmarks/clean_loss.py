"""What ``neftune_clean_loss`` costs: training step time of NEFTuneCallback with and without it.

``neft/clean_loss`` is one extra forward (``no_grad``) per micro-batch of a logging step. From first
principles a forward is about 1/3 of a training step (the backward is about two forwards), so logging every
step should cost up to +33%, and logging every 10 steps up to +3.3%: less where the optimizer step and the
trainer's own work take a share of the step, or where a forward without autograd is cheaper.

Four arms, each a TRL ``SFTTrainer`` run with ``NEFTuneCallback(neftune_alpha=5)`` on one model and
dataset: with and without ``neftune_clean_loss``, at ``logging_steps`` 1 and 10. They run interleaved (one
round runs every arm once, in a rotating order). An arm's time in a round is the mean interval between step
starts over steps 2-11 (step 1 makes the optimizer state), so at ``logging_steps=10`` one timed step in ten
logs. Ratios (clean loss over plain, same ``logging_steps``) are taken within each round; reported are their
median over rounds and a bootstrap 95% interval of that median.

    python benchmarks/clean_loss.py                 # writes benchmarks/results/clean_loss.json and .png
    python benchmarks/clean_loss.py --sizes tiny --rounds 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from noise_op import median_interval
from overhead import ALPHA, build, rotated, write_results
from overhead import SIZES as OVERHEAD_SIZES
from transformers import PrinterCallback, TrainerCallback

SIZES = {
    "tiny": OVERHEAD_SIZES["tiny"],
    # overhead.py's "mid" takes 10 s a step on this 2-core machine: too slow for many rounds
    "small": {"hidden_size": 256, "layers": 4, "vocab": 4000, "batch": 4, "length": 128},
}
LOGGING_STEPS = (1, 10)
ARMS = {
    f"{name}/{every}": (every, clean)
    for every in LOGGING_STEPS
    for name, clean in (("ours", False), ("ours+clean_loss", True))
}
RUN_STEPS = 12  # step 1 (optimizer state) and the last step's end are not timed: steps 2-11 are


class StepClock(TrainerCallback):
    """When each optimizer step of the trainer's latest run began."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
        self.starts = []

    def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
        self.starts.append(time.perf_counter())

    def seconds_per_step(self) -> float:
        """Mean interval between step starts, step 1 left out."""
        return (self.starts[-1] - self.starts[1]) / (len(self.starts) - 2)


def word_tokenizer(vocab: int) -> Any:
    """A tokenizer for SFTTrainer's padding: the data is token ids already."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t1"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="t0", eos_token="t1", unk_token="t1")


def trainers(size: dict, scratch: Path) -> dict[str, tuple[Any, StepClock]]:
    """One SFTTrainer per arm, on one model and one epoch of RUN_STEPS batches of rows of varied lengths."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from neft_plugins import NEFTuneCallback

    model, batch = build({**size, "batch": size["batch"] * RUN_STEPS}, "cpu")
    rows = [
        {"input_ids": ids[mask.bool()].tolist()}
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
    ]
    dataset = Dataset.from_list(rows)
    out = {}
    for name, (every, clean) in ARMS.items():
        config = SFTConfig(
            output_dir=str(scratch / name.replace("/", "-")),
            per_device_train_batch_size=size["batch"],
            max_steps=RUN_STEPS,
            learning_rate=1e-5,
            logging_steps=every,
            save_strategy="no",
            report_to=[],
            max_length=size["length"],
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
            bf16=False,
            seed=0,
        )
        clock = StepClock()
        callback = NEFTuneCallback(neftune_alpha=ALPHA, neftune_clean_loss=clean)
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=word_tokenizer(size["vocab"]),
            callbacks=[callback, clock],
        )
        trainer.remove_callback(PrinterCallback)  # disable_tqdm prints every log otherwise
        out[name] = (trainer, clock)
    return out


def time_arms(size_name: str, rounds: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Seconds per step of each arm, one value per round; and how many neft/clean_loss logs each arm's
    last run wrote (RUN_STEPS / logging_steps with clean loss, 0 without)."""
    from tqdm import tqdm

    with tempfile.TemporaryDirectory(prefix="neft-clean-loss-") as scratch:
        runs = trainers(SIZES[size_name], Path(scratch))
        for trainer, _ in runs.values():  # warm-up: allocator, first-call paths
            trainer.train()
        times: dict[str, list[float]] = {name: [] for name in ARMS}
        for round_index in tqdm(range(rounds), desc=f"{size_name}: interleaved rounds"):
            for name in rotated(round_index, tuple(ARMS)):
                trainer, clock = runs[name]
                trainer.train()
                times[name].append(clock.seconds_per_step())
        logged = {
            name: sum("neft/clean_loss" in entry for entry in trainer.state.log_history)
            for name, (trainer, _) in runs.items()
        }
    return times, logged


def summarise(times: dict[str, list[float]], logged: dict[str, int]) -> dict:
    result: dict = {
        "median_step_s": {name: statistics.median(values) for name, values in times.items()},
        "clean_loss_logs_per_run": logged,
        "per_round_s": times,
    }
    for every in LOGGING_STEPS:
        clean, plain = times[f"ours+clean_loss/{every}"], times[f"ours/{every}"]
        ratios = [c / p for c, p in zip(clean, plain, strict=True)]
        result[f"logging_steps={every}"] = {
            "clean_over_plain": statistics.median(ratios),
            "clean_over_plain_95ci": median_interval(ratios),
            "expected_at_most": 1 + 1 / (3 * every),
        }
    return result


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(results["sizes"])
    figure, axis = plt.subplots(figsize=(6, 3.6))
    for index, every in enumerate(LOGGING_STEPS):
        xs = [x + (index - 0.5) * 0.3 for x in range(len(sizes))]
        rows = [results["sizes"][size][f"logging_steps={every}"] for size in sizes]
        centres = [row["clean_over_plain"] for row in rows]
        errors = [
            [centre - row["clean_over_plain_95ci"][0] for centre, row in zip(centres, rows, strict=True)],
            [row["clean_over_plain_95ci"][1] - centre for centre, row in zip(centres, rows, strict=True)],
        ]
        colour = ("#2a7", "#27c")[index]
        axis.errorbar(
            xs, centres, yerr=errors, fmt="o", capsize=4, color=colour, label=f"logging_steps={every}"
        )
        axis.scatter(xs, [row["expected_at_most"] for row in rows], marker="_", s=300, color=colour)
        for x, centre in zip(xs, centres, strict=True):
            axis.annotate(f"{centre:.3f}", (x + 0.05, centre), fontsize="small")
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_xticks(range(len(sizes)), sizes)
    axis.set_xlim(-0.6, len(sizes) - 0.4)
    axis.set_ylabel("step time, clean loss / plain")
    axis.set_title("median over rounds, 95% CI; bars: first-principles bound 1 + 1/(3 L)", fontsize=9)
    axis.legend(loc="center")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "clean_loss.json")
    args = parser.parse_args(argv)
    import datasets
    import transformers
    import trl

    from neft_plugins.demo.pipeline import quiet_libraries

    quiet_libraries()
    datasets.disable_progress_bars()  # SFTTrainer's dataset preparation, four times per size
    logging.getLogger("neft_plugins").setLevel(logging.ERROR)  # attach/detach every run
    torch.set_num_threads(1)  # two threads contend with the other work of a shared 2-core machine
    results: dict = {
        "device": "cpu",
        "threads": 1,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "alpha": ALPHA,
        "rounds": args.rounds,
        "timed_steps_per_run": RUN_STEPS - 2,
        "command": " ".join(["python", *sys.argv]),
        "load_average_before": os.getloadavg(),
        "sizes": {},
    }
    for size_name in args.sizes:
        times, logged = time_arms(size_name, args.rounds)
        results["sizes"][size_name] = {"config": SIZES[size_name], **summarise(times, logged)}
        summary = {k: v for k, v in results["sizes"][size_name].items() if k != "per_round_s"}
        print(json.dumps({size_name: summary}, indent=2))
    results["load_average_after"] = os.getloadavg()
    write_results(results, args.output, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
