"""Batch layouts, as trainers hand them to a model: padded rows (``attention_mask``), packed rows (restarting
``position_ids``, TRL's padding_free), flash-attention's varlen keywords (``cu_seq_lens``), segment-id masks
(Axolotl's multipack) and 4-D block-diagonal masks (LLaMA-Factory's neat_packing without flash-attention); the
tests and the benchmarks build every batch from these. The benchmarks put ``tests/`` on ``sys.path`` to import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

Batch = dict[str, Any]


def padding_mask(lengths: Sequence[int], length: int | None = None) -> torch.Tensor:
    """``[B, L]`` 1 on each row's first ``lengths[row]`` positions, 0 after them (right padding); L is ``length``
    or the longest."""
    length = max(lengths) if length is None else length
    return (torch.arange(length) < torch.tensor(lengths).unsqueeze(1)).long()


def restarting_positions(lengths: Sequence[int]) -> torch.Tensor:
    """``[1, sum(lengths)]`` position ids of sequences packed back to back: each counts up from 0."""
    return torch.cat([torch.arange(length) for length in lengths]).unsqueeze(0)


def segment_ids(lengths: Sequence[int], length: int | None = None) -> torch.Tensor:
    """``[1, L]`` ids of sequences packed back to back (1, 2, ...), 0 on the padding after them; L is ``length``
    or their sum."""
    ids = torch.repeat_interleave(torch.arange(1, len(lengths) + 1), torch.tensor(lengths))
    length = len(ids) if length is None else length
    return torch.cat([ids, torch.zeros(length - len(ids), dtype=torch.long)]).unsqueeze(0)


def block_mask(segments: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """LLaMA-Factory's ``neat_packing`` mask without flash-attention: ``[B, 1, L, L]``, 0 where a position may
    attend (same sequence, not later), the dtype's minimum elsewhere (padding attends to nothing)."""
    same = segments.unsqueeze(-1) == segments.unsqueeze(-2)
    causal = torch.ones_like(same).tril()
    allowed = same & causal & (segments > 0).unsqueeze(-1)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)


def random_lengths(sequences: int, length: int, generator: torch.Generator) -> list[int]:
    """The lengths of ``sequences`` sequences of random lengths that fill ``length`` tokens."""
    cuts = (torch.randperm(length - 1, generator=generator)[: sequences - 1] + 1).sort().values
    return torch.cat([cuts, torch.tensor([length])]).diff(prepend=torch.tensor([0])).tolist()


def padded_rows(
    lengths: Sequence[int], vocab: int, generator: torch.Generator | None = None, low: int = 4
) -> Batch:
    """Rows of the given real lengths, padded on the right to the longest, ids drawn from ``[low, vocab)`` (by
    default with a generator seeded 0), labels -100 on padding."""
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    mask = padding_mask(lengths)
    input_ids = torch.randint(low, vocab, mask.shape, generator=generator)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": input_ids.masked_fill(mask == 0, -100)}


def padded_batch(rows: int, length: int, vocab: int, generator: torch.Generator) -> Batch:
    """``rows`` rows of real lengths between length/4 and length, padded to the longest (dynamic padding)."""
    lengths = torch.randint(length // 4, length + 1, (rows,), generator=generator)
    lengths[0] = length
    return padded_rows(lengths.tolist(), vocab, generator, low=0)


def packed_row(lengths: Sequence[int], vocab: int, generator: torch.Generator, low: int = 0) -> Batch:
    """One row holding sequences of ``lengths`` back to back, position ids restarting at each (TRL
    padding_free), ids drawn from ``[low, vocab)``."""
    input_ids = torch.randint(low, vocab, (1, sum(lengths)), generator=generator)
    return {"input_ids": input_ids, "position_ids": restarting_positions(lengths), "labels": input_ids}


def packed(batch: Batch) -> Batch:
    """The real tokens of a padded batch in one packed row, position ids restarting at each sequence."""
    real = batch["attention_mask"].bool()
    return {
        "input_ids": batch["input_ids"][real].unsqueeze(0),
        "position_ids": restarting_positions(real.sum(1).tolist()),
        "labels": batch["labels"][real].unsqueeze(0),
    }


def varlen_row(lengths: Sequence[int], vocab: int, generator: torch.Generator) -> Batch:
    """``packed_row`` plus flash-attention's varlen keywords (cumulative lengths, longest sequence)."""
    cumulative = torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)
    return {
        **packed_row(lengths, vocab, generator),
        "cu_seq_lens_q": cumulative,
        "cu_seq_lens_k": cumulative,
        "max_length_q": max(lengths),
        "max_length_k": max(lengths),
    }


def layouts(tokens: int, vocab: int) -> dict[str, Batch]:
    """One batch of ``tokens`` tokens per layout a trainer hands a model (a key set to None: not passed)."""
    generator = torch.Generator().manual_seed(0)
    lengths = random_lengths(8, tokens, generator)
    row = packed_row(lengths, vocab, generator)
    segments = segment_ids(lengths)
    return {
        "padded (attention_mask)": padded_batch(8, tokens // 8, vocab, generator),
        "packed (position_ids)": row,
        "varlen (cu_seq_lens)": varlen_row(random_lengths(8, tokens, generator), vocab, generator),
        "packed (segment-id mask)": {**row, "attention_mask": segments, "position_ids": None},
        "packed (4-D block mask)": {**row, "attention_mask": block_mask(segments), "position_ids": None},
    }
