"""What a training run prints: the plugin's attach/detach log lines and the trainer's per-step metrics."""

from __future__ import annotations

import ast
import re

ATTACHED = "neft_plugins: attached NEFTune at"
DETACHED = "neft_plugins: detached NEFTune from"
LLAMA_FIRST_BLOCK = "the input of LlamaForCausalLM.model.layers.0"  # where the noise goes in
DETACHED_FROM_LLAMA = f"{DETACHED} {LLAMA_FIRST_BLOCK}"
METRICS = re.compile(r"\{'loss': .*?\}")


def attached_to_llama(alpha: float) -> str:
    """The start of the attach line for a Llama: ``... attached NEFTune at the input of ...layers.0 (alpha=5.0``."""
    return f"{ATTACHED} {LLAMA_FIRST_BLOCK} (alpha={float(alpha)}"


def printed_metrics(output: str) -> list[dict[str, float]]:
    """The per-step logs a trainer prints (``{'loss': '4.613', 'neft/noise_norm': '2.882', ...}``), their numbers
    only: ms-swift adds ``'global_step/max_steps': '1/2'`` and times as text."""
    return [
        {key: float(value) for key, value in ast.literal_eval(match.group(0)).items() if _is_number(value)}
        for match in METRICS.finditer(output)
    ]


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def double_noise_error(builtin_key: str, builtin_alpha: object, neftune_alpha: object) -> str:
    """The one message every integration gives for a framework's built-in NEFTune key beside ours."""
    return (
        f"{builtin_key}: got {builtin_alpha} beside neftune_alpha: {neftune_alpha}. {builtin_key} is the framework's "
        "built-in NEFTune (padded length, padding noised); neftune_alpha is neft-plugins'. Both would noise the "
        f"embeddings (twice, or with neftune_alpha: 0 still by the built-in): remove {builtin_key} and set "
        "neftune_alpha instead."
    )
