"""Fixtures for the LLaMA-Factory tests: a tiny local Llama and a local dataset.

Nothing comes from the model hub: the model and tokenizer are built from ``tests/tiny.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import lf_helpers  # noqa: F401 - puts tests/ (tiny.py) and, if needed, the torchaudio stub on sys.path
import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import tiny

    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny.make_tokenizer().save_pretrained(folder)
    tiny.make_llama(hidden_size=64, layers=2).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An alpaca-style dataset in the tiny model's vocabulary, with dataset_info.json."""
    import random

    import tiny

    folder = tmp_path_factory.mktemp("tiny-data")
    rng = random.Random(0)
    records = [
        {
            "instruction": tiny.sentence(rng, rng.choice((3, 8, 20))),
            "input": "",
            "output": tiny.sentence(rng, rng.choice((3, 10, 30))),
        }
        for _ in range(32)
    ]
    (folder / "tiny_alpaca.json").write_text(json.dumps(records))
    (folder / "dataset_info.json").write_text(json.dumps({"tiny_alpaca": {"file_name": "tiny_alpaca.json"}}))
    return folder
