"""Every test session runs offline (``support.env.OFFLINE_ENV``), and so does every process a test starts:
set here, before any test imports a framework, unless the caller set them already.

The fixtures every folder shares: ``tiny`` (with ``tiny_model`` and ``hidden_size``), the one tiny Llama and the
records every adapter's runs use; ``runs``, each command-line run once per session (``support.cli_run``); and
``doc_prelude``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.env import OFFLINE_ENV

for key, value in OFFLINE_ENV.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def doc_prelude(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment the documentation's code blocks run in: offline, with a hub cache where the model names
    they use are a tiny local Llama (``support.doc_blocks.build_prelude``); built once per session."""
    from support.doc_blocks import build_prelude

    return build_prelude(tmp_path_factory.mktemp("doc-prelude"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """The tiny Llama + tokenizer and the Alpaca and preference records every adapter's runs use
    (``support.tiny.build_tiny``), built once per session."""
    from support.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_model(tiny) -> Path:
    return tiny.model


@pytest.fixture(scope="session")
def hidden_size(tiny) -> int:
    return tiny.hidden_size


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """The session's ``support.cli_run.RunCache``: each run once, read by every test that asks for it."""
    from support.cli_run import RunCache

    return RunCache(tmp_path_factory)
