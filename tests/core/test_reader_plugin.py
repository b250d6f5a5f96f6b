"""The segment-reader plugin shown in the README, run as written: it sees its own model input by name."""

import re
from pathlib import Path

import torch
from torch import nn

from neft_plugins import neftune
from neft_plugins.plugins import plugin_manager

README = Path(__file__).resolve().parents[2] / "README.md"
DIM = 64


def readme_reader_plugin() -> dict:
    """Executes the README's `my_package/neft_plugin.py` block that defines a segment reader."""
    blocks = re.findall(r"```python\n(# my_package/neft_plugin.py\n.*?)```", README.read_text(), re.S)
    source = next(block for block in blocks if "neft_read_segments" in block)
    namespace: dict = {}
    exec(compile(source, "README.md", "exec"), namespace)
    return namespace


class SeqIdxModel(nn.Module):
    """A stand-in for a model that takes packed rows with a ``seq_idx`` input."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, DIM)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, input_ids: torch.Tensor, seq_idx: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids)


def test_readme_segment_reader_gives_each_packed_sequence_its_own_length(recorder, assert_noise_norms):
    reader = readme_reader_plugin()["neft_reader"]
    lengths = (8, 100, 20)
    seq_idx = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)]).unsqueeze(0)
    model = SeqIdxModel().train()
    plugin_manager().register(reader)
    try:
        with neftune(model, neftune_alpha=5):
            model(torch.randint(0, 50, seq_idx.shape), seq_idx=seq_idx)
    finally:
        plugin_manager().unregister(reader)
    norms = recorder.sequence_noise_norms()
    assert norms.numel() == len(lengths), "one noise norm per packed sequence"
    assert_noise_norms(norms, 5.0, min(lengths) * DIM)
