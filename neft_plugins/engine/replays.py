"""What activation checkpointing needs to give a recomputed block the very noise its forward pass got."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neft_plugins.engine.block_inputs import InputKey, input_name, replace, tensor_inputs
from neft_plugins.errors import NEFTuneInputError

# Noised first-block inputs kept for activation checkpointing's recompute; more means no backward came.
MAX_REPLAYS = 64


@dataclass(frozen=True, eq=False)  # told apart by identity: their tensors do not compare to a bool
class Replay:
    """The noise one block input received, for activation checkpointing to recompute it exactly."""

    data_ptr: int
    shape: torch.Size
    dtype: torch.dtype
    noise: torch.Tensor


class Replays:
    """transformers 4.x checkpoints a layer's ``__call__``, hooks included, so backward runs the first block's
    pre-hook again; it must add the same noise. Kept per forward pass, matched by the input's storage (or its
    shape, when offloading moved it), dropped when used and at every optimizer step."""

    def __init__(self, site: str) -> None:
        self.site = site
        self._kept: list[Replay] = []

    def keep(self, hidden: torch.Tensor, noise: torch.Tensor) -> None:
        self._kept.append(Replay(hidden.data_ptr(), hidden.shape, hidden.dtype, noise))
        del self._kept[:-MAX_REPLAYS]

    def clear(self) -> None:
        self._kept.clear()

    def replay_for(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """The noise the block got in its forward pass, when this call is backward's recompute of it."""
        if not self._kept or torch._C._current_graph_task_id() == -1:
            return None
        same = [each for each in self._kept if each.shape == hidden.shape and each.dtype == hidden.dtype]
        exact = [each for each in same if each.data_ptr == hidden.data_ptr()]
        if not exact and len(same) > 1:
            raise NEFTuneInputError(
                f"activation checkpointing recomputes {self.site} for one of {len(same)} noised passes of the "
                "same shape whose inputs were moved (offloaded), and NEFTune cannot tell which: run backward "
                "after each forward pass, or turn activation offloading off."
            )
        chosen = (exact or same or [None])[-1]
        if chosen is None:
            return None
        self._kept.remove(chosen)
        return chosen.noise


class BlockReplays:
    """The ``Replays`` of every noised block input of one attachment, by block and input."""

    def __init__(self, block_paths: list[str]) -> None:
        self._block_paths = block_paths
        self._by_input: dict[tuple[int, InputKey], Replays] = {}

    def keep(self, index: int, key: InputKey, value: torch.Tensor, noise: torch.Tensor) -> None:
        site = f"{self._block_paths[index]} {input_name(key)}"
        self._by_input.setdefault((index, key), Replays(site)).keep(value, noise)

    def replayed(self, index: int, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """In backward's recompute of a checkpointed block, the noise its forward pass got."""
        if torch.compiler.is_compiling() or not self._by_input:
            return None
        replaced: dict[InputKey, torch.Tensor] = {}
        for key, value in tensor_inputs(args, kwargs):
            replays = self._by_input.get((index, key))
            noise = replays.replay_for(value) if replays is not None else None
            if noise is not None:
                replaced[key] = value + noise
        return replace(args, kwargs, replaced) if replaced else None

    def clear(self) -> None:
        """Drop the kept noise (the last step's backward passes are done)."""
        for replays in self._by_input.values():
            replays.clear()

    def drop(self) -> None:
        self._by_input.clear()


def may_recompute(block: nn.Module) -> bool:
    """Whether activation checkpointing may run ``block`` again in backward: its forward runs without autograd
    (reentrant checkpointing, DeepSpeed's, offloading functions) or under saved-tensor hooks (non-reentrant)."""
    return (
        not torch.is_grad_enabled()
        or torch._C._autograd._top_saved_tensors_default_hooks(False) is not None
        or bool(getattr(block, "gradient_checkpointing", False))
    )
