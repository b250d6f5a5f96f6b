"""Fixtures for the MLX-LM tests: the tiny local Llama and data of ``mlx_adapter.assets``, and the documentation's
hub cache with MLX's tiny Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlx_adapter.assets import save_mlx_llama, save_model_dir, write_data


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model_dir(tmp_path_factory.mktemp("tiny-mlx-llama"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data(tmp_path_factory.mktemp("tiny-mlx-data"))


@pytest.fixture(scope="session")
def doc_prelude(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The documentation's hub cache with MLX's tiny Llama (no torch here to build transformers')."""
    from support.doc_blocks import build_prelude

    return build_prelude(tmp_path_factory.mktemp("doc-prelude"), save_model=save_mlx_llama)
