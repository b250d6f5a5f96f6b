"""How much noise each sequence really receives: NEFTuneCallback's engine against transformers' built-in.

The part of the demo that is certain. Real training sequences are laid out as a training step would
see them (padded to the longest, padded to a fixed length, packed into one row), one training-mode
forward pass runs with each implementation attached, and the noise is read back as what the model's first block
receives minus what it receives with neither attached, per sequence, from a hook placed after theirs. Paper
target: each sequence's noise norm ~ alpha / sqrt(3) (uniform noise, per-sequence L).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any

FIXED_PAD = 256  # a common padding="max_length" setting (transformers' built-in then uses L = 256)


def default_fixed_length(max_length: int) -> int:
    return max(FIXED_PAD, max_length)


class _Stop(Exception):
    """Raised from the first block's pre-hook once its input is captured (skips the layers)."""


@dataclass
class Layout:
    name: str
    input_ids: Any  # [B, T]
    kwargs: dict  # attention_mask / position_ids as a trainer would pass them
    segments: list[list[tuple[int, int, int]]]  # per row: (sequence index, start, end)
    pad_positions: Any  # bool [B, T]


def build_layouts(sequences: list[list[int]], pad_id: int, fixed_length: int) -> list[Layout]:
    import torch

    n = len(sequences)
    longest = max(len(s) for s in sequences)
    out = []
    for name, width in (
        ("padded to longest", longest),
        (f"padded to {fixed_length}", max(fixed_length, longest)),
    ):
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        segments = []
        for i, seq in enumerate(sequences):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
            segments.append([(i, 0, len(seq))])
        out.append(Layout(name, ids, {"attention_mask": mask}, segments, mask == 0))
    flat = [t for s in sequences for t in s]
    positions = [p for s in sequences for p in range(len(s))]
    row, start = [], 0
    for i, seq in enumerate(sequences):
        row.append((i, start, start + len(seq)))
        start += len(seq)
    out.append(
        Layout(
            f"packed ({n} in one row)",
            torch.tensor([flat]),
            {"position_ids": torch.tensor([positions])},
            [row],
            torch.zeros((1, len(flat)), dtype=torch.bool),
        )
    )
    return out


def _first_block_input(model: Any, layout: Layout, seed: int):
    """What the first block receives in one training-mode forward pass of `model` on `layout` (autograd on,
    as in training; the layers after it are skipped)."""
    import torch

    from neft_plugins.engine.structure import find_first_block

    block = find_first_block(model, model.get_input_embeddings())
    captured = []

    def grab(module, args, kwargs):
        captured.append(kwargs.get("hidden_states", args[0] if args else None).detach())
        raise _Stop

    was_training = model.training
    model.train()
    handle = block.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        torch.manual_seed(seed)
        with torch.enable_grad(), contextlib.suppress(_Stop):
            model(input_ids=layout.input_ids, **layout.kwargs)
    finally:
        handle.remove()
        model.train(was_training)
    return captured[0]


def measure(
    model: Any, sequences: list[list[int]], pad_id: int, alpha: float, fixed_length: int, seed: int = 0
) -> dict:
    """Per-sequence noise norms for every layout, ours and the built-in, with the paper's target."""
    import torch

    target = alpha / math.sqrt(3.0)
    d = model.get_input_embeddings().weight.shape[1]
    with torch.no_grad():
        token_norm = float(model.get_input_embeddings().weight.norm(dim=1).median())
    rows = []
    logger = logging.getLogger("neft_plugins")
    level = logger.level
    logger.setLevel(logging.ERROR)  # six attach/detach notices would only clutter the demo's output
    try:
        for layout in build_layouts(sequences, pad_id, fixed_length):
            rows.append(_measure_layout(model, layout, sequences, alpha, seed))
    finally:
        logger.setLevel(level)
    return {
        "alpha": alpha,
        "target": target,
        "d": d,
        "median_token_embedding_norm": token_norm,
        "layouts": rows,
    }


def _measure_layout(model: Any, layout: Layout, sequences: list[list[int]], alpha: float, seed: int) -> dict:
    from neft_plugins import attach, transformers_neftune

    results = {}
    clean = _first_block_input(
        model, layout, seed
    )  # nothing attached (the built-in noises no_grad passes too)
    for impl in ("ours", "built-in"):
        if impl == "ours":
            handle = attach(model, neftune_alpha=alpha)
            try:
                noise = _first_block_input(model, layout, seed) - clean
            finally:
                handle.detach()
        else:
            hook = transformers_neftune.activate(model, alpha)
            try:
                noise = _first_block_input(model, layout, seed) - clean
            finally:
                transformers_neftune.deactivate(model, hook)
        squared = noise.float().pow(2).sum(-1)  # [B, T]
        per_seq = {}
        for r, segs in enumerate(layout.segments):
            for index, begin, end in segs:
                per_seq[index] = float(squared[r, begin:end].sum().sqrt())
        results[impl] = {
            "per_sequence": [per_seq[i] for i in range(len(sequences))],
            "padding_noise_norm": float(squared[layout.pad_positions].sum().sqrt()),
        }
    return {
        "layout": layout.name,
        "row_length": int(layout.input_ids.shape[1]),
        "rows": int(layout.input_ids.shape[0]),
        "lengths": [len(s) for s in sequences],
        **results,
    }


def summary_rows(probe: dict) -> list[dict]:
    """One row per (layout, implementation): mean/min/max of noise norm / (alpha/sqrt 3), padding noise."""
    out = []
    target = probe["target"]
    for row in probe["layouts"]:
        for impl in ("ours", "built-in"):
            ratios = [v / target for v in row[impl]["per_sequence"]]
            out.append(
                {
                    "layout": row["layout"],
                    "implementation": impl,
                    "mean_ratio": sum(ratios) / len(ratios),
                    "min_ratio": min(ratios),
                    "max_ratio": max(ratios),
                    "padding_noise_norm": row[impl]["padding_noise_norm"],
                }
            )
    return out
