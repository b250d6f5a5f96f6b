"""What every engine reports, from the same sums: the ``neft/*`` log entries and the attach/detach lines.

The torch engine (``neft_plugins.engine.stats``) and the MLX engine (``neft_plugins.mlx``) each keep running sums
on their device; the words and the arithmetic are here, once. Imports no array library.
"""

from __future__ import annotations

from neft_plugins.config import NEFTuneConfig


def log_entries(
    alpha: float, noise_sum: float, embed_sum: float, sequences: float, tokens: float
) -> dict[str, float]:
    """``neft/*`` log entries: means over the sequences noised since the last report (sums of per-sequence noise
    and embedding norms, the sequences and the tokens noised)."""
    logs = {"neft/alpha": float(alpha), "neft/tokens_noised": float(tokens)}
    if sequences:
        logs["neft/noise_norm"] = noise_sum / sequences
        logs["neft/embed_norm"] = embed_sum / sequences
        # How strong the noise is for this model: Gemma's embeddings are sqrt(d) larger than Llama's.
        if logs["neft/embed_norm"] > 0:
            logs["neft/noise_to_embed"] = logs["neft/noise_norm"] / logs["neft/embed_norm"]
    return logs


def summary(passes: float, noise_sum: float, sequences: float, tokens: float) -> str:
    """What one attachment applied in all: passes, tokens, sequences, mean noise norm."""
    if not passes:
        return "no training pass got noise"
    mean = f", mean noise norm {noise_sum / sequences:.4g} per sequence" if sequences else ""
    plural = "" if passes == 1 else "es"
    return f"{int(passes)} training pass{plural}, {int(tokens)} tokens noised in {int(sequences)} sequences{mean}"


def settings(config: NEFTuneConfig) -> str:
    """``alpha=5.0, distribution=uniform, ...``: the attach line's settings."""
    return ", ".join(f"{key.removeprefix('neftune_')}={value}" for key, value in config.as_dict().items())
