"""NEFTune for ms-swift (the tested versions: ``neft_plugins.versions.TESTED["ms-swift"]``).

- ``neft-swift sft ARGS``: every ``swift sft`` argument plus ``--neftune_*`` keys; ms-swift's own sft entry point
  runs in this process with our callback registered.
- ``swift sft ... --external_plugins $(neft-swift plugin --path) --callbacks neftune``, our keys as
  ``NEFTUNE_*`` environment variables: for people who keep ``swift sft`` itself (``neft-swift plugin`` prints it).
- ``neft-swift rlhf ARGS``: the same for ``swift rlhf`` (DPO and the other preference types, KTO, GRPO, ...).
- ``neft-swift web-ui``: ms-swift's web UI, whose SFT, RLHF and GRPO pages' NEFTune sliders are ours
  (:mod:`.webui`).

Imports of ms-swift happen only when a command runs.
"""

from __future__ import annotations

from neft_plugins.integrations.swift.callback import (
    CALLBACK_NAME,
    PLUGIN_FILE,
    config_from_environment,
    register,
)

__all__ = ["CALLBACK_NAME", "PLUGIN_FILE", "config_from_environment", "register"]
