"""Every test session runs offline (``support.env.OFFLINE_ENV``), and so does every process a test starts:
set here, before any test imports a framework, unless the caller set them already."""

from __future__ import annotations

import os

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
