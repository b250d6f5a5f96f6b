from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.tiny import alpaca_records, make_llama, make_tokenizer, write_jsonl

CHATML = (
    "{% for message in messages %}{{ '<bos> ' + message['role'] + ' ' + message['content'] + ' <eos> ' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<bos> assistant ' }}{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny Llama and a locally built word-level tokenizer with a chat template, saved to disk."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHATML
    tokenizer.add_tokens(["user", "assistant", "system"])
    model = make_llama(hidden_size=32, layers=2)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def demo_records(count: int, seed: int) -> list[dict]:
    return alpaca_records(count, seed, instruction=range(3, 9), output=range(16, 31))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tiny-data")
    train = folder / "train.json"
    train.write_text(json.dumps(demo_records(24, 0)))
    return train, write_jsonl(folder / "heldout.jsonl", demo_records(8, 1))
