"""The framework adapters, imported as ``neft_plugins.integrations.*``.

Their code lives in the repository's top-level ``integrations/`` folder. In a source tree this package points
there, so what Python imports from any working directory is the tree's code; a built wheel maps that folder
here (``package-dir`` in pyproject.toml) and holds real files, with no link to follow.
"""

from pathlib import Path

_SOURCE = Path(__file__).resolve().parents[2] / "integrations"
if (_SOURCE.parent / "pyproject.toml").is_file() and (_SOURCE / "__init__.py").is_file():
    __path__ = [str(_SOURCE)]
