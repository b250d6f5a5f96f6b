"""Step time and peak memory of NEFTune: none vs neft-plugins vs transformers' built-in hook.

Arms run interleaved (round-robin, rotating order) on the same model and batches, so drift on a shared
machine hits every arm alike. Reports medians, their ratios with a bootstrap 95% interval, and peak memory
(CUDA: max allocated; CPU: the profiler's allocation timeline).

    python benchmarks/overhead.py                   # tiny + mid-size Llama, writes benchmarks/results/overhead.json
    python benchmarks/overhead.py --sizes tiny --rounds 5
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ARMS = ("none", "ours", "builtin")
SIZES = {
    "tiny": {"hidden_size": 64, "layers": 2, "vocab": 1000, "batch": 8, "length": 128},
    "mid": {"hidden_size": 1024, "layers": 8, "vocab": 8000, "batch": 2, "length": 128},
}
ALPHA = 5.0


def build(size: dict, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=size["vocab"],
        hidden_size=size["hidden_size"],
        intermediate_size=size["hidden_size"] * 11 // 4,
        num_hidden_layers=size["layers"],
        num_attention_heads=max(1, size["hidden_size"] // 64),
        num_key_value_heads=max(1, size["hidden_size"] // 128),
        max_position_embeddings=size["length"],
    )
    model = LlamaForCausalLM(config).to(device).train()
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, size["vocab"], (size["batch"], size["length"]), generator=generator)
    mask = torch.ones_like(input_ids)
    for row in range(size["batch"]):  # dynamic padding: rows of different real lengths
        mask[row, torch.randint(size["length"] // 4, size["length"] + 1, (1,), generator=generator) :] = 0
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": input_ids.masked_fill(mask == 0, -100)}
    return model, {key: value.to(device) for key, value in batch.items()}


def rotated(round_index: int, arms: tuple[str, ...] = ARMS) -> tuple[str, ...]:
    """`arms` in the order of one round: each round starts one arm later, so no arm always goes first."""
    shift = round_index % len(arms)
    return arms[shift:] + arms[:shift]


class Arm:
    """Attach one arm's NEFTune (or none) for the duration of a block."""

    def __init__(self, name: str, model) -> None:
        self.name, self.model = name, model

    def __enter__(self):
        if self.name == "ours":
            from neft_plugins import attach

            self.handle = attach(self.model, neftune_alpha=ALPHA)
        elif self.name == "builtin":
            from neft_plugins import transformers_neftune

            self.handle = transformers_neftune.activate(self.model, ALPHA)
        return self

    def __exit__(self, *exc) -> None:
        if self.name == "ours":
            self.handle.detach()
        elif self.name == "builtin":
            from neft_plugins import transformers_neftune

            transformers_neftune.deactivate(self.model, self.handle)


def step(model, optimizer, batch, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_arms(size_name: str, rounds: int, steps: int, device: str) -> tuple[dict[str, list[float]], dict]:
    from tqdm import tqdm

    model, batch = build(SIZES[size_name], device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for arm in ARMS:  # warm-up: allocator, kernels, optimizer state
        with Arm(arm, model):
            step(model, optimizer, batch, device)
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for round_index in tqdm(range(rounds), desc=f"{size_name}: interleaved rounds"):
        for arm in rotated(round_index):
            with Arm(arm, model):
                times[arm] += [step(model, optimizer, batch, device) for _ in range(steps)]
    peaks = {}
    for arm in ARMS:
        with Arm(arm, model):
            peaks[arm] = peak_memory_mb(model, optimizer, batch, device)
    return times, peaks


def ratio_interval(
    numerator: list[float], denominator: list[float], draws: int = 2000
) -> tuple[float, float]:
    rng = random.Random(0)
    ratios = sorted(
        statistics.median(rng.choices(numerator, k=len(numerator)))
        / statistics.median(rng.choices(denominator, k=len(denominator)))
        for _ in range(draws)
    )
    return ratios[int(0.025 * draws)], ratios[int(0.975 * draws)]


def peak_memory_mb(model, optimizer, batch, device: str) -> float:
    """Peak memory of one training step: CUDA's max_memory_allocated, or on CPU the running sum of
    every allocation and free the profiler records (CPU has no peak counter of its own)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        step(model, optimizer, batch, device)
        return torch.cuda.max_memory_allocated() / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step(model, optimizer, batch, device)
    events = sorted(
        (e for e in profiler.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start
    )
    running = peak = 0
    for event in events:
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return peak / 2**20


def write_results(results: dict, output: Path, plot: Callable[[dict, Path], None]) -> None:
    """``output`` (JSON) and, beside it, the same name as a PNG drawn by ``plot``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, output.with_suffix(".png"))
    print(f"wrote {output} and {output.with_suffix('.png')}")


def plot(results: dict, sizes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(sizes), figsize=(4.5 * len(sizes), 3.5), squeeze=False)
    for axis, size_name in zip(axes[0], sizes, strict=True):
        medians = results[size_name]["median_step_s"]
        axis.bar(list(medians), [medians[arm] * 1000 for arm in medians], color=["#999", "#2a7", "#c62"])
        axis.set_title(f"{size_name}: median step (ms), {results['device']}")
        axis.set_ylabel("ms")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="steps per arm per round")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "overhead.json")
    args = parser.parse_args(argv)
    results = {
        "device": args.device,
        "torch": torch.__version__,
        "alpha": ALPHA,
        "command": " ".join(sys.argv),
    }
    for size_name in args.sizes:
        times, peaks = time_arms(size_name, args.rounds, args.steps, args.device)
        size = SIZES[size_name]
        embedding_mb = size["batch"] * size["length"] * size["hidden_size"] * 4 / 2**20
        medians = {arm: statistics.median(values) for arm, values in times.items()}
        results[size_name] = {
            "config": size,
            "steps_per_arm": len(times["none"]),
            "median_step_s": medians,
            "ours_over_none": medians["ours"] / medians["none"],
            "ours_over_none_95ci": ratio_interval(times["ours"], times["none"]),
            "ours_over_builtin": medians["ours"] / medians["builtin"],
            "ours_over_builtin_95ci": ratio_interval(times["ours"], times["builtin"]),
            "peak_memory_mb": peaks,
            "extra_peak_mb_ours_vs_none": peaks["ours"] - peaks["none"],
            "one_embedding_tensor_mb": embedding_mb,
        }
        print(json.dumps({size_name: results[size_name]}, indent=2))
    write_results(results, args.output, lambda results, path: plot(results, args.sizes, path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
