"""Fixtures for the LLaMA-Factory tests: the shared tiny records (``tests/conftest.py``'s ``tiny``) as a LLaMA-Factory
dataset folder. Nothing comes from the model hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import support.llamafactory_cli  # noqa: F401 - the torchaudio stub, where torchaudio is missing


@pytest.fixture(scope="session")
def tiny_data(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Alpaca records as the dataset ``tiny_alpaca`` of a dataset folder (dataset_info.json)."""
    folder = tmp_path_factory.mktemp("tiny-data")
    shutil.copy(tiny.alpaca, folder / "tiny_alpaca.jsonl")
    (folder / "dataset_info.json").write_text(json.dumps({"tiny_alpaca": {"file_name": "tiny_alpaca.jsonl"}}))
    return folder
