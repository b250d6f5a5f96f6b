"""NEFTune for Axolotl: add two lines to an Axolotl YAML.

```yaml
plugins:
  - neft_plugins.integrations.axolotl.NEFTunePlugin
neftune_alpha: 5
```

The ``neftune_*`` keys (see :class:`NEFTuneArgs`) join Axolotl's config schema and are checked when the
config is loaded. The plugin hands a :class:`neft_plugins.NEFTuneCallback` to every trainer Axolotl builds
(SFT and RL: DPO, IPO, ORPO, KTO, GRPO, ...); the callback attaches when training starts and detaches
when it ends or fails. Full, LoRA and QLoRA models and multipack sample packing are handled by the core.
"""

from __future__ import annotations

import logging
from typing import Any

from axolotl.integrations.base import BasePlugin

from neft_plugins.integrations.axolotl.args import NEFTuneArgs, neftune_config
from neft_plugins.versions import missing_hook_point, warn_if_untested

__all__ = ["NEFTuneArgs", "NEFTunePlugin"]

LOG = logging.getLogger(__name__)


# The BasePlugin methods Axolotl calls and this plugin implements.
HOOK_POINTS = ("get_input_args", "add_callbacks_post_trainer")


class NEFTunePlugin(BasePlugin):
    """Axolotl plugin for neft-plugins' NEFTune."""

    def __init__(self) -> None:
        super().__init__()
        missing = [f"BasePlugin.{name}" for name in HOOK_POINTS if not hasattr(BasePlugin, name)]
        if missing:  # Axolotl would never call the plugin there
            raise missing_hook_point("axolotl", missing, "NEFTunePlugin")
        warn_if_untested("axolotl")

    def get_input_args(self) -> str:
        return f"{NEFTuneArgs.__module__}.{NEFTuneArgs.__name__}"

    def add_callbacks_post_trainer(self, cfg: Any, trainer: Any) -> list:
        from neft_plugins import NEFTuneCallback

        config = neftune_config(cfg)
        if not config.enabled:
            LOG.warning("neft_plugins: NEFTunePlugin is listed but neftune_alpha is unset or 0; no noise")
            return []
        return [NEFTuneCallback(config).bind(trainer)]
