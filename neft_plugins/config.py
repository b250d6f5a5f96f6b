"""One validated configuration, shared by every integration."""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from neft_plugins.errors import NEFTuneConfigError, NEFTuneConflictError

# Which real tokens get noise (prompt and response told apart by labels == -100, or MLX-LM's offsets).
SCOPES = ("all", "prompt", "response")
LENGTHS = ("sequence", "padded")
# transformers' built-in NEFTune (``TrainingArguments.neftune_noise_alpha``, also the attribute its hook reads on
# the embedding module), which LLaMA-Factory and ms-swift pass through: named here once, imported everywhere else.
BUILTIN_KEY = "neftune_noise_alpha"
# The frameworks' own NEFTune keys: transformers' built-in, and Axolotl's deprecated alias of it.
BUILTIN_KEYS = (BUILTIN_KEY, "noisy_embedding_alpha")


@dataclass(frozen=True)
class NEFTuneConfig:
    neftune_alpha: float = 0.0
    neftune_distribution: str = "uniform"
    neftune_schedule: str = "constant"
    neftune_scope: str = "all"
    neftune_length: str = "sequence"
    neftune_seed: int | None = None
    neftune_clean_loss: bool = False

    def __new__(cls, *args: Any, **keys: Any) -> NEFTuneConfig:
        # A misspelt keyword is refused as in a YAML file, with the nearest valid key (not a bare TypeError).
        for key in keys:
            if key not in CONFIG_KEYS:
                raise unknown_key_error(key)
        return super().__new__(cls)

    def __post_init__(self) -> None:
        from neft_plugins.plugins import distributions, schedules

        object.__setattr__(self, "neftune_alpha", _alpha(self.neftune_alpha))
        _choice("neftune_distribution", self.neftune_distribution, tuple(distributions()))
        _choice("neftune_schedule", self.neftune_schedule, tuple(schedules()))
        _choice("neftune_scope", self.neftune_scope, SCOPES)
        _choice("neftune_length", self.neftune_length, LENGTHS)
        object.__setattr__(self, "neftune_seed", _seed(self.neftune_seed))
        if not isinstance(self.neftune_clean_loss, bool):
            raise NEFTuneConfigError(
                f"neftune_clean_loss: got {self.neftune_clean_loss!r}; expected true or false (log neft/clean_loss, "
                "the training loss with the noise off, on logging steps)"
            )
        if self.neftune_length == "padded" and self.neftune_scope != "all":
            raise NEFTuneConfigError(
                f"neftune_scope: got {self.neftune_scope!r} with neftune_length: 'padded'; the padded length "
                "reproduces transformers' built-in, which noises every position: use neftune_scope: 'all', "
                "or neftune_length: 'sequence'"
            )

    @property
    def enabled(self) -> bool:
        return self.neftune_alpha > 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> NEFTuneConfig:
        """Our keys from a whole YAML-style config; ``None`` means the default.

        Refuses a misspelt ``neftune_*`` key and a framework's built-in NEFTune key beside ours; the
        framework's other keys are left alone.
        """
        check_known_keys(mapping)
        check_no_double_noise(mapping)
        return cls(**{key: mapping[key] for key in CONFIG_KEYS if mapping.get(key) is not None})

    @classmethod
    def split(cls, mapping: Mapping[str, Any]) -> tuple[NEFTuneConfig, dict[str, Any]]:
        """Our keys as a config, and the rest of ``mapping`` without them."""
        rest = {key: value for key, value in mapping.items() if key not in CONFIG_KEYS}
        return cls.from_mapping(mapping), rest


CONFIG_KEYS: tuple[str, ...] = tuple(field.name for field in fields(NEFTuneConfig))


def as_config(config: NEFTuneConfig | None, keys: Mapping[str, Any]) -> NEFTuneConfig:
    """``config`` itself, or one built from ``neftune_*`` keyword arguments (not both)."""
    if config is not None and keys:
        raise TypeError("pass either a NEFTuneConfig or neftune_* keyword arguments, not both")
    return config if config is not None else NEFTuneConfig(**keys)


def check_known_keys(mapping: Mapping[str, Any]) -> None:
    """A ``neftune_*`` key that is neither ours nor a framework's is a typo: refuse it, with a suggestion."""
    for key in mapping:
        if isinstance(key, str) and key.startswith("neftune_") and key not in (*CONFIG_KEYS, *BUILTIN_KEYS):
            raise unknown_key_error(key)


def unknown_key_error(key: str) -> NEFTuneConfigError:
    # Compared without the shared prefix, which would make every key look close.
    names = [known.removeprefix("neftune_") for known in CONFIG_KEYS]
    close = difflib.get_close_matches(key.removeprefix("neftune_"), names, n=1)
    suggestion = f"did you mean neftune_{close[0]}? " if close else ""
    return NEFTuneConfigError(
        f"{key}: unknown key; {suggestion}neft-plugins' keys are {', '.join(CONFIG_KEYS)}"
    )


def check_no_double_noise(mapping: Mapping[str, Any]) -> None:
    """Refuse a framework's built-in NEFTune key (non-zero) wherever ``neftune_alpha`` is given, even as 0.

    With both, the embeddings are noised twice; with ``neftune_alpha: 0`` meant as "off", the built-in
    would still noise them. Without ``neftune_alpha`` our NEFTune is not in the config, and the built-in
    is the framework's business.
    """
    neftune_alpha = mapping.get("neftune_alpha")
    for key in BUILTIN_KEYS:
        builtin_alpha = mapping.get(key)
        if neftune_alpha is None or builtin_alpha is None or builtin_alpha == 0:
            continue
        raise NEFTuneConflictError(
            f"{key}: got {builtin_alpha!r} beside neftune_alpha: {neftune_alpha!r}. {key} is the framework's "
            "built-in NEFTune (padded length, padding noised); neftune_alpha is neft-plugins'. Both would "
            f"noise the embeddings (twice, or with neftune_alpha: 0 still by the built-in): remove {key} "
            "and set neftune_alpha instead."
        )


def _alpha(value: Any) -> float:
    allowed = "expected a finite number >= 0 (0 turns NEFTune off; the paper uses 5, 10 or 15)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise NEFTuneConfigError(f"neftune_alpha: got {value!r} ({type(value).__name__}); {allowed}")
    if not math.isfinite(value) or value < 0:
        raise NEFTuneConfigError(f"neftune_alpha: got {value!r}; {allowed}")
    return float(value)


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise NEFTuneConfigError(f"{key}: got {value!r}; expected one of {', '.join(map(repr, allowed))}")


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < 2**63:
        raise NEFTuneConfigError(
            f"neftune_seed: got {value!r}; expected an integer in [0, 2**63) or null for no fixed seed"
        )
    return int(value)
