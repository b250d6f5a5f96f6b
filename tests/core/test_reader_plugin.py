"""The segment-reader plugin shown in docs/plugins.md, run as written: it sees its own model input by name."""

import re
from pathlib import Path

import torch
from torch import nn

from neft_plugins import neftune
from neft_plugins.plugins import plugin_manager

PLUGINS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
DIM = 64


def documented_plugin_blocks() -> list[str]:
    """The `my_package/neft_plugin.py` code blocks of docs/plugins.md."""
    return re.findall(r"```python\n(# my_package/neft_plugin.py\n.*?)```", PLUGINS_PAGE.read_text(), re.S)


def documented_reader_plugin() -> dict:
    """Executes the `my_package/neft_plugin.py` block of docs/plugins.md that defines a segment reader."""
    source = next(block for block in documented_plugin_blocks() if "neft_read_segments" in block)
    namespace: dict = {}
    exec(compile(source, str(PLUGINS_PAGE), "exec"), namespace)
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


def test_documented_segment_reader_gives_each_packed_sequence_its_own_length(recorder, assert_noise_norms):
    reader = documented_reader_plugin()["neft_reader"]
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


def test_every_documented_plugin_runs_against_the_public_plugin_api():
    blocks = documented_plugin_blocks()
    assert len(blocks) == 2
    for source in blocks:
        assert "from neft_plugins.plugin_api import" in source and "neft_plugins.noise" not in source
        exec(compile(source, str(PLUGINS_PAGE), "exec"), {})
