"""The spy on a model's first block: what it receives, and the noise neft_plugins adds there, measured
independently of neft_plugins' plan and records.

``FirstBlockSpy`` hooks the first block twice, before neft_plugins' pre-hook (the clean hidden states) and after it
(what the block gets: their difference is the noise), and, given the model, the model's call (its training mode,
grad mode and the inputs it was given: the segments are read from these). Each run of the block inside a model call
is a ``Pass``; runs outside one (recomputes in backward under activation checkpointing) are not.

- In a test's own process: ``first_block_inputs(block, run)``, what the block received on each of its runs.
- In any process a launcher starts (torchrun, accelerate, DeepSpeed, Axolotl's and LLaMA-Factory's CLIs, or a
  CLI started directly): put ``SITE`` first on PYTHONPATH and set ``NEFT_SPY_DIR`` (``SPY_DIR``); every model
  NEFTune attaches to is spied on until it detaches, one JSON line per pass in ``NEFT_SPY_DIR/rank<RANK>.jsonl``,
  read back with ``passes(folder)``.
"""

from __future__ import annotations

import importlib
import json
import os
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

SPY_DIR = "NEFT_SPY_DIR"
SITE = Path(__file__).parent / "spy_site"


def hidden_states_of(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    """A block's hidden-states input, as transformers' blocks take it."""
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    assert isinstance(hidden, torch.Tensor), f"no hidden states in the block's call: {args!r} {kwargs!r}"
    return hidden


def segments_of(call: dict[str, Any], shape: tuple[int, int]) -> torch.Tensor:
    """[B, L] sequence ids (1, 2, ... in order of position, 0 = padding) from what the model was called with: a
    0/1 or segment-id ``attention_mask`` marks the real tokens and starts a sequence where its value changes, a
    4-D ``[B, 1, L, L]`` block mask (0 or True = may attend) where a position may not attend to the one before,
    and ``position_ids`` that restart at 0 start packed sequences; one sequence per row without any of them."""
    positions, mask = call.get("position_ids"), call.get("attention_mask")
    real = torch.ones(shape, dtype=torch.bool)
    starts = torch.zeros(shape, dtype=torch.bool)
    starts[:, 0] = True
    if isinstance(mask, torch.Tensor) and tuple(mask.shape) == shape:
        real = mask != 0
        starts[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    elif isinstance(mask, torch.Tensor) and mask.dim() == 4 and tuple(mask.shape[-2:]) == (shape[1],) * 2:
        allowed = mask[:, 0] if mask.dtype == torch.bool else mask[:, 0] == 0
        real = allowed.diagonal(dim1=-2, dim2=-1)
        starts[:, 1:] |= ~allowed.diagonal(offset=-1, dim1=-2, dim2=-1)
    if isinstance(positions, torch.Tensor) and tuple(positions.shape) == shape:
        starts |= positions == 0
    return torch.cumsum((starts & real).long(), dim=1) * real


def first_direction(noise: torch.Tensor, values: int = 8) -> list[float]:
    """The first ``values`` entries of the unit noise vector at the first position that got noise."""
    flat = noise.reshape(-1, noise.shape[-1])
    noised = flat.norm(dim=-1) > 0
    if not noised.any():
        return []
    first = flat[int(noised.nonzero()[0])]
    return (first / first.norm())[:values].tolist()


@dataclass(frozen=True)
class Pass:
    """One run of the first block inside a model call: what the model was called with, and the noise."""

    rank: int
    training: bool  # the model was in train mode with autograd on
    grad_enabled: bool
    input_ids: torch.Tensor | None  # [B, L], as the model got them
    segments: torch.Tensor  # [B, L] sequence ids (1, 2, ...) read from the model call's masks, 0 = padding
    noise_square: torch.Tensor  # [B, L] squared norm of the noise at each position (float64: 0 only if none)
    first_noise: list[float]  # the direction of the first noised position's noise: the same on two ranks only
    # when they draw from one stream
    mask_shape: list[int] | None  # the model call's attention_mask
    mask_dtype: str | None

    @property
    def rows(self) -> int:
        return self.segments.shape[0]

    def _sequences(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Each sequence's row and its positions in the row, row by row in order of segment id."""
        for row in range(self.rows):
            for segment in self.segments[row].unique().tolist():
                if segment:
                    yield row, self.segments[row] == segment

    def sequence_norms(self) -> torch.Tensor:
        """The noise norm of each sequence in the batch."""
        return torch.tensor(
            [float(self.noise_square[row][where].sum().sqrt()) for row, where in self._sequences()]
        )

    def sequence_lengths(self) -> list[int]:
        """The tokens of each sequence, in the order of ``sequence_norms``."""
        return [int(where.sum()) for _, where in self._sequences()]

    def sequences(self) -> list[tuple[int, float]]:
        """Each sequence's tokens and noise norm."""
        return list(zip(self.sequence_lengths(), self.sequence_norms().tolist(), strict=True))

    def row_norms(self, where: torch.Tensor) -> list[float]:
        """Each row's noise norm over the positions ``where`` ([B, L] bool) marks."""
        return (self.noise_square * where).sum(1).sqrt().tolist()

    def largest_noise(self, where: torch.Tensor | None = None) -> float:
        """The largest noise norm at one position (of those ``where`` marks); 0.0 exactly where none got noise."""
        chosen = self.noise_square if where is None else self.noise_square[where]
        return float(chosen.max().sqrt()) if chosen.numel() else 0.0

    def largest_padding_noise(self) -> float:
        return self.largest_noise(self.segments == 0)

    def to_json(self) -> str:
        record = dict(vars(self))
        for key in ("input_ids", "segments", "noise_square"):
            record[key] = None if record[key] is None else record[key].tolist()
        return json.dumps(record)

    @classmethod
    def from_json(cls, line: str) -> Pass:
        record = json.loads(line)
        for key, dtype in (
            ("input_ids", torch.long),
            ("segments", torch.long),
            ("noise_square", torch.float64),
        ):
            record[key] = None if record[key] is None else torch.tensor(record[key], dtype=dtype)
        return cls(**record)


class FirstBlockSpy:
    """Hooks on ``block`` on either side of neft_plugins' pre-hook (so create it after NEFTune attached) and,
    given ``model``, on the model's call: each run of the block inside a model call becomes a ``Pass``, handed to
    ``on_pass`` (default: kept in ``passes``). With ``keep_inputs`` every run's input (after neft_plugins'
    pre-hook) is kept in ``received``, recomputes included. ``remove()``, or leaving the ``with``, unhooks it."""

    def __init__(
        self,
        block: nn.Module,
        model: nn.Module | None = None,
        on_pass: Callable[[Pass], None] | None = None,
        keep_inputs: bool = False,
    ) -> None:
        self.passes: list[Pass] = []
        self.received: list[torch.Tensor] = []
        self._on_pass = on_pass or self.passes.append
        self._keep_inputs = keep_inputs
        self._calls: list[dict[str, Any]] = []
        self._clean: torch.Tensor | None = None
        self._hooks = [block.register_forward_pre_hook(self._after, with_kwargs=True)]
        if model is not None:  # passes: the clean input too, and the model's call
            self._hooks.append(block.register_forward_pre_hook(self._before, with_kwargs=True, prepend=True))
            # A PEFT model's training call reaches the causal LM through `.forward` (no hooks there), while
            # `generate` calls the causal LM itself: the calls of both are model calls.
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            for each in dict.fromkeys((model, base)):
                self._hooks += [
                    each.register_forward_pre_hook(self._enter, with_kwargs=True),
                    each.register_forward_hook(self._leave, always_call=True),
                ]

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def __enter__(self) -> FirstBlockSpy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def _enter(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        call = {key: value.detach().cpu() for key, value in kwargs.items() if isinstance(value, torch.Tensor)}
        if args and isinstance(args[0], torch.Tensor):
            call.setdefault("input_ids", args[0].detach().cpu())
        call["grad_enabled"] = torch.is_grad_enabled()
        call["training"] = module.training and call["grad_enabled"]
        self._calls.append(call)

    def _leave(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._calls.pop()

    def _before(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self._clean = hidden_states_of(args, kwargs).detach().clone()

    def _after(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        clean, self._clean = self._clean, None
        received = hidden_states_of(args, kwargs).detach()
        if self._keep_inputs:
            self.received.append(received.clone())
        if not self._calls or clean is None:
            return  # a recompute in backward, outside the model's call
        call = self._calls[-1]
        noise = (received - clean).float().cpu()
        mask = call.get("attention_mask")
        self._on_pass(
            Pass(
                rank=int(os.environ.get("RANK", "0")),
                training=call["training"],
                grad_enabled=call["grad_enabled"],
                input_ids=call.get("input_ids"),
                segments=segments_of(call, tuple(noise.shape[:2])),
                noise_square=noise.double().square().sum(-1),
                first_noise=first_direction(noise),
                mask_shape=None if mask is None else list(mask.shape),
                mask_dtype=None if mask is None else str(mask.dtype),
            )
        )


def first_block_inputs(block: nn.Module, run: Callable[[], Any]) -> list[torch.Tensor]:
    """The hidden states ``block`` receives on each of its runs while ``run()`` runs (after neft_plugins'
    pre-hook, so noise included, when NEFTune is attached already)."""
    with FirstBlockSpy(block, keep_inputs=True) as spy:
        run()
    return spy.received


def first_block_input(block: nn.Module, run: Callable[[], Any]) -> torch.Tensor:
    """The hidden states of ``block``'s first run while ``run()`` runs."""
    return first_block_inputs(block, run)[0]


def install() -> None:
    """Spy on every model NEFTune attaches to in this process, from its attachment to its detachment, each pass
    appended to ``$NEFT_SPY_DIR/rank<RANK>.jsonl``."""
    attach = importlib.import_module("neft_plugins.handle")  # the package's `attach` is the function
    path = Path(os.environ[SPY_DIR]) / f"rank{os.environ.get('RANK', '0')}.jsonl"
    attach_handle, detach_handle = attach.NEFTuneHandle.__init__, attach.NEFTuneHandle.detach
    spies: weakref.WeakKeyDictionary[Any, FirstBlockSpy] = weakref.WeakKeyDictionary()

    def write(each: Pass) -> None:
        with path.open("a") as file:
            file.write(each.to_json() + "\n")

    def attach_and_spy(
        handle: attach.NEFTuneHandle, model: torch.nn.Module, *args: Any, **kwargs: Any
    ) -> None:
        attach_handle(handle, model, *args, **kwargs)
        if handle.first_block is not None:
            spies[handle] = FirstBlockSpy(handle.first_block, attach.unwrap_model(model), on_pass=write)

    def detach_and_stop(handle: attach.NEFTuneHandle) -> None:
        spy = spies.pop(handle, None)
        if spy is not None:
            spy.remove()
        detach_handle(handle)

    attach.NEFTuneHandle.__init__ = attach_and_spy
    attach.NEFTuneHandle.detach = detach_and_stop


def passes(folder: Path) -> dict[int, list[Pass]]:
    """Every rank's recorded passes, by rank."""
    by_rank: dict[int, list[Pass]] = {}
    for path in sorted(folder.glob("rank*.jsonl")):
        for line in path.read_text().splitlines():
            each = Pass.from_json(line)
            by_rank.setdefault(each.rank, []).append(each)
    return by_rank
