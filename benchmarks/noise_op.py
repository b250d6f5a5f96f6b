"""Time of the noise op alone: an embedding forward with our hook, transformers' built-in hook, or none.

overhead.py's end-to-end step times vary too much on a shared CPU to resolve the noise's cost. This times
what the noise adds: the forward of a model that is only a token embedding (train mode, autograd on), called
with the keywords a trainer passes (``attention_mask`` or ``position_ids``, ``labels``), so our model
pre-hook, segment reading, per-sequence scale and noise statistics all run. Three layouts of the same
number of tokens: a padded batch, and one packed row holding 16 or 256 sequences (restarting position ids).

Arms run interleaved (one round times each arm once, in a rotating order) with torch.utils.benchmark, on
one model and one thread. Ratios are taken within each round, so drift on a shared machine hits both sides
alike; reported are their median over rounds and a bootstrap 95% interval of that median.

    python benchmarks/noise_op.py                  # writes benchmarks/results/noise_op.json and .png
    python benchmarks/noise_op.py --rounds 8 --dim 576
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
from pathlib import Path

import torch
from overhead import ALPHA, ARMS, Arm, rotated, write_results
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # support.layouts
from support.layouts import packed_row, padded_batch, random_lengths

SEQUENCES = {"padded": 8, "packed16": 16, "packed256": 256}


class EmbeddingOnly(nn.Module):
    """The smallest model a trainer could call: token embeddings, taking a trainer's keywords."""

    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.embed_tokens(input_ids)


def batches(tokens: int, vocab: int) -> dict[str, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return {
        "padded": padded_batch(SEQUENCES["padded"], tokens // SEQUENCES["padded"], vocab, generator),
        **{
            name: packed_row(random_lengths(SEQUENCES[name], tokens, generator), vocab, generator)
            for name in ("packed16", "packed256")
        },
    }


def time_layout(
    model: EmbeddingOnly, batch: dict[str, torch.Tensor], rounds: int, number: int, desc: str
) -> dict[str, list[float]]:
    """Seconds per forward of each arm, one mean over ``number`` calls per round."""
    from torch.utils.benchmark import Timer
    from tqdm import tqdm

    timer = Timer("model(**batch)", globals={"model": model, "batch": batch}, num_threads=1)
    for arm in ARMS:  # warm-up: allocator, first-call paths
        with Arm(arm, model):
            timer.timeit(2)
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for round_index in tqdm(range(rounds), desc=desc):
        for arm in rotated(round_index):
            with Arm(arm, model):
                times[arm].append(timer.timeit(number).mean)
    return times


def median_interval(values: list[float], draws: int = 2000) -> tuple[float, float]:
    """Bootstrap 95% interval of the median of ``values``."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws)]


def summarise(times: dict[str, list[float]], batch: dict[str, torch.Tensor]) -> dict:
    result: dict = {
        "shape": list(batch["input_ids"].shape),
        "keywords": sorted(key for key in batch if key != "input_ids"),
        "median_s": {arm: statistics.median(values) for arm, values in times.items()},
        "per_round_s": times,
    }
    for other in ("builtin", "none"):
        ratios = [ours / base for ours, base in zip(times["ours"], times[other], strict=True)]
        result[f"ours_over_{other}"] = statistics.median(ratios)
        result[f"ours_over_{other}_95ci"] = median_interval(ratios)
    return result


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layouts = list(results["layouts"])
    figure, (times_axis, ratio_axis) = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.27
    for index, (arm, colour) in enumerate(zip(ARMS, ("#999", "#2a7", "#c62"), strict=True)):
        medians = [results["layouts"][layout]["median_s"][arm] * 1000 for layout in layouts]
        times_axis.bar(
            [x + (index - 1) * width for x in range(len(layouts))], medians, width, label=arm, color=colour
        )
    times_axis.set_xticks(range(len(layouts)), layouts)
    times_axis.set_ylabel("ms per embedding forward (median)")
    times_axis.set_title(f"d={results['dim']}, {results['tokens']} tokens per batch, {results['device']}")
    times_axis.margins(y=0.25)
    times_axis.legend(ncols=3, loc="upper left")
    for offset, (other, colour) in zip((-0.1, 0.1), (("builtin", "#c62"), ("none", "#999")), strict=True):
        summaries = [results["layouts"][layout] for layout in layouts]
        centres = [summary[f"ours_over_{other}"] for summary in summaries]
        intervals = [summary[f"ours_over_{other}_95ci"] for summary in summaries]
        xs = [x + offset for x in range(len(layouts))]
        errors = [[centre - low for centre, (low, _) in zip(centres, intervals, strict=True)]]
        errors.append([high - centre for centre, (_, high) in zip(centres, intervals, strict=True)])
        ratio_axis.errorbar(
            xs, centres, yerr=errors, fmt="o", capsize=4, color=colour, label=f"ours / {other}"
        )
        for x, centre, (low, high) in zip(xs, centres, intervals, strict=True):
            label = f"{centre:.2f} [{low:.2f}, {high:.2f}]"
            ratio_axis.annotate(label, (x, high), ha="center", va="bottom", fontsize="small")
    ratio_axis.axhline(1.0, color="black", linewidth=0.8)
    ratio_axis.set_xticks(range(len(layouts)), layouts)
    ratio_axis.set_ylabel("per-round time ratio (median, 95% CI)")
    ratio_axis.margins(y=0.15)
    ratio_axis.set_xlim(-0.6, len(layouts) - 0.4)
    ratio_axis.legend(loc="center right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per batch, padding included")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--number", type=int, default=5, help="forwards per arm per round")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "noise_op.json")
    args = parser.parse_args(argv)
    import transformers

    torch.set_num_threads(1)
    logging.getLogger("neft_plugins").setLevel(logging.ERROR)  # attach/detach every round
    torch.manual_seed(0)
    model = EmbeddingOnly(args.vocab, args.dim).train()
    results: dict = {
        "device": "cpu",
        "threads": 1,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "alpha": ALPHA,
        "dim": args.dim,
        "vocab": args.vocab,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "forwards_per_round": args.number,
        "command": " ".join(["python", *sys.argv]),
        "layouts": {},
    }
    for name, batch in batches(args.tokens, args.vocab).items():
        times = time_layout(model, batch, args.rounds, args.number, f"{name}: interleaved rounds")
        results["layouts"][name] = {"sequences": SEQUENCES[name], **summarise(times, batch)}
        summary = {key: value for key, value in results["layouts"][name].items() if key != "per_round_s"}
        print(json.dumps({name: summary}, indent=2))
    write_results(results, args.output, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
