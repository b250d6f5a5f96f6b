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

from neft_plugins.config import CONFIG_KEYS, NEFTuneConfig, NEFTuneConfigError
from neft_plugins.integrations.llamafactory import compat

logger = logging.getLogger("neft_plugins.integrations.llamafactory")

BUILTIN_KEY = "neftune_noise_alpha"  # transformers' built-in NEFTune, which LLaMA-Factory passes through
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


def split_argv(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """``--neftune_alpha 15 --stage sft ...`` (the web UI's command preview): our keys, typed as YAML types
    them, and the other arguments unchanged for LLaMA-Factory's own command-line parser."""
    import yaml

    ours: dict[str, Any] = {}
    rest: list[str] = []
    items = list(argv)
    index = 0
    while index < len(items):
        item = items[index]
        key, has_value, value = item.removeprefix("--").partition("=")
        if item.startswith("--") and key in CONFIG_KEYS:
            if not has_value:
                if index + 1 >= len(items):
                    raise NEFTuneConfigError(f"{key}: no value given after --{key}")
                index += 1
                value = items[index]
            ours[key] = yaml.safe_load(value)
        else:
            rest.append(item)
        index += 1
    return ours, rest


def _argv_value(argv: Sequence[str], key: str) -> Any:
    import yaml

    for index, item in enumerate(argv):
        if item == f"--{key}" and index + 1 < len(argv):
            return yaml.safe_load(argv[index + 1])
        if item.startswith(f"--{key}="):
            return yaml.safe_load(item.partition("=")[2])
    return None


def prepare_args(args: Mapping[str, Any] | Sequence[str]) -> tuple[NEFTuneConfig, Any]:
    """Split our keys out (validated) and check the rest can be noised by us, before any model loads.

    ``args`` is a mapping (a YAML config) or ``--key value`` arguments. Returns our config and what
    LLaMA-Factory gets, without our keys (it rejects unknown keys).
    """
    if not isinstance(args, Mapping):
        ours, argv = split_argv(args)
        checked = {key: _argv_value(argv, key) for key in (BUILTIN_KEY, "stage")}
        config, _ = prepare_args({**{k: v for k, v in checked.items() if v is not None}, **ours})
        return config, argv
    config, rest = NEFTuneConfig.split(args)
    builtin = rest.get(BUILTIN_KEY)
    if not config.enabled:
        set_keys = [key for key in CONFIG_KEYS if key != "neftune_alpha" and args.get(key) is not None]
        if set_keys:
            logger.warning(
                "neft_plugins: neftune_alpha is unset or 0, so NEFTune is off and %s have no effect",
                ", ".join(set_keys),
            )
        if builtin not in (None, 0):
            logger.warning(
                "neft_plugins: %s uses transformers' built-in NEFTune (padded length, padding noised); "
                "set neftune_alpha instead for neft-plugins' per-sequence NEFTune",
                BUILTIN_KEY,
            )
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
