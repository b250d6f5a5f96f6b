"""The ``neftune_*`` keys that the plugin adds to Axolotl's config schema.

Axolotl merges this model into its own config class, so the keys are top-level YAML keys and are
checked when the config is loaded, before any model is. The rules live in the core
(:class:`neft_plugins.NEFTuneConfig`); this model only forwards the raw YAML values to it.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, Field, create_model, model_validator

from neft_plugins import CONFIG_KEYS, NEFTuneConfig
from neft_plugins.config import BUILTIN_KEY, BUILTIN_KEYS
from neft_plugins.keys import KEYS

LOG = logging.getLogger(__name__)


class _CheckedByTheCore(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def check_neftune_keys(cls, data: Any) -> Any:
        """Check the raw YAML values with the core's rules; refuse Axolotl's built-in key beside ours."""
        if not isinstance(data, dict):
            return data
        NEFTuneConfig.from_mapping(data)  # its NEFTuneConfigErrors are ValueErrors: pydantic reports them
        if data.get("rl") and any(data.get(key) for key in BUILTIN_KEYS):
            LOG.warning(
                "neft_plugins: Axolotl's RL trainers (rl: %s) ignore %s; "
                "set neftune_alpha instead to noise with NEFTunePlugin",
                data["rl"],
                BUILTIN_KEY,
            )
        return data


# Input args for neft-plugins' NEFTune: every key of the core's one declaration, optional, with its help text.
NEFTuneArgs = create_model(
    "NEFTuneArgs",
    __base__=_CheckedByTheCore,
    __module__=__name__,
    **{
        key.name: (key.type | None, Field(default=None, json_schema_extra={"description": key.help}))
        for key in KEYS
    },
)


def neftune_config(cfg: Any) -> NEFTuneConfig:
    """The core config from an Axolotl cfg (a ``DictDefault``) or a raw YAML mapping.

    Raises ``NEFTuneConfigError`` (a ``ValueError``) whose message starts with the bad key.
    """
    return NEFTuneConfig.from_mapping({key: cfg.get(key) for key in CONFIG_KEYS})
