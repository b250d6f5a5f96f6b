"""The tensors that carry the embeddings into a model's blocks, and how each lays out its copies of them.

The embeddings the blocks receive are ``[X, Y, d]`` (batch and sequence, in the order the block takes them). A
tensor carries them as one copy, as ``count`` copies side by side along the width (hyper-connections laid along
the width: ``embeddings.repeat(1, 1, count)``), or as ``count`` copies stacked along a new ``axis``
(manifold-constrained hyper-connections ``[B, L, n, d]``, streams ``[n, B, L, d]``). Every copy gets the same
noise. Which inputs carry them is learnt once, from values (one pass, syncs); after that only shapes are read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neft_plugins.errors import NEFTuneInputError


@dataclass(frozen=True)
class Copies:
    """How a tensor lays out copies of the ``[X, Y, d]`` embeddings: ``count`` of them along the width
    (``axis`` None), or stacked along a new ``axis`` (0, 1 or 2)."""

    count: int = 1
    axis: int | None = None

    def embeddings(self, carrier: torch.Tensor) -> torch.Tensor:
        """One copy of the embeddings, ``[X, Y, d]`` (a view of ``carrier``)."""
        if self.axis is not None:
            return carrier.select(self.axis, 0)
        return carrier[..., : carrier.shape[-1] // self.count]

    def spread(self, noise: torch.Tensor) -> torch.Tensor:
        """``noise`` (``[X, Y, d]``) laid out as this carrier holds the embeddings: the same noise in every copy."""
        if self.axis is not None:
            shape = [*noise.shape]
            shape.insert(self.axis, self.count)
            return noise.unsqueeze(self.axis).expand(shape)
        return noise if self.count == 1 else noise.repeat(1, 1, self.count)

    def fits(self, carrier: torch.Tensor) -> bool:
        """Whether ``carrier``'s shape can hold copies laid out this way (read from the shape alone: no sync)."""
        if self.axis is not None:
            return carrier.dim() == 4 and carrier.shape[self.axis] == self.count
        return carrier.dim() == 3 and carrier.shape[-1] % self.count == 0

    def describe(self) -> str:
        if self.count == 1:
            return "the embeddings"
        where = "side by side along the width" if self.axis is None else f"stacked along axis {self.axis}"
        return f"{self.count} copies of the embeddings, {where}"


ONE_COPY = Copies()


def copies_in_first_input(hidden: torch.Tensor, rows_and_length: set[tuple[int, int]]) -> Copies:
    """How the first block's hidden states hold the embeddings, from their values (syncs; run once).

    ``rows_and_length``: the ``(X, Y)`` the embeddings may have (the batch's ``(B, L)``, and ``(L, B)`` where the
    model runs sequence-major). A 3-D input holds ``count`` copies along the width when it is its first
    ``width / count`` channels repeated (the most copies that hold exactly; 1 when none do); a 4-D input holds
    copies along the axis whose removal leaves ``[X, Y, d]``, and is refused when its streams are not exact
    copies (a learnt per-stream projection): they do not start as the embeddings.
    """
    if hidden.dim() == 3:
        width = hidden.shape[-1]
        if not bool(hidden.any()):
            return ONE_COPY  # all zeros repeat at any width: nothing to learn from
        for count in sorted((n for n in range(2, width + 1) if width % n == 0), reverse=True):
            copies = Copies(count)
            if _holds_copies(hidden, copies):
                return copies
        return ONE_COPY
    if hidden.dim() == 4:
        aligned = [
            axis
            for axis in range(3)
            if tuple(hidden.shape[:axis] + hidden.shape[axis + 1 : 3]) in rows_and_length
        ]
        for axis in aligned:
            copies = Copies(hidden.shape[axis], axis)
            if _holds_copies(hidden, copies):
                return copies
        if aligned:
            axis = aligned[0]
            differs = next(
                stream
                for stream in range(1, hidden.shape[axis])
                if not torch.equal(hidden.select(axis, stream), hidden.select(axis, 0))
            )
            raise NEFTuneInputError(
                f"{hidden.shape[axis]} streams of shape {tuple(hidden.shape)} (along axis {axis}) that are not "
                f"copies of one another: stream {differs} differs from stream 0, so it is not the embeddings "
                "(a learnt per-stream projection of them, as AltUp's). NEFTune cannot give every stream the "
                "paper's noise. Not supported."
            )
    return ONE_COPY


def copies_of(candidate: torch.Tensor, embeddings: torch.Tensor) -> Copies | None:
    """How ``candidate`` holds copies of ``embeddings`` (``[X, Y, d]``, exactly equal), or None when it does not
    (syncs; run once)."""
    if not torch.is_floating_point(candidate) or candidate.dtype != embeddings.dtype:
        return None
    rows, length, width = embeddings.shape
    if candidate.dim() == 3 and candidate.shape[:2] == (rows, length) and candidate.shape[-1] % width == 0:
        copies = Copies(candidate.shape[-1] // width)
    elif candidate.dim() == 4:
        axes = [axis for axis in range(3) if _without(candidate.shape, axis) == embeddings.shape]
        if not axes:
            return None
        copies = Copies(candidate.shape[axes[0]], axes[0])
    else:
        return None
    return copies if torch.equal(copies.spread(embeddings), candidate) else None


def _holds_copies(hidden: torch.Tensor, copies: Copies) -> bool:
    return torch.equal(copies.spread(copies.embeddings(hidden)), hidden)


def _without(shape: torch.Size, axis: int) -> torch.Size:
    return torch.Size((*shape[:axis], *shape[axis + 1 :]))
