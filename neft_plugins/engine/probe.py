"""The probe pass: one small forward when NEFTune attaches, so that where the embeddings reach the blocks is known
before any training pass, and a model compiled after ``attach`` traces whole from its first step.

It runs in eval mode under ``no_grad`` (no dropout, no RNG drawn, nothing recorded), on ids that are neither
special nor placeholders. A model that cannot run on such a batch learns on its first training pass instead."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

ROWS, LENGTH = 2, 8  # not square: a [L, B] layout tells itself apart by shape


def probe_inputs(
    model: nn.Module, embeddings: nn.Module, encoder_decoder: bool, placeholder_ids: Iterable[int]
) -> dict[str, Any] | None:
    """Keyword inputs for a probe call of ``model``, or None when it cannot be probed here (distributed, not yet
    materialised, no known vocabulary, a forward that takes no ``input_ids``/``attention_mask``)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return None  # a forward is a collective, and a sharded model's ranks must all take part
    vocabulary = getattr(embeddings, "num_embeddings", None)
    weight = getattr(embeddings, "weight", None)
    if not isinstance(vocabulary, int) or not isinstance(weight, torch.Tensor) or weight.is_meta:
        return None
    names, any_keyword = _keywords(model)
    wanted = ("input_ids", "attention_mask", *(("decoder_input_ids",) if encoder_decoder else ()))
    if not (any_keyword or set(wanted) <= names):
        return None
    # Ordinary tokens: from the middle of the vocabulary, where no special or placeholder token sits.
    excluded = set(placeholder_ids)
    ids = [token for token in range(vocabulary // 2, vocabulary) if token not in excluded][: ROWS * LENGTH]
    if len(ids) < ROWS * LENGTH:
        return None
    input_ids = torch.tensor(ids, device=weight.device).reshape(ROWS, LENGTH)
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if encoder_decoder:
        inputs["decoder_input_ids"] = input_ids[:, :2]
    if "use_cache" in names:
        inputs["use_cache"] = False  # as in training
    return inputs


def _keywords(model: nn.Module) -> tuple[set[str], bool]:
    """The keywords ``model.forward`` names, and whether it takes any other (``**kwargs``)."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in parameters)
