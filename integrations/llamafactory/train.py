"""``neft-llamafactory train``: LLaMA-Factory's own ``run_exp`` with our keys taken out and our callback in.

No noise logic lives here: the core's :class:`~neft_plugins.NEFTuneCallback` does all of it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from neft_plugins.config import BUILTIN_KEY, NEFTuneConfig, NEFTuneConfigError
from neft_plugins.integrations.arguments import argv_values, split_argv, split_config
from neft_plugins.integrations.llamafactory import compat

logger = logging.getLogger("neft_plugins.integrations.llamafactory")

TESTED_STAGES = ("sft", "dpo")
UNSUPPORTED_STAGES = {
    "ppo": "LLaMA-Factory's PPO runs its own loop (TRL's legacy PPOTrainer), not a transformers Trainer, and "
    "noises nothing reliably there; use stage sft or dpo",
}


def load_args(
    config: str | os.PathLike[str] | Mapping[str, Any], overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """A YAML/JSON file (or a mapping) plus ``key=value`` overrides, as ``llamafactory-cli train`` reads them."""
    from omegaconf import OmegaConf

    if isinstance(config, Mapping):
        base = OmegaConf.create(dict(config))
    else:
        path = Path(config).absolute()
        if path.suffix in (".yaml", ".yml"):
            base = OmegaConf.load(path)
        elif path.suffix == ".json":
            base = OmegaConf.create(json.loads(path.read_text(encoding="utf-8")))
        else:
            raise ValueError(f"{path}: expected a .yaml, .yml or .json training config")
    merged = OmegaConf.to_container(OmegaConf.merge(base, OmegaConf.from_cli(list(overrides))))
    if not isinstance(merged, dict):
        raise ValueError(f"{config}: expected a mapping of LLaMA-Factory arguments at the top level")
    return merged


def prepare_args(args: Mapping[str, Any] | Sequence[str]) -> tuple[NEFTuneConfig, Any]:
    """Split our keys out (validated) and check the rest can be noised by us, before any model loads.

    ``args`` is a mapping (a YAML config) or ``--key value`` arguments. Returns our config and what
    LLaMA-Factory gets, without our keys (it rejects unknown keys).
    """
    if not isinstance(args, Mapping):
        ours, argv = split_argv(args)
        config, _ = prepare_args({**argv_values(argv, BUILTIN_KEY, "stage"), **ours})
        return config, argv
    config, rest = split_config(args)
    if not config.enabled:
        return config, rest
    stage = rest.get("stage", "sft")
    if stage in UNSUPPORTED_STAGES:
        raise NEFTuneConfigError(
            f"neftune_alpha: got {config.neftune_alpha} with stage: {stage!r}; {UNSUPPORTED_STAGES[stage]}"
        )
    if stage not in TESTED_STAGES:
        logger.warning(
            "neft_plugins: stage %r is untested with NEFTune on LLaMA-Factory (tested: %s)",
            stage,
            ", ".join(TESTED_STAGES),
        )
    return config, rest


def build_callbacks(config: NEFTuneConfig, extra: Iterable[Any] = ()) -> list[Any]:
    """Our callback first, then LLaMA Board's log bridge (when run from the web UI), then ``extra``."""
    from neft_plugins import NEFTuneCallback

    callbacks: list[Any] = [NEFTuneCallback(config)]
    if compat.env_flag("LLAMABOARD_ENABLED"):
        from neft_plugins.integrations.llamafactory.board import LlamaBoardLogBridge

        callbacks.append(LlamaBoardLogBridge())
    callbacks.extend(extra)
    return callbacks


def run_train(
    config: str | os.PathLike[str] | Mapping[str, Any],
    overrides: Sequence[str] = (),
    callbacks: Iterable[Any] = (),
) -> None:
    """Train with LLaMA-Factory and neft-plugins' NEFTune: ``run_train("sft.yaml", ["neftune_alpha=10"])``.

    ``overrides`` are ``key=value`` items; ``callbacks`` are extra transformers callbacks, after ours.
    """
    run_prepared(*prepare_args(load_args(config, overrides)), callbacks=callbacks)


def run_prepared(neft_config: NEFTuneConfig, args: Any, callbacks: Iterable[Any] = ()) -> None:
    """``run_exp`` on arguments already split by :func:`prepare_args`."""
    run_exp = compat.train_entry()
    args = dict(args) if isinstance(args, Mapping) else list(args)
    if neft_config.enabled:
        run_exp(args=args, callbacks=build_callbacks(neft_config, callbacks))
    else:
        run_exp(args=args, callbacks=list(callbacks))
