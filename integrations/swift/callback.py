"""Our callback under ms-swift's ``--callbacks NAME``: ``swift.callbacks.callbacks_map[NAME](args, trainer)``
builds it with the trainer in hand, so it is bound (:meth:`~neft_plugins.NEFTuneCallback.bind`).

No noise logic lives here: the core's :class:`~neft_plugins.NEFTuneCallback` does all of it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neft_plugins.config import BUILTIN_KEY, NEFTuneConfig, NEFTuneConfigError, NEFTuneConflictError
from neft_plugins.integrations.arguments import argv_value, argv_values, split_command_line
from neft_plugins.keys import KEYS
from neft_plugins.versions import warn_if_untested

CALLBACK_NAME = "neftune"  # --callbacks neftune
PLUGIN_FILE = Path(__file__).with_name("plugin.py")  # --external_plugins PLUGIN_FILE
ENV_PREFIX = "NEFTUNE_"  # NEFTUNE_ALPHA=5: our keys for `swift sft` itself, which refuses unknown flags
ENV_KEYS = tuple(key.name.upper() for key in KEYS)
SWIFT_TUNER = (
    "neftune"  # `--tuner_type neftune`: ms-swift's own NEFTune tuner (padded length, padding noised)
)


def environment_mapping(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every ``NEFTUNE_*`` variable as a key (``NEFTUNE_ALPHA`` -> ``neftune_alpha``), typed as YAML types it;
    a misspelt one then fails ``from_mapping``'s check like a misspelt YAML key."""
    import yaml

    environ = os.environ if environ is None else environ
    return {
        name.lower(): yaml.safe_load(value)
        for name, value in environ.items()
        if name.startswith(ENV_PREFIX) and value != ""
    }


def check_argv(config: NEFTuneConfig, argv: Sequence[str]) -> None:
    """What ``from_mapping`` cannot see in ms-swift's arguments: its own NEFTune tuner beside ours."""
    if config.enabled and argv_value(argv, "tuner_type") == SWIFT_TUNER:
        raise NEFTuneConflictError(
            f"tuner_type: got {SWIFT_TUNER!r} beside neftune_alpha: {config.neftune_alpha}. ms-swift's NEFTune "
            "tuner is its built-in NEFTune (padded length, padding noised); both would noise the embeddings: "
            "choose another tuner_type (lora, full, ...) and keep neftune_alpha."
        )


def prepare_argv(argv: Sequence[str]) -> tuple[NEFTuneConfig, list[str]]:
    """``--neftune_* value`` items taken out of ``swift sft`` arguments and validated (with ms-swift's built-in
    ``--neftune_noise_alpha`` refused beside ours), before any model loads; the rest for ms-swift."""
    config, rest = split_command_line(argv)
    check_argv(config, rest)
    return config, rest


def config_from_environment(argv: Sequence[str] | None = None) -> NEFTuneConfig:
    """Our keys from ``NEFTUNE_*`` variables, checked against the process's ``swift sft`` arguments: the
    built-in ``--neftune_noise_alpha`` beside ours is refused, and so is a missing ``--callbacks neftune``
    (the plugin would otherwise register a callback nobody asks for, and nothing would be noised)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    mapping = environment_mapping()
    config = NEFTuneConfig.from_mapping({**mapping, **argv_values(argv, BUILTIN_KEY)})
    check_argv(config, argv)
    if config.enabled and CALLBACK_NAME not in callbacks_of(argv):
        raise NEFTuneConfigError(
            f"NEFTUNE_ALPHA: got {config.neftune_alpha}, but --callbacks does not name {CALLBACK_NAME!r}: add "
            f"--callbacks {CALLBACK_NAME} (ms-swift builds only the callbacks it names)"
        )
    return config


def callbacks_of(argv: Sequence[str]) -> list[str]:
    """The names ``--callbacks a b`` (or ``--callbacks=a``, or a JSON/YAML list) gives in ``argv``."""
    import yaml

    names: list[str] = []
    items = list(argv)
    for index, item in enumerate(items):
        if item.startswith("--callbacks="):
            value = yaml.safe_load(item.partition("=")[2])
            names += [str(name) for name in (value if isinstance(value, list) else [value])]
        elif item == "--callbacks":
            for value in items[index + 1 :]:
                if value.startswith("--"):
                    break
                names.append(value)
    return names


def with_callback(argv: Sequence[str]) -> list[str]:
    """``argv`` with ours added to ``--callbacks`` (kept first, one flag: a second ``--callbacks`` would replace
    the user's)."""
    names = callbacks_of(argv)
    if CALLBACK_NAME in names:
        return list(argv)
    kept: list[str] = []
    skipping = False
    for item in argv:
        if item == "--callbacks" or item.startswith("--callbacks="):
            skipping = item == "--callbacks"
            continue
        if skipping and not item.startswith("--"):
            continue
        skipping = False
        kept.append(item)
    return [*kept, "--callbacks", CALLBACK_NAME, *names]


def register(config: NEFTuneConfig, name: str = CALLBACK_NAME) -> None:
    """``callbacks_map[name]``: ms-swift builds it as ``(args, trainer)``; ours is bound to that trainer. Built,
    it warns once on an ms-swift version outside the tested range (ms-swift found the hook point: it runs)."""
    from swift.callbacks import callbacks_map

    from neft_plugins import NEFTuneCallback

    def build(args: Any, trainer: Any) -> NEFTuneCallback:
        warn_if_untested("ms-swift")
        return NEFTuneCallback(config).bind(trainer)

    callbacks_map[name] = build
