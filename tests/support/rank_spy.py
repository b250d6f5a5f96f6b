"""A spy on what each rank's first block really receives, in any process a launcher starts (torchrun, accelerate,
DeepSpeed, Axolotl's and LLaMA-Factory's CLIs): put ``tests/support/spy_site`` first on PYTHONPATH and set
``NEFT_SPY_DIR``; every process that attaches NEFTune then appends one JSON line per forward pass of the first block
to ``NEFT_SPY_DIR/rank<RANK>.jsonl``.

The spy reads neither NEFTune's plan nor its records: it hooks the model's call (the masks the model was given) and
the first block twice, before NEFTune's pre-hook (clean) and after it (noised); the noise is their difference.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SPY_DIR = "NEFT_SPY_DIR"
SITE = Path(__file__).parent / "spy_site"


@dataclass(frozen=True)
class Pass:
    """One forward pass of a rank's first block."""

    rank: int
    training: bool  # the model was in train mode with autograd on
    noise_square: torch.Tensor  # [B, L] squared norm of the noise at each position
    segments: torch.Tensor  # [B, L] sequence ids (1, 2, ...) read from the model call's masks, 0 = padding
    first_noise: list[float]  # the direction of the first noised position's noise: the same on two ranks only
    # when they draw from one stream

    def sequence_norms(self) -> torch.Tensor:
        """The noise norm of each sequence in the batch."""
        norms = []
        for row in range(self.segments.shape[0]):
            for segment in self.segments[row].unique().tolist():
                if segment:
                    norms.append(float(self.noise_square[row][self.segments[row] == segment].sum().sqrt()))
        return torch.tensor(norms)

    def largest_padding_noise(self) -> float:
        padding = self.noise_square[self.segments == 0]
        return float(padding.max().sqrt()) if padding.numel() else 0.0


def segments_of(call: dict[str, Any], shape: tuple[int, int]) -> torch.Tensor:
    """Sequence ids from what the model was called with: a 0/1 (or segment-id) ``attention_mask`` marks the real
    tokens and ``position_ids`` that restart at 0 start packed sequences; one sequence per row without either."""
    positions, mask = call.get("position_ids"), call.get("attention_mask")
    real = torch.ones(shape, dtype=torch.bool)
    starts = torch.zeros(shape, dtype=torch.bool)
    starts[:, 0] = True
    if isinstance(mask, torch.Tensor) and tuple(mask.shape) == shape:
        real = mask != 0
        starts[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    if isinstance(positions, torch.Tensor) and tuple(positions.shape) == shape:
        starts |= positions == 0
    return torch.cumsum((starts & real).long(), dim=1) * real


class RankSpy:
    def __init__(self, model: torch.nn.Module, block: torch.nn.Module, folder: Path) -> None:
        self.path = folder / f"rank{os.environ.get('RANK', '0')}.jsonl"
        self._calls: list[dict[str, Any]] = []
        self._clean: torch.Tensor | None = None
        model.register_forward_pre_hook(self._enter, with_kwargs=True)
        model.register_forward_hook(self._leave, always_call=True)
        block.register_forward_pre_hook(self._before, with_kwargs=True, prepend=True)
        block.register_forward_pre_hook(self._after, with_kwargs=True)

    def _enter(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        call = {key: value.detach().cpu() for key, value in kwargs.items() if isinstance(value, torch.Tensor)}
        if args and isinstance(args[0], torch.Tensor):
            call.setdefault("input_ids", args[0].detach().cpu())
        call["training"] = module.training and torch.is_grad_enabled()
        self._calls.append(call)

    def _leave(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        self._calls.pop()

    def _before(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self._clean = _hidden(args, kwargs).detach().clone()

    def _after(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        clean, self._clean = self._clean, None
        if not self._calls or clean is None:
            return  # a recompute in backward, outside the model's call
        call = self._calls[-1]
        noise = (_hidden(args, kwargs).detach() - clean).float().cpu()
        shape = tuple(noise.shape[:2])
        line = {
            "rank": int(os.environ.get("RANK", "0")),
            "training": call["training"],
            "noise_square": noise.square().sum(-1).tolist(),
            "segments": segments_of(call, shape).tolist(),
            "first_noise": first_direction(noise),
        }
        with self.path.open("a") as file:
            file.write(json.dumps(line) + "\n")


def first_direction(noise: torch.Tensor, values: int = 8) -> list[float]:
    """The first ``values`` entries of the unit noise vector at the first position that got noise."""
    flat = noise.reshape(-1, noise.shape[-1])
    noised = flat.norm(dim=-1) > 0
    if not noised.any():
        return []
    first = flat[int(noised.nonzero()[0])]
    return (first / first.norm())[:values].tolist()


def _hidden(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    return kwargs["hidden_states"] if isinstance(kwargs.get("hidden_states"), torch.Tensor) else args[0]


def install() -> None:
    """Spy on every model NEFTune attaches to in this process."""
    attach = importlib.import_module("neft_plugins.attach")  # the package's `attach` is the function
    folder = Path(os.environ[SPY_DIR])
    attach_handle = attach.NEFTuneHandle.__init__

    def attach_and_spy(
        handle: attach.NEFTuneHandle, model: torch.nn.Module, *args: Any, **kwargs: Any
    ) -> None:
        attach_handle(handle, model, *args, **kwargs)
        RankSpy(attach.unwrap_model(model), handle.first_block, folder)

    attach.NEFTuneHandle.__init__ = attach_and_spy


def passes(folder: Path) -> dict[int, list[Pass]]:
    """Every rank's recorded passes, by rank."""
    by_rank: dict[int, list[Pass]] = {}
    for path in sorted(folder.glob("rank*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            by_rank.setdefault(record["rank"], []).append(
                Pass(
                    record["rank"],
                    record["training"],
                    torch.tensor(record["noise_square"]),
                    torch.tensor(record["segments"]),
                    record["first_noise"],
                )
            )
    return by_rank
