"""NEFTune for LLaMA-Factory (the tested versions: ``neft_plugins.versions.TESTED["llamafactory"]``).

- ``neft-llamafactory train config.yaml``: the YAML of ``llamafactory-cli train`` plus ``neftune_*`` keys.
- ``neft-llamafactory webui``: LLaMA Board whose NEFTune option trains with neft-plugins.
- ``run_train(config, overrides, callbacks)``: the same from Python.

Imports of llamafactory happen only when a command runs.
"""

from __future__ import annotations

from neft_plugins.integrations.llamafactory.compat import TESTED_VERSIONS, LlamaFactoryHookError
from neft_plugins.integrations.llamafactory.train import (
    build_callbacks,
    load_args,
    prepare_args,
    run_prepared,
    run_train,
)

__all__ = [
    "TESTED_VERSIONS",
    "LlamaFactoryHookError",
    "build_callbacks",
    "load_args",
    "prepare_args",
    "run_prepared",
    "run_train",
]
