"""Session fixtures: one dataset_prepared_path, and cached ``axolotl train`` runs of the examples on the shared tiny
assets (``tests/conftest.py``'s ``tiny``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support import ROOT
from support.axolotl_cli import example_config, run_axolotl
from support.cli_run import CliRun
from support.matrix import is_newest


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``dataset_prepared_path`` for the session's runs, as users share one between runs: the examples read the
    same dataset, so Axolotl tokenizes and saves it once per hash of the settings that shape it (saving costs a
    process that imports torch, about a minute on 2 cores)."""
    return tmp_path_factory.mktemp("prepared")


@pytest.fixture(scope="session")
def train_example(tiny, prepared: Path, runs):
    """``train_example(name, **overrides)`` runs an example config once per session (``runs``).

    On the newest Axolotl the plain LoRA example runs as users who try the examples type it: Axolotl's default
    launcher (accelerate, which starts ``python -m``, putting the working directory first on ``sys.path``) from the
    repository root, where ``neft_plugins/`` is the source folder. The other runs use ``--launcher python``
    in their own folder to keep the session short.
    """

    def axolotl_example(folder: Path, name: str, **overrides: Any) -> CliRun:
        as_users_type_it = name == "lora" and not overrides and is_newest("axolotl")
        return run_axolotl(
            example_config(name, tiny, folder, dataset_prepared_path=str(prepared), **overrides),
            folder,
            launcher=None if as_users_type_it else "python",
            cwd=ROOT if as_users_type_it else None,
        )

    return runs.cached(axolotl_example)
