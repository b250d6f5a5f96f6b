"""ATen ops per noised forward: what each arm adds to a forward, and which of its ops wait for the device.

On a GPU each op is at least one kernel launch (small and medium models feel them), and a host sync stalls the
launch queue. This counts them on any device with a ``TorchDispatchMode`` around one training forward of a model
that is token embeddings and one block (so both of NEFTune's hooks run), for every batch layout the segment
readers know. Arms: ours (``neft_plugins.attach``), transformers' built-in hook, and none; an arm's ops minus
none's are what its noise path adds. Counts are exact and the same on every run.

    python benchmarks/op_count.py          # writes benchmarks/results/op_count.json and .md
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parents[1] / "tests"))  # support.layouts
from overhead import ARMS, Arm

from support.layouts import layouts

# Ops that make the host wait for the device (on a GPU): reading a value, or a shape that depends on values.
HOST_SYNC_OPS = frozenset(
    {
        "aten._local_scalar_dense.default",  # .item(), float(), bool(), a tensor bound of uniform_
        "aten.is_nonzero.default",  # `if tensor:`
        "aten.nonzero.default",
        "aten.nonzero_static.default",
        "aten.masked_select.default",
        "aten.unique_consecutive.default",
        "aten._unique2.default",
        "aten.equal.default",  # torch.equal
        "aten.allclose.default",
        "aten.repeat_interleave.Tensor",  # without output_size
        "aten._assert_async.msg",
    }
)


class OpCounter(TorchDispatchMode):
    """Counts every ATen op dispatched while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))

    def host_syncs(self) -> dict[str, int]:
        return {op: count for op, count in self.ops.items() if op in HOST_SYNC_OPS}


class EmbeddingAndBlock(nn.Module):
    """Token embeddings and one block, taking whatever keywords a trainer passes (masks, varlen lengths)."""

    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList([nn.Identity()])

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def forward(self, input_ids: torch.Tensor, **keywords: Any) -> torch.Tensor:
        return self.layers[0](self.embed_tokens(input_ids))


def count_forward(model: nn.Module, batch: dict[str, Any], arm: str) -> OpCounter:
    """The ops of one training forward with ``arm`` attached, after one uncounted warm-up forward."""
    keywords = {key: value for key, value in batch.items() if value is not None}
    with Arm(arm, model):
        model(**keywords)
        counter = OpCounter()
        with counter:
            model(**keywords)
    return counter


def count(tokens: int = 512, vocab: int = 1000, dim: int = 64) -> dict[str, dict[str, Any]]:
    """Per layout and arm: ops per forward, the ops the arm adds over none, and its host syncs."""
    torch.manual_seed(0)
    model = EmbeddingAndBlock(vocab, dim).train()
    results: dict[str, dict[str, Any]] = {}
    for name, batch in layouts(tokens, vocab).items():
        counters = {arm: count_forward(model, batch, arm) for arm in ARMS}
        baseline = counters["none"].ops
        results[name] = {
            arm: {
                "ops": sum(counter.ops.values()),
                "added": sum((counter.ops - baseline).values()),
                "host_syncs": counter.host_syncs(),
                "by_op": dict(sorted(counter.ops.items())),
            }
            for arm, counter in counters.items()
        }
    return results


def markdown(results: dict[str, dict[str, Any]], command: str) -> str:
    rows = [
        "| layout | none: ops | ours: ops added | built-in: ops added | ours: host syncs | built-in: host syncs |",
        "|---|---|---|---|---|---|",
    ]
    for layout, arms in results.items():

        def syncs(arm: str, arms: dict = arms) -> str:
            return ", ".join(f"{op} x{n}" for op, n in arms[arm]["host_syncs"].items()) or "none"

        rows.append(
            f"| {layout} | {arms['none']['ops']} | {arms['ours']['added']} | {arms['builtin']['added']} | "
            f"{syncs('ours')} | {syncs('builtin')} |"
        )
    return "\n".join([f"`{command}`", "", *rows, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "op_count.json")
    args = parser.parse_args(argv)
    logging.getLogger("neft_plugins").setLevel(logging.ERROR)  # attach/detach per arm
    results = count()
    command = " ".join(["python", "benchmarks/op_count.py", *(argv if argv is not None else sys.argv[1:])])
    args.output.write_text(
        json.dumps({"command": command, "torch": torch.__version__, "layouts": results}, indent=2)
    )
    table = markdown(results, command)
    args.output.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
