"""Session fixtures: the tiny local assets, built once, and cached ``axolotl train`` runs of the examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.axolotl_cli import AxolotlRun, build_assets, example_config, run_axolotl
from support.matrix import is_newest

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny Llama + tokenizer and the jsonl datasets, built once per session."""
    return build_assets(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``dataset_prepared_path`` for the session's runs, as users share one between runs: the examples read the
    same dataset, so Axolotl tokenizes and saves it once per hash of the settings that shape it (saving costs a
    process that imports torch, about a minute on 2 cores)."""
    return tmp_path_factory.mktemp("prepared")


@pytest.fixture(scope="session")
def train_example(tiny: dict[str, Path], prepared: Path, tmp_path_factory: pytest.TempPathFactory):
    """``train_example(name, **overrides)`` runs an example config once per session and caches the run.

    On the newest Axolotl the plain LoRA example runs as users who try the examples type it: Axolotl's default
    launcher (accelerate, which starts ``python -m``, putting the working directory first on ``sys.path``) from the
    repository root, where ``neft_plugins/`` is the source folder. The other runs use ``--launcher python``
    in their own folder to keep the session short.
    """
    runs: dict[tuple, AxolotlRun] = {}

    def train(name: str, **overrides: Any) -> AxolotlRun:
        key = (name, tuple(sorted(overrides.items())))
        if key not in runs:
            folder = tmp_path_factory.mktemp(f"axolotl-{name}")
            as_users_type_it = key == ("lora", ()) and is_newest("axolotl")
            runs[key] = run_axolotl(
                example_config(name, tiny, folder, dataset_prepared_path=str(prepared), **overrides),
                folder,
                launcher=None if as_users_type_it else "python",
                cwd=REPOSITORY_ROOT if as_users_type_it else None,
            )
        return runs[key]

    return train
