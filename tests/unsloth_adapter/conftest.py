"""Unsloth's CPU backend in the test process, as in a user's script: ``import unsloth`` comes before transformers,
TRL and PEFT (it patches them when imported; on a machine without a GPU it selects ``unsloth/_cpu_init.py``, where
``FastLanguageModel`` is ``FastCPUModel`` over stock transformers + PEFT + TRL), then FastLanguageModel loads the
shared tiny Llama folder (``tests/conftest.py``'s ``tiny_model``). Nothing comes from a model hub."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import unsloth  # noqa: F401  # first, as Unsloth asks: it patches transformers, TRL and PEFT when imported
from datasets import Dataset
from unsloth import FastLanguageModel
from unsloth_runs import MAX_LENGTH, sft_records


@pytest.fixture(scope="session")
def dataset() -> Dataset:
    """Every batch of 4 is right-padded to its longest."""
    return Dataset.from_list(sft_records())


@pytest.fixture
def load() -> Callable[..., tuple[torch.nn.Module, object]]:
    """``FastLanguageModel.from_pretrained`` on the tiny folder (float32; 4-bit with ``load_in_4bit``: QLoRA
    through bitsandbytes' CPU backend), LoRA r=8 through ``get_peft_model`` unless ``full_finetuning``."""

    def build(folder: Path, full_finetuning: bool = False, load_in_4bit: bool = False):
        model, tokenizer = FastLanguageModel.from_pretrained(
            str(folder),
            max_seq_length=MAX_LENGTH,
            dtype=torch.float32,
            load_in_4bit=load_in_4bit,
            full_finetuning=full_finetuning,
        )
        if not full_finetuning:
            model = FastLanguageModel.get_peft_model(model, r=8)
        return model, tokenizer

    return build
