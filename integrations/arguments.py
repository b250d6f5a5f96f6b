"""Our keys taken out of a framework's own arguments (a config mapping, or ``--key value`` items on a command
line: LLaMA-Factory's web UI preview, ``swift sft``), validated, with the rest left for the framework, which
refuses keys it does not know. Shared by the adapters that take the framework's arguments whole."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from neft_plugins.config import BUILTIN_KEY, CONFIG_KEYS, NEFTuneConfig, NEFTuneConfigError, check_known_keys

logger = logging.getLogger("neft_plugins.integrations")


def split_config(args: Mapping[str, Any]) -> tuple[NEFTuneConfig, dict[str, Any]]:
    """Our keys as a validated config (a misspelt key, and the built-in key beside ours, refused) and the rest of
    ``args``. With NEFTune off, a warning names what the user set that then does nothing of ours."""
    config, rest = NEFTuneConfig.split(args)
    if config.enabled:
        return config, rest
    set_keys = [key for key in CONFIG_KEYS if key != "neftune_alpha" and args.get(key) is not None]
    if set_keys:
        logger.warning(
            "neft_plugins: neftune_alpha is unset or 0, so NEFTune is off and %s have no effect",
            ", ".join(set_keys),
        )
    if rest.get(BUILTIN_KEY) not in (None, 0):
        logger.warning(
            "neft_plugins: %s uses transformers' built-in NEFTune (padded length, padding noised); "
            "set neftune_alpha instead for neft-plugins' per-sequence NEFTune",
            BUILTIN_KEY,
        )
    return config, rest


def split_command_line(argv: Sequence[str]) -> tuple[NEFTuneConfig, list[str]]:
    """``split_config`` for ``--key value`` items: our config, checked against the built-in key among them, and
    the other items unchanged."""
    ours, rest = split_argv(argv)
    config, _ = split_config({**argv_values(rest, BUILTIN_KEY), **ours})
    return config, rest


def split_argv(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """``--neftune_alpha 15 --stage sft ...``: our keys, typed as YAML types them, and the other arguments
    unchanged for the framework's own command-line parser."""
    import yaml

    # A misspelt --neftune_* flag would reach the framework's parser, which refuses it as unknown: name ours.
    check_known_keys({item[2:].partition("=")[0]: None for item in argv if item.startswith("--neftune_")})
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


def argv_value(argv: Sequence[str], key: str) -> Any:
    """The value of ``--key value`` or ``--key=value`` in ``argv``, typed as YAML types it; None when absent."""
    import yaml

    for index, item in enumerate(argv):
        if item == f"--{key}" and index + 1 < len(argv):
            return yaml.safe_load(argv[index + 1])
        if item.startswith(f"--{key}="):
            return yaml.safe_load(item.partition("=")[2])
    return None


def argv_values(argv: Sequence[str], *keys: str) -> dict[str, Any]:
    """``argv_value`` of each of ``keys`` that ``argv`` holds, by key."""
    found = {key: argv_value(argv, key) for key in keys}
    return {key: value for key, value in found.items() if value is not None}
