"""The ``neftune_*`` keys that the plugin adds to Axolotl's config schema.

Axolotl merges this model into its own config class, so the keys are top-level YAML keys and are
checked when the config is loaded, before any model is. The rules live in the core
(:class:`neft_plugins.NEFTuneConfig`); this model only forwards the raw YAML values to it.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, Field, model_validator

from neft_plugins import CONFIG_KEYS, NEFTuneConfig
from neft_plugins.config import BUILTIN_KEYS

LOG = logging.getLogger(__name__)


class NEFTuneArgs(BaseModel):
    """Input args for neft-plugins' NEFTune (noisy embedding instruction fine-tuning)."""

    neftune_alpha: float | None = Field(
        default=None,
        json_schema_extra={
            "description": "NEFTune noise scale alpha (>= 0; 0 or unset = off). Each sequence's noise norm is "
            "~alpha/sqrt(3). The paper uses 5 (Alpaca), 10 (ShareGPT), 15 (OpenPlatypus)."
        },
    )
    neftune_distribution: str | None = Field(
        default=None,
        json_schema_extra={
            "description": "Noise distribution: 'uniform' (default), 'gaussian', or a plugin's."
        },
    )
    neftune_schedule: str | None = Field(
        default=None,
        json_schema_extra={"description": "Alpha schedule: 'constant' (default), a decay, or a plugin's."},
    )
    neftune_scope: str | None = Field(
        default=None,
        json_schema_extra={
            "description": "Which tokens get noise: 'all' (default), 'prompt' or 'response' (by labels == -100)."
        },
    )
    neftune_length: str | None = Field(
        default=None,
        json_schema_extra={
            "description": "L in alpha/sqrt(L*d): 'sequence' (default; each sequence's, or packed segment's, "
            "real length) or 'padded' (the padded row, as transformers' built-in)."
        },
    )
    neftune_seed: int | None = Field(
        default=None,
        json_schema_extra={"description": "Seed of the noise stream (optional; differs per rank)."},
    )
    neftune_clean_loss: bool | None = Field(
        default=None,
        json_schema_extra={
            "description": "Also log neft/clean_loss: the training loss of the logging step's batches with the "
            "noise off (one extra forward pass per log; SFT only)."
        },
    )

    @model_validator(mode="before")
    @classmethod
    def check_neftune_keys(cls, data: Any) -> Any:
        """Check the raw YAML values with the core's rules; refuse Axolotl's built-in key beside ours."""
        if not isinstance(data, dict):
            return data
        NEFTuneConfig.from_mapping(data)  # its NEFTuneConfigErrors are ValueErrors: pydantic reports them
        if data.get("rl") and any(data.get(key) for key in BUILTIN_KEYS):
            LOG.warning(
                "neft_plugins: Axolotl's RL trainers (rl: %s) ignore neftune_noise_alpha; "
                "set neftune_alpha instead to noise with NEFTunePlugin",
                data["rl"],
            )
        return data


def neftune_config(cfg: Any) -> NEFTuneConfig:
    """The core config from an Axolotl cfg (a ``DictDefault``) or a raw YAML mapping.

    Raises ``NEFTuneConfigError`` (a ``ValueError``) whose message starts with the bad key.
    """
    return NEFTuneConfig.from_mapping({key: cfg.get(key) for key in CONFIG_KEYS})
