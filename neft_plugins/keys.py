"""The ``neftune_*`` keys, declared once: name, type and default (``NEFTuneConfig``'s fields), allowed values, a UI
range, a UI label and one help text. Every integration's schema, form, usage text and ``neft keys`` read them
from here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any

from neft_plugins.config import LENGTHS, SCOPES, NEFTuneConfig


@dataclass(frozen=True)
class Key:
    name: str
    type: type
    default: Any
    label: str  # a form's label
    help: str  # the one help text: schemas, forms, usage texts
    values: str  # the allowed values, in words
    choices: Callable[[], tuple[str, ...]] | None = None  # the allowed names (plugins add theirs)
    ui_range: tuple[float, float] | None = None  # a slider's (minimum, maximum)


def _distributions() -> tuple[str, ...]:
    from neft_plugins.plugins import distributions

    return tuple(distributions())


def _schedules() -> tuple[str, ...]:
    from neft_plugins.plugins import schedules

    return tuple(schedules())


# Per key, everything the dataclass does not say: (label, help, values in words, choices, UI range).
_DESCRIPTIONS: dict[
    str, tuple[str, str, str, Callable[[], tuple[str, ...]] | None, tuple[float, float] | None]
] = {
    "neftune_alpha": (
        "NEFTune alpha (neft-plugins)",
        "The paper's alpha: each sequence's noise norm is ~alpha/sqrt(3); 0 or unset = off. The paper uses 5 "
        "(Alpaca, Evol-Instruct), 10 (ShareGPT), 15 (OpenPlatypus).",
        "float >= 0",
        None,
        (0.0, 20.0),
    ),
    "neftune_distribution": (
        "NEFTune distribution",
        "Noise distribution: 'uniform' (the paper's), 'gaussian' (the same variance), or a plugin's.",
        "'uniform', 'gaussian', or a plugin's name",
        _distributions,
        None,
    ),
    "neftune_schedule": (
        "NEFTune schedule",
        "How alpha changes over the optimizer steps: 'constant'; 'linear' or 'cosine', which decay from alpha at "
        "the first of T steps toward 0 after the last (step k gets alpha*(1-k/T), or alpha*(1+cos(pi*k/T))/2); "
        "or a plugin's.",
        "'constant', 'linear', 'cosine', or a plugin's name",
        _schedules,
        None,
    ),
    "neftune_scope": (
        "NEFTune scope",
        "Which real tokens get noise: 'all', 'prompt' or 'response' (told apart by labels == -100).",
        "'all', 'prompt', 'response'",
        lambda: SCOPES,
        None,
    ),
    "neftune_length": (
        "NEFTune length",
        "L in alpha/sqrt(L*d): 'sequence' (the paper's: each sequence's, or packed segment's, real length) or "
        "'padded' (the padded row, as transformers' built-in, bit for bit, for reproducing old runs).",
        "'sequence', 'padded'",
        lambda: LENGTHS,
        None,
    ),
    "neftune_seed": (
        "NEFTune seed",
        "Seed of NEFTune's own noise stream: independent of the global RNG, different per rank, saved with "
        "checkpoints (optional).",
        "integer in [0, 2**63) or null",
        None,
        None,
    ),
    "neftune_clean_loss": (
        "NEFTune clean loss",
        "Also log neft/clean_loss: the loss of each logging step's batches with the noise off, beside "
        "neft/noised_loss (one extra forward pass per log; SFT only).",
        "true or false",
        None,
        None,
    ),
}


def _keys() -> tuple[Key, ...]:
    declared = fields(NEFTuneConfig)
    if [field.name for field in declared] != list(_DESCRIPTIONS):
        raise RuntimeError("neft_plugins.keys: every NEFTuneConfig field needs one description, in order")
    return tuple(
        Key(field.name, _field_type(field.type), field.default, *_DESCRIPTIONS[field.name])
        for field in declared
        if field.default is not MISSING
    )


def _field_type(annotation: Any) -> type:
    """The value type of a field annotated (as a string, under postponed annotations) ``float``, ``int | None``..."""
    name = str(annotation).split("|")[0].strip()
    return {"float": float, "str": str, "int": int, "bool": bool}[name]


KEYS: tuple[Key, ...] = _keys()
KEY: dict[str, Key] = {key.name: key for key in KEYS}


def usage_lines() -> list[str]:
    """One line per key: its name, its values and its default, for usage texts."""
    return [f"  {key.name}: {key.values} (default {_shown(key.default)})" for key in KEYS]


def _shown(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
