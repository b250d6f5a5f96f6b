from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHATML = (
    "{% for message in messages %}{{ '<bos> ' + message['role'] + ' ' + message['content'] + ' <eos> ' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<bos> assistant ' }}{% endif %}"
)


def _words():
    from tiny import WORDS

    return WORDS


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny Llama and a locally built word-level tokenizer with a chat template, saved to disk."""
    from tiny import make_llama, make_tokenizer

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHATML
    tokenizer.add_tokens(["user", "assistant", "system"])
    model = make_llama(hidden_size=32, layers=2)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def alpaca_records(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    words = _words()
    return [
        {
            "instruction": " ".join(rng.choice(words) for _ in range(rng.randint(3, 8))),
            "input": "",
            "output": " ".join(rng.choice(words) for _ in range(rng.randint(16, 30))),
        }
        for _ in range(count)
    ]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tiny-data")
    train = folder / "train.json"
    train.write_text(json.dumps(alpaca_records(24, 0)))
    heldout = folder / "heldout.jsonl"
    heldout.write_text("\n".join(json.dumps(r) for r in alpaca_records(8, 1)))
    return train, heldout
