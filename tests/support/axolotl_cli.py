"""Runs the real ``axolotl train`` CLI on the example configs, with a tiny local Llama and local jsonl data.

Each example config in ``example_configs/axolotl/`` is used as users would copy it; only what cannot run
here is overridden: the model and dataset paths (no hub), the output folders, a few steps with a log at
each one, and the GPU-only switches (flash-attention -> sdpa, Axolotl's CUDA LoRA kernels, bf16).

Run as a module to build the tiny assets into a folder, e.g. to try the example configs by hand:
    PYTHONPATH=tests python -m support.axolotl_cli /tmp/neft-tiny
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from support import ROOT
from support.env import subprocess_env
from support.logs import printed_metrics
from support.tiny import (
    CHAT_SPECIALS,
    alpaca_records,
    dpo_records,
    make_llama,
    make_tokenizer,
    vocabulary,
    write_jsonl,
)

EXAMPLES = ROOT / "example_configs" / "axolotl"
# Alpaca's and ChatML's template words, in the vocabulary beside the data's words.
TEMPLATE_WORDS = (
    "Below is an instruction that describes a task paired with input provides further context Write "
    "response appropriately completes the request Instruction Input Response system user assistant "
    "### : , . \n"
).split()
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
RUN_TIMEOUT_S = 600


def build_assets(folder: Path) -> dict[str, Path]:
    """A tiny Llama + chat tokenizer in ``folder/model``, ``folder/alpaca.jsonl`` and ``folder/dpo.jsonl``.

    The Alpaca records are about 30 to 110 tokens long with Alpaca's template."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model"
    vocab_size = len(vocabulary(CHAT_SPECIALS, TEMPLATE_WORDS))
    make_llama(
        vocab_size=vocab_size, max_position_embeddings=1024, tie_word_embeddings=False
    ).save_pretrained(model)
    make_tokenizer(CHAT_SPECIALS, TEMPLATE_WORDS).save_pretrained(model)
    alpaca = alpaca_records(96, 0, instruction=range(2, 13), output=range(3, 61), inputs=range(11))
    return {
        "model": model,
        "alpaca": write_jsonl(folder / "alpaca.jsonl", alpaca),
        "dpo": write_jsonl(folder / "dpo.jsonl", dpo_records(48)),
    }


def longest_alpaca_tokens(model_dir: Path, records: list[dict]) -> int:
    """An upper bound on one record's length in tokens with Alpaca's template (plus BOS and EOS)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [ALPACA_TEMPLATE.format(**record) for record in records]
    return 2 + max(len(tokenizer(text, add_special_tokens=False).input_ids) for text in texts)


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


def run_axolotl(
    config: dict[str, Any],
    folder: Path,
    launcher: str | None = None,
    cwd: Path | None = None,
    launcher_args: Sequence[str] = (),
    paths: Sequence[Path] = (),
    **env: str,
) -> AxolotlRun:
    """``axolotl train config.yml [--launcher ...] [-- launcher_args]`` run in ``cwd`` (default ``folder``), with
    ``paths`` after ``tests/`` on PYTHONPATH and ``env`` set; the output is kept in ``folder/axolotl.log``.

    The default launcher (``accelerate``) is what users get; ``python`` trains in the CLI's own process,
    which saves two interpreter start-ups (~20-30 s on 2 cores) per run.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    process_env = subprocess_env(
        *paths,
        **{
            # Axolotl's CLI starts `accelerate` by name: the environment's bin must be on PATH.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
            **env,
        },
    )
    launch = [
        *(["--launcher", launcher] if launcher else []),
        *(["--", *launcher_args] if launcher_args else []),
    ]
    process = subprocess.run(
        ["axolotl", "train", str(path), *launch],
        cwd=cwd or folder,
        env=process_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    (folder / "axolotl.log").write_text(process.stdout, encoding="utf-8")
    return AxolotlRun(config, process.returncode, process.stdout, printed_metrics(process.stdout))


if __name__ == "__main__":
    for name, path in build_assets(Path(sys.argv[1] if len(sys.argv) > 1 else "neft-tiny")).items():
        print(f"{name}: {path}")
