"""Run under torchrun (2 CPU processes, gloo): a simulated context-parallel split.

Each rank holds the slices of every sequence that torch's load-balanced context parallelism gives it
(2 * world chunks; rank r keeps chunks r and 2*world-1-r), with the matching attention_mask and
position_ids, as transformers' Trainer shards them. Writes each row's whole-sequence noise norm, with
and without ``sequence_group``, and whether packed rows are refused.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from neft_plugins import NEFTuneInputError, hookimpl, neftune
from neft_plugins.plugins import plugin_manager
from support.distributed import leave_process_group
from support.tiny import make_llama

LENGTH, REAL = 16, (5, 16, 11)


class RowNorms:
    def __init__(self):
        self.squares = None

    @hookimpl
    def neft_observe(self, record):
        self.squares = record.noise_norms[:, 1].square()  # one sequence per row: segment 1


def local_slice(tensor: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    chunks = tensor.chunk(2 * world, dim=1)
    return torch.cat([chunks[rank], chunks[2 * world - 1 - rank]], dim=1)


def whole_sequence_norms(model, inputs, observer, group) -> list[float]:
    with neftune(model, neftune_alpha=5, neftune_seed=1, sequence_group=group):
        model(**inputs)
    squares = observer.squares.clone()
    dist.all_reduce(squares)
    return squares.sqrt().tolist()


def main() -> None:
    output = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_llama().train()
    input_ids = torch.randint(4, 60, (len(REAL), LENGTH), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(LENGTH)[None] < torch.tensor(REAL)[:, None]).long()
    positions = torch.arange(LENGTH).expand(len(REAL), -1)
    inputs = {
        "input_ids": local_slice(input_ids, rank, world),
        "attention_mask": local_slice(mask, rank, world),
        "position_ids": local_slice(positions, rank, world),
    }
    observer = RowNorms()
    plugin_manager().register(observer)
    result = {
        "with_group": whole_sequence_norms(model, inputs, observer, dist.group.WORLD),
        "without_group": whole_sequence_norms(model, inputs, observer, None),
    }
    packed = {
        **inputs,
        "position_ids": local_slice(torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4] * 2] * 3), rank, world),
    }
    try:
        with neftune(model, neftune_alpha=5, sequence_group=dist.group.WORLD):
            model(**packed)
        result["packed_refused"] = ""
    except NEFTuneInputError as error:
        result["packed_refused"] = str(error)
    if rank == 0:
        (output / "context_parallel.json").write_text(json.dumps(result))
    leave_process_group()


if __name__ == "__main__":
    main()
