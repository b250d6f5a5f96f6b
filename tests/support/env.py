"""The environment every test session and every process a test starts runs in: offline, quiet, unbuffered.

``tests/conftest.py`` sets ``OFFLINE_ENV`` (where not already set) before any test imports a framework.
"""

from __future__ import annotations

import os
from pathlib import Path

from support import TESTS

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
    "DISABLE_VERSION_CHECK": "1",  # LLaMA-Factory's check of its pinned dependencies
    "BROWSER": "true",  # gradio's launch(inbrowser=True) must not open a browser of its own
}


def subprocess_env(*paths: Path, **extra: str) -> dict[str, str]:
    """This process's environment plus ``extra``, with ``tests/`` and ``paths`` first on PYTHONPATH: a script
    a test starts imports ``support`` as the tests do."""
    pythonpath = [str(TESTS), *map(str, paths), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, **extra, "PYTHONPATH": os.pathsep.join(path for path in pythonpath if path)}
