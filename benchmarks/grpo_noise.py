"""What NEFTune's noise does to TRL's GRPO importance ratio, KL and clip fractions (tiny run on CPU).

With ``NEFTuneCallback`` only grad-enabled training passes are noised. In ``GRPOTrainer`` that is the policy
pass that carries the gradient; generation, the old-policy pass (computed when ``num_iterations > 1``) and the
reference pass run under ``no_grad`` and stay clean. So the ratio ``exp(logp_policy - logp_old)`` and the KL
to the reference compare a noised pass with clean ones. Before the first update (step 0) the policy, the old
policy and the reference are the same weights: without noise the ratio is exactly 1 and the KL exactly 0, so
whatever the noised arms show at step 0 is the noise alone.

Arms: no callback, and ``NEFTuneCallback(neftune_alpha=A)`` for A in 0, 5, 15; each with ``num_iterations``
1 and 2, over several seeds (same seed, model and rollouts in every arm), for two embedding scales of the tiny
random Llama: as initialised (per-sequence noise/embedding norm about 4.5 at alpha 5: far noisier than a real
model), and embeddings multiplied by ``EMBED_SCALE`` (about 0.11 at alpha 5, what SmolLM2-135M on Alpaca logs
in ``benchmarks/results/arms``). Besides what TRL logs (``kl``, ``clip_ratio/*``, ``loss``), the script reads
the importance ratio itself over the completion tokens, by wrapping the trainer's ``_compute_loss`` and
``_get_per_token_logps_and_entropies`` (TRL >= 0.20; the run here used TRL 1.16).

    .nox/demo_tests/bin/python benchmarks/grpo_noise.py            # needs trl, matplotlib, tqdm
    .nox/demo_tests/bin/python benchmarks/grpo_noise.py --seeds 2  # quicker

Writes ``benchmarks/results/grpo_noise.json`` and ``grpo_noise.png``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import random
import statistics
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import torch  # noqa: E402

from support.tiny import WORDS, make_llama, make_tokenizer, sentence  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
ARMS: dict[str, float | None] = {"none": None, "a0": 0.0, "a5": 5.0, "a15": 15.0}  # name: callback's alpha
ITERATIONS = (1, 2)
# SmolLM2-135M on Alpaca logs neft/noise_norm / neft/embed_norm = 8.66 / 25.2 at alpha 15, i.e. 0.115 at
# alpha 5; the tiny Llama as initialised logs about 4.5 at alpha 5, so its embeddings are scaled by 40.
EMBED_SCALES = {"tiny-init": 1.0, "embed-x40": 40.0}
TARGET = frozenset(WORDS[:20])  # the reward: fraction of completion words in this set
EPSILON = 0.2  # TRL's default clip range
STEPS = 2
METRICS = (
    "loss",
    "kl",
    "clip_ratio/region_mean",
    "clip_ratio/low_mean",
    "clip_ratio/high_mean",
    "entropy",
    "reward",
    "neft/noise_norm",
    "neft/embed_norm",
)
RATIO_METRICS = ("ratio/mean_abs_dev", "ratio/min", "ratio/max", "ratio/outside_clip")
T95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}  # t(0.975, n-1)


def reward_in_target(completions: list[str], **_: Any) -> list[float]:
    return [sum(word in TARGET for word in text.split()) / max(1, len(text.split())) for text in completions]


class RatioProbe:
    """Reads the importance ratio over the completion tokens of every loss computation."""

    def __init__(self, trainer: Any) -> None:
        self.steps: list[dict[str, float]] = []
        self._policy_logps: torch.Tensor | None = None
        trainer._get_per_token_logps_and_entropies = self._keep_policy(
            trainer._get_per_token_logps_and_entropies
        )
        trainer._compute_loss = self._measure(trainer._compute_loss)

    def _keep_policy(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if torch.is_grad_enabled():  # the policy pass; old-policy and reference passes run under no_grad
                self._policy_logps = result[0].detach()
            return result

        return wrapped

    def _measure(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapped(model: Any, inputs: dict[str, Any]) -> Any:
            loss = method(model, inputs)
            assert self._policy_logps is not None
            old = inputs.get("old_per_token_logps")
            log_ratio = self._policy_logps - (self._policy_logps if old is None else old)
            ratio = log_ratio.exp()[inputs["completion_mask"].bool()]
            self.steps.append(
                {
                    "ratio/mean_abs_dev": float((ratio - 1).abs().mean()),
                    "ratio/min": float(ratio.min()),
                    "ratio/max": float(ratio.max()),
                    "ratio/outside_clip": float(
                        ((ratio < 1 - EPSILON) | (ratio > 1 + EPSILON)).float().mean()
                    ),
                }
            )
            return loss

        return wrapped


def save_model(folder: Path, seed: int, embed_scale: float) -> None:
    model = make_llama(seed=seed)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(embed_scale)
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)


def run_arm(
    model_dir: Path, alpha: float | None, iterations: int, seed: int, out: Path
) -> list[dict[str, float]]:
    """One GRPO run of STEPS steps; per step, what TRL logged and the ratio statistics."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from neft_plugins import NEFTuneCallback

    rng = random.Random(seed)
    dataset = Dataset.from_list([{"prompt": sentence(rng, range(4, 13))} for _ in range(32)])
    args = GRPOConfig(
        output_dir=str(out),
        max_steps=STEPS,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=12,
        beta=0.04,
        epsilon=EPSILON,
        num_iterations=iterations,
        use_cpu=True,
        bf16=False,
        seed=seed,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
    )
    callbacks = [] if alpha is None else [NEFTuneCallback(neftune_alpha=alpha)]
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=reward_in_target,
        args=args,
        train_dataset=dataset,
        processing_class=make_tokenizer(),
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # the per-step log dicts; they go to the JSON instead
    probe = RatioProbe(trainer)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == len(probe.steps) == STEPS, (len(logged), len(probe.steps))
    return [
        {"step": step, **{key: entry[key] for key in METRICS if key in entry}, **ratios}
        for step, (entry, ratios) in enumerate(zip(logged, probe.steps, strict=True))
    ]


def mean_std(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def paired_ci(values: list[float], baseline: list[float]) -> list[float]:
    """95% t interval of the mean paired difference (values - baseline)."""
    differences = [value - base for value, base in zip(values, baseline, strict=True)]
    half = T95.get(len(differences), 1.96) * statistics.stdev(differences) / math.sqrt(len(differences))
    mean = statistics.fmean(differences)
    return [mean - half, mean + half]


def per_seed(
    runs: list[dict[str, Any]], arm_key: tuple[str, int, str], step: int, metric: str
) -> list[float]:
    """``metric`` at ``step`` in every seed's run of the arm ``(scale, iterations, arm)``, in seed order."""
    return [
        run["steps"][step][metric]
        for run in runs
        if (run["scale"], run["iterations"], run["arm"]) == arm_key and metric in run["steps"][step]
    ]


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (scale, iterations, step, arm): mean ± std over seeds, and the paired difference to ``none``."""
    rows = []
    for scale in EMBED_SCALES:
        for iterations in ITERATIONS:
            for step in range(STEPS):
                for arm in ARMS:
                    row: dict[str, Any] = {"scale": scale, "iterations": iterations, "step": step, "arm": arm}
                    for metric in (*METRICS, *RATIO_METRICS):
                        values = per_seed(runs, (scale, iterations, arm), step, metric)
                        if not values:
                            continue
                        row[metric] = mean_std(values)
                        baseline = per_seed(runs, (scale, iterations, "none"), step, metric)
                        if arm != "none" and len(baseline) == len(values) > 1:
                            row[metric]["diff_vs_none_ci95"] = paired_ci(values, baseline)
                    rows.append(row)
    return rows


def find_row(rows: list[dict[str, Any]], scale: str, iterations: int, step: int, arm: str) -> dict[str, Any]:
    return next(
        row
        for row in rows
        if (row["scale"], row["iterations"], row["step"], row["arm"]) == (scale, iterations, step, arm)
    )


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("kl", 1, "step-0 KL to reference (num_iterations=1)"),
        ("ratio/mean_abs_dev", 2, "step-0 mean |ratio - 1| (num_iterations=2)"),
        ("clip_ratio/region_mean", 2, "step-0 clip fraction (num_iterations=2)"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(12, 3.4))
    arms = list(ARMS)
    for axis, (metric, iterations, title) in zip(axes, panels, strict=True):
        for offset, scale in enumerate(EMBED_SCALES):
            selected = [find_row(rows, scale, iterations, 0, arm) for arm in arms]
            positions = [index + (offset - 0.5) * 0.38 for index in range(len(arms))]
            axis.bar(
                positions,
                [row[metric]["mean"] for row in selected],
                width=0.38,
                yerr=[row[metric]["std"] for row in selected],
                capsize=3,
                label=scale,
            )
        axis.set_xticks(range(len(arms)), arms)
        axis.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def versions() -> dict[str, str]:
    import importlib.metadata

    return {name: importlib.metadata.version(name) for name in ("torch", "transformers", "trl")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    options = parser.parse_args()

    from tqdm import tqdm
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("neft_plugins").setLevel(logging.ERROR)  # attach/detach notices, once per run
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    grid = [
        (scale, seed, iterations, arm)
        for scale in EMBED_SCALES
        for seed in range(options.seeds)
        for iterations in ITERATIONS
        for arm in ARMS
    ]
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for scale, seed, iterations, arm in tqdm(grid, desc="GRPO runs"):
            model_dir = Path(scratch) / f"{scale}-s{seed}"
            if not model_dir.exists():
                save_model(model_dir, seed, EMBED_SCALES[scale])
            steps = run_arm(model_dir, ARMS[arm], iterations, seed, Path(scratch) / "out")
            runs.append({"scale": scale, "seed": seed, "iterations": iterations, "arm": arm, "steps": steps})

    rows = summarise(runs)
    options.out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": "python benchmarks/grpo_noise.py " + " ".join(sys.argv[1:]),
        "versions": versions(),
        "setup": {
            "arms": ARMS,
            "embed_scales": EMBED_SCALES,
            "num_iterations": ITERATIONS,
            "seeds": options.seeds,
            "steps": STEPS,
            "per_device_train_batch_size": 8,
            "num_generations": 4,
            "max_completion_length": 12,
            "beta": 0.04,
            "epsilon": EPSILON,
            "learning_rate": "TRL default",
            "model": "make_llama(seed=seed): hidden 64, 2 layers; make_tokenizer() word-level vocabulary",
        },
        "summary": rows,
        "runs": runs,
    }
    (options.out / "grpo_noise.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    plot(rows, options.out / "grpo_noise.png")
    print(f"wrote {options.out / 'grpo_noise.json'} and grpo_noise.png")


if __name__ == "__main__":
    main()
