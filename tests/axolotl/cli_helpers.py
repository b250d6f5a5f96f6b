"""Runs the real ``axolotl train`` CLI on the example configs, with a tiny local Llama and local jsonl data.

Each example config in ``example_configs/axolotl/`` is used as users would copy it; only what cannot run
here is overridden: the model and dataset paths (no hub), the output folders, a few steps with a log at
each one, and the GPU-only switches (flash-attention -> sdpa, Axolotl's CUDA LoRA kernels, bf16).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "example_configs" / "axolotl"
# What the CPU test machine cannot do, and the step budget of a test run.
CPU_OVERRIDES: dict[str, Any] = {
    "lora_mlp_kernel": False,
    "lora_qkv_kernel": False,
    "lora_o_kernel": False,
    "lora_embedding_kernel": False,
    "bf16": False,
    "tf32": False,
    "max_steps": 3,
    "logging_steps": 1,
    "save_strategy": "no",
    "micro_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "seed": 42,
}
SEQUENCE_LEN = 256  # the longest tiny record is ~110 tokens; shorter values drop samples
RUN_TIMEOUT_S = 600
METRICS = re.compile(r"\{'loss': .*?\}")
ATTACHED = "neft_plugins: attached NEFTune to"
DETACHED = "neft_plugins: detached NEFTune from"


@dataclass
class AxolotlRun:
    config: dict[str, Any]
    returncode: int
    output: str
    steps: list[dict[str, float]] = field(default_factory=list)

    def metric(self, key: str) -> list[float]:
        return [step[key] for step in self.steps]

    def describe(self) -> str:
        return f"axolotl train exited {self.returncode}; last output:\n{self.output[-6000:]}"


def parse_steps(output: str) -> list[dict[str, float]]:
    """The per-step training logs the CLI prints: ``{'loss': '4.613', 'neft/noise_norm': '2.882', ...}``."""
    steps = []
    for match in METRICS.finditer(output):
        logs = ast.literal_eval(match.group(0))
        steps.append({key: float(value) for key, value in logs.items()})
    return steps


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    # Axolotl's CLI starts `accelerate` by name: the environment's bin must be on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_MODE="disabled",
        AXOLOTL_DO_NOT_TRACK="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"),
    )
    return env


def example_config(name: str, tiny: dict[str, Path], folder: Path, **overrides: Any) -> dict[str, Any]:
    """``example_configs/axolotl/<name>.yml`` pointed at the tiny local assets, ready for the CPU."""
    config = yaml.safe_load((EXAMPLES / f"{name}.yml").read_text(encoding="utf-8"))
    data = tiny["dpo"] if config.get("rl") else tiny["alpaca"]
    config["base_model"] = str(tiny["model"])
    config["datasets"] = [
        {**dataset, "path": str(data), "ds_type": "json", "split": "train"} for dataset in config["datasets"]
    ]
    config["output_dir"] = str(folder / "output")
    config["dataset_prepared_path"] = str(folder / "prepared")
    config["sequence_len"] = SEQUENCE_LEN
    config.update(CPU_OVERRIDES)
    if str(config.get("attn_implementation", "")).startswith("flash_attention"):
        config["attn_implementation"] = "sdpa"  # no flash-attn on CPU; sdpa also isolates packed sequences
    config.update(overrides)
    return config


def run_axolotl(config: dict[str, Any], folder: Path, launcher: str | None = None) -> AxolotlRun:
    """``axolotl train config.yml [--launcher ...]``; the output is kept in ``folder/axolotl.log``.

    The default launcher (``accelerate``) is what users get; ``python`` trains in the CLI's own process,
    which saves two interpreter start-ups (~20-30 s on 2 cores) per run.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    process = subprocess.run(
        ["axolotl", "train", str(path), *(["--launcher", launcher] if launcher else [])],
        cwd=folder,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    (folder / "axolotl.log").write_text(process.stdout, encoding="utf-8")
    return AxolotlRun(config, process.returncode, process.stdout, parse_steps(process.stdout))
