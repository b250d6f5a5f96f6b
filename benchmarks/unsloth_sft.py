"""Unsloth's GPU path, built-in NEFTune against ours, per sequence: the child process of ``gpu_check.py``'s
``unsloth`` check (Unsloth must be imported before transformers, TRL and PEFT, so it runs in a process of its own).

``python benchmarks/unsloth_sft.py FOLDER`` (on a CUDA device, with unsloth installed): a tiny Llama saved in FOLDER
and loaded through ``FastLanguageModel.from_pretrained(load_in_4bit=True)`` (QLoRA), LoRA through
``get_peft_model(use_gradient_checkpointing="unsloth")``, then two runs of Unsloth's SFTTrainer with its defaults
(padding-free batches, which Unsloth turns on for SFT): ``builtin`` (``neftune_noise_alpha=5``) and ``ours``
(``NEFTuneCallback(neftune_alpha=5)``). The first-block spy (``tests/support/trainer_spy.py``) measures what the
first decoder layer gets on every training pass; ``FOLDER/unsloth_sft.json`` holds, per run, each sequence's tokens
and noise norm, the largest noise on a padding position, and each pass's rows and sequences.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import unsloth  # noqa: F401  # first, as Unsloth asks: it patches transformers, TRL and PEFT when imported

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # support.tiny, support.trainer_spy
from datasets import Dataset
from trl import SFTConfig, SFTTrainer
from unsloth import FastLanguageModel

from neft_plugins import NEFTuneCallback
from support.tiny import make_llama, make_tokenizer, short_run_args, text_records
from support.trainer_spy import SpyCallback

ALPHA = 5.0
HIDDEN = 256  # head_dim 64, as Unsloth's kernels expect of real models
MAX_LENGTH = 256


def run(folder: Path, name: str, builtin: bool) -> dict[str, Any]:
    model, tokenizer = FastLanguageModel.from_pretrained(
        str(folder / "model"), max_seq_length=MAX_LENGTH, load_in_4bit=True
    )
    model = FastLanguageModel.get_peft_model(model, r=8, use_gradient_checkpointing="unsloth")
    neftune = None if builtin else NEFTuneCallback(neftune_alpha=ALPHA)
    spy = SpyCallback(neftune)
    settings = {"neftune_noise_alpha": ALPHA} if builtin else {}
    args = short_run_args(
        SFTConfig, folder / name, max_steps=2, per_device_train_batch_size=4, seed=0, **settings
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(text_records(32, lengths=range(3, 41))),
        processing_class=tokenizer,
        callbacks=[spy] if neftune is None else [neftune, spy],
    )
    trainer.train()
    passes = list(spy.training_passes())
    return {
        "sequences": [each.sequences() for each in passes],
        "padding_max": max(each.largest_padding_noise() for each in passes),
        "rows": [each.rows for each in passes],
        "row_lengths": [each.segments.shape[1] for each in passes],
        "padding_free": getattr(trainer.args, "padding_free", None),
    }


def main(folder: Path) -> None:
    make_tokenizer().save_pretrained(folder / "model")
    make_llama(hidden_size=HIDDEN, layers=2).save_pretrained(folder / "model")
    runs = {name: run(folder, name, builtin=name == "builtin") for name in ("builtin", "ours")}
    (folder / "unsloth_sft.json").write_text(json.dumps(runs))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
