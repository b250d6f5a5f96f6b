"""Runs the real ``axolotl train`` CLI on the example configs, with the tiny local Llama and jsonl data
(``support.tiny``), through ``support.cli_run``.

Each example config in ``example_configs/axolotl/`` is used as users would copy it; only what cannot run
here is overridden: the model and dataset paths (no hub), the output folders, a few steps with a log at
each one, and the GPU-only switches (flash-attention -> sdpa, Axolotl's CUDA LoRA kernels, bf16).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from support import ROOT
from support.cli_run import CliRun, run_cli
from support.tiny import Tiny

EXAMPLES = ROOT / "example_configs" / "axolotl"
ALPACA_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}"
)
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
    # Axolotl's default is one worker process per core, each importing torch for a map over ~100 records.
    "dataset_num_proc": 1,
}
SEQUENCE_LEN = 256  # the longest tiny record is ~110 tokens; shorter values drop samples


def longest_alpaca_tokens(model_dir: Path, records: list[dict]) -> int:
    """An upper bound on one record's length in tokens with Alpaca's template (plus BOS and EOS)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [ALPACA_TEMPLATE.format(**record) for record in records]
    return 2 + max(len(tokenizer(text, add_special_tokens=False).input_ids) for text in texts)


def example_config(name: str, tiny: Tiny, folder: Path, **overrides: Any) -> dict[str, Any]:
    """``example_configs/axolotl/<name>.yml`` pointed at the tiny local assets, ready for the CPU."""
    config = yaml.safe_load((EXAMPLES / f"{name}.yml").read_text(encoding="utf-8"))
    data = tiny.dpo if config.get("rl") else tiny.alpaca
    config["base_model"] = str(tiny.model)
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


def run_axolotl(
    config: dict[str, Any],
    folder: Path,
    launcher: str | None = None,
    cwd: Path | None = None,
    launcher_args: Sequence[str] = (),
    spy: bool = False,
    **env: str,
) -> CliRun:
    """``axolotl train config.yml [--launcher ...] [-- launcher_args]`` run in ``cwd`` (default ``folder``), its
    stdout and stderr one stream (``run.text``: the callback's lines and the step logs in order).

    The default launcher (``accelerate``) is what users get; ``python`` trains in the CLI's own process,
    which saves two interpreter start-ups (~20-30 s on 2 cores) per run.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    launch = [
        *(["--launcher", launcher] if launcher else []),
        *(["--", *launcher_args] if launcher_args else []),
    ]
    return run_cli(
        ["axolotl", "train", path, *launch],
        cwd or folder,
        folder=folder,
        output_dir=Path(config["output_dir"]),
        spy=spy,
        merged=True,
        config=config,
        **{"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), **env},
    )
