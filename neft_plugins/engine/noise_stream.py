"""The noise's random stream (global RNG, or a seeded per-rank generator) and its state in training checkpoints."""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger("neft_plugins")

STATE_FILE = "neft_state_rank{rank}.pt"  # beside a training checkpoint, one per rank
SEED_STRIDE = 0x9E3779B97F4A7C15  # keeps the per-rank seeds of one run far apart


def distributed_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class NoiseStream:
    """torch's global RNG (unseeded, one process: as transformers' built-in), or a generator seeded per rank,
    independent of the global RNG, whose state checkpoints save and resumes restore."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._pending_state: torch.Tensor | None = None

    def generator_for(self, device: torch.device) -> torch.Generator | None:
        rank, world_size = distributed_rank()
        if self.seed is None and world_size == 1:
            return None
        if self._generator is None or self._generator.device != device:
            base_seed = torch.initial_seed() if self.seed is None else self.seed
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed((base_seed + rank * SEED_STRIDE) % 2**64)
            if self._pending_state is not None:
                self._generator.set_state(self._pending_state)
        return self._generator

    def state(self) -> torch.Tensor | None:
        """The generator's state (None while noise comes from torch's global RNG)."""
        if self._generator is not None:
            return self._generator.get_state()
        return self._pending_state

    def set_state(self, state: torch.Tensor | None) -> None:
        self._pending_state = state
        if self._generator is not None and state is not None:
            self._generator.set_state(state)

    def save(self, checkpoint: str) -> None:
        """Write this rank's generator state into the training checkpoint folder ``checkpoint`` (nothing while
        noise comes from torch's global RNG, which the trainer saves itself)."""
        state = self.state()
        if state is None:
            return
        os.makedirs(checkpoint, exist_ok=True)
        rank, world_size = distributed_rank()
        torch.save(
            {"rng_state": state, "world_size": world_size},
            os.path.join(checkpoint, STATE_FILE.format(rank=rank)),
        )

    def load(self, checkpoint: str) -> None:
        """Continue the stream saved in ``checkpoint``; say so once when that cannot be exact."""
        rank, world_size = distributed_rank()
        if self.seed is None and world_size == 1:
            return  # noise from torch's global RNG, which the trainer restores itself
        path = os.path.join(checkpoint, STATE_FILE.format(rank=rank))
        if not os.path.exists(path):
            logger.warning(
                "neft_plugins: %s has no %s, so the noise stream starts afresh: the resumed run's noise differs "
                "from an uninterrupted one's",
                checkpoint,
                os.path.basename(path),
            )
            return
        saved = torch.load(path, weights_only=True)
        if saved.get("world_size", world_size) != world_size:
            logger.warning(
                "neft_plugins: %s was saved by %d processes and resumes on %d; each rank continues a saved "
                "stream, but the run's noise differs from an uninterrupted one's",
                checkpoint,
                saved["world_size"],
                world_size,
            )
        self.set_state(saved["rng_state"])
