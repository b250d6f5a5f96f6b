"""Fixtures for the LLaMA-Factory tests: a tiny local Llama and a local dataset.

Nothing comes from the model hub: the model and tokenizer are built by ``support.tiny``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import support.llamafactory_cli  # noqa: F401 - the torchaudio stub, where torchaudio is missing
from support.tiny import alpaca_records, save_tiny_llama


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), hidden_size=64)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An alpaca-style dataset in the tiny model's vocabulary, with dataset_info.json."""
    folder = tmp_path_factory.mktemp("tiny-data")
    records = alpaca_records(32, 0, instruction=(3, 8, 20), output=(3, 10, 30))
    (folder / "tiny_alpaca.json").write_text(json.dumps(records))
    (folder / "dataset_info.json").write_text(json.dumps({"tiny_alpaca": {"file_name": "tiny_alpaca.json"}}))
    return folder
