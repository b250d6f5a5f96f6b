"""Every copy of the embeddings and every later input that carries them gets the same noise: the layouts alone
(pure functions), then toy models whose blocks receive the embeddings as copies or again, eager and compiled,
with activation checkpointing's recompute."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from neft_plugins import NEFTuneInputError, neftune
from neft_plugins.engine.carriers import Copies, copies_in_first_input, copies_of
from neft_plugins.engine.plan import PlanReader
from neft_plugins.plugins import plugin_manager

ROWS, LENGTH, WIDTH, STREAMS, ALPHA = 3, 20, 16, 4, 5.0


def embeddings() -> torch.Tensor:
    return torch.randn(ROWS, LENGTH, WIDTH, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("copies", "shape"),
    [
        (Copies(), (ROWS, LENGTH, WIDTH)),
        (Copies(STREAMS), (ROWS, LENGTH, STREAMS * WIDTH)),
        (Copies(STREAMS, 2), (ROWS, LENGTH, STREAMS, WIDTH)),
        (Copies(STREAMS, 0), (STREAMS, ROWS, LENGTH, WIDTH)),
    ],
)
def test_copies_are_learnt_from_values_and_spread_one_noise(copies, shape):
    carrier = copies.spread(embeddings())
    assert tuple(carrier.shape) == shape
    rows_and_length = {(ROWS, LENGTH), (LENGTH, ROWS)}
    assert copies_in_first_input(carrier, rows_and_length) == copies
    assert copies_of(carrier, embeddings()) == copies
    assert torch.equal(copies.embeddings(carrier), embeddings())
    noise = torch.rand(ROWS, LENGTH, WIDTH)
    assert torch.equal(copies.embeddings(copies.spread(noise)), noise)
    assert copies.fits(carrier)


def test_a_tensor_that_is_not_a_copy_is_no_carrier():
    clean = embeddings()
    assert copies_of(clean + 1e-6, clean) is None
    assert copies_of(torch.cat([clean, clean + 1], dim=-1), clean) is None
    assert copies_of(clean.to(torch.float64), clean) is None
    assert copies_in_first_input(torch.cat([clean, 2 * clean], dim=-1), {(ROWS, LENGTH)}) == Copies()


def test_streams_that_are_not_copies_are_refused_with_the_stream_that_differs():
    clean = embeddings()
    streams = torch.stack([clean, clean, 0.5 * clean, clean], dim=0)
    with pytest.raises(
        NEFTuneInputError, match=r"stream 2 differs from stream 0.*learnt per-stream projection"
    ):
        copies_in_first_input(streams, {(ROWS, LENGTH)})


def test_a_plan_is_read_from_a_batch_without_a_model():
    """Two right-padded rows and a packed row with restarting position ids: L_s per sequence, padding 0."""
    reader = PlanReader(plugin_manager().hook.neft_read_segments, "all", padded=False)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    plan = reader.read({"attention_mask": mask}, (2, 4), torch.device("cpu"), transposed=False)
    assert plan.segments.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert plan.counts[:, 1].tolist() == [3, 2]
    packed = reader.read(
        {"position_ids": torch.tensor([[0, 1, 2, 0, 1]])}, (1, 5), torch.device("cpu"), transposed=False
    )
    assert packed.segments.tolist() == [[1, 1, 1, 2, 2]]
    assert packed.counts[0, 1:3].tolist() == [3, 2]


class Block(nn.Module):
    """Mixes its input streams (or width copies) and adds back the embeddings it is handed again, if any."""

    def __init__(self, width: int, copies: Copies) -> None:
        super().__init__()
        self.linear, self.copies = nn.Linear(width, width), copies

    def forward(self, hidden: torch.Tensor, original: torch.Tensor | None = None) -> torch.Tensor:
        out = hidden + self.linear(hidden)
        return out if original is None else out + self.copies.spread(original)


class Toy(nn.Module):
    """Its blocks receive the embeddings as ``copies`` of them and, with ``reinject``, every block is handed
    them again (Zamba's ``original_hidden_states``)."""

    def __init__(self, copies: Copies, reinject: bool) -> None:
        super().__init__()
        self.copies, self.reinject = copies, reinject
        self.checkpointed = False
        self.embed = nn.Embedding(50, WIDTH)
        width = WIDTH * (copies.count if copies.axis is None else 1)
        self.layers = nn.ModuleList([Block(width, copies) for _ in range(3)])

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embedded = self.embed(input_ids)
        hidden = self.copies.spread(embedded).contiguous()
        original = embedded.clone() if self.reinject else None
        for layer in self.layers:
            if self.checkpointed:
                hidden = checkpoint(layer, hidden, original, use_reentrant=True)
            else:
                hidden = layer(hidden, original=original) if self.reinject else layer(hidden)
        return hidden


def batch() -> dict[str, torch.Tensor]:
    input_ids = torch.randint(1, 50, (ROWS, LENGTH), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(ROWS, LENGTH, dtype=torch.long)
    for row, real in enumerate((5, 12, LENGTH)):
        mask[row, :real] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def block_inputs(model: nn.Module, call: nn.Module) -> list[tuple[torch.Tensor, ...]]:
    """What each block received (its tensor inputs) in one training call of ``call``."""
    seen: list[tuple[torch.Tensor, ...]] = []

    def spy(module, args, kwargs):
        seen.append(
            tuple(t.detach().clone() for t in [*args, *kwargs.values()] if isinstance(t, torch.Tensor))
        )

    hooks = [layer.register_forward_pre_hook(spy, with_kwargs=True) for layer in model.layers]
    try:
        call(**batch())
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def assert_one_noise_per_copy(clean, noised, copies: Copies, reinject: bool) -> None:
    """The first block's copies and every re-injected input got one noise: alpha/sqrt(3) per real sequence."""
    first = noised[0][0] - clean[0][0]
    noise = copies.embeddings(first)
    assert torch.equal(copies.spread(noise), first), "every copy gets the same noise"
    if reinject:
        for clean_inputs, noised_inputs in zip(clean, noised, strict=True):
            assert torch.equal(noised_inputs[1] - clean_inputs[1], noise), "the embeddings handed in again"
    mask = batch()["attention_mask"].bool()
    assert noise[~mask].eq(0).all(), "padding gets none"
    for row in range(ROWS):
        assert noise[row][mask[row]].norm().item() == pytest.approx(ALPHA / math.sqrt(3), rel=0.25)


CASES = [
    pytest.param(Copies(), True, id="reinjected"),
    pytest.param(Copies(STREAMS), False, id="width-copies"),
    pytest.param(Copies(STREAMS, 2), True, id="stream-axis-reinjected"),
]


@pytest.mark.parametrize(("copies", "reinject"), CASES)
def test_every_copy_and_every_carrier_gets_the_same_noise(copies, reinject):
    model = Toy(copies, reinject).train()
    clean = block_inputs(model, model)
    with neftune(model, neftune_alpha=ALPHA, neftune_seed=0) as handle:
        for _ in range(2):  # the learning pass, then a steady-state one
            noised = block_inputs(model, model)
            assert_one_noise_per_copy(clean, noised, copies, reinject)
        logged = handle.read_logs()["neft/noise_norm"]
    assert logged == pytest.approx(ALPHA / math.sqrt(3), rel=0.25), "neft/noise_norm is one copy's"


@pytest.mark.parametrize(("copies", "reinject"), CASES)
def test_compiled_models_learn_eagerly_then_noise_every_carrier_in_the_graph(copies, reinject):
    torch._dynamo.reset()
    model = Toy(copies, reinject).train()
    clean = block_inputs(model, model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with neftune(compiled, neftune_alpha=ALPHA, neftune_seed=0):
        for _ in range(3):
            assert_one_noise_per_copy(clean, block_inputs(model, compiled), copies, reinject)


@pytest.mark.parametrize(("copies", "reinject"), CASES)
def test_attach_then_compile_noises_every_carrier_from_the_first_step(copies, reinject):
    """The probe pass at attach learnt the carriers: the compiled model is traced whole from its first call."""
    torch._dynamo.reset()
    model = Toy(copies, reinject).train()
    clean = block_inputs(model, model)
    with neftune(model, neftune_alpha=ALPHA, neftune_seed=0) as handle:
        assert handle.carriers is not None, "learnt at attach"
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        for _ in range(2):
            assert_one_noise_per_copy(clean, block_inputs(model, compiled), copies, reinject)


class Unprobeable(Toy):
    """Needs an input the probe batch of text does not have."""

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, extra: torch.Tensor
    ) -> torch.Tensor:
        return super().forward(input_ids, attention_mask)


def test_a_model_that_cannot_be_probed_says_at_attach_to_compile_after_one_step(caplog):
    """Said first, at attach; the first training pass, compiled, is then refused with the same advice (inside
    dynamo's error); run eagerly, it learns the carriers and a later compiled pass is right."""
    torch._dynamo.reset()
    model = Unprobeable(Copies(), reinject=True).train()
    with (
        caplog.at_level(logging.WARNING, logger="neft_plugins"),
        neftune(model, neftune_alpha=ALPHA) as handle,
    ):
        assert handle.carriers is None
        warnings = [record.getMessage() for record in caplog.records if "probe batch" in record.getMessage()]
        assert len(warnings) == 1 and "torch.compile the model after one training step" in warnings[0]
        with pytest.raises(Exception, match="run one training step before"):
            torch.compile(model, fullgraph=True, backend="aot_eager")(**batch(), extra=torch.ones(1))
        assert "so it got no noise" not in caplog.text, "no misleading warning beside the refusal"
        model(**batch(), extra=torch.ones(1))
        assert handle.carriers is not None


def test_the_probe_pass_leaves_no_trace(caplog):
    """The probe runs in eval mode under no_grad: the model's modes, the global RNG and the seeded noise stream
    are as they were, and nothing is recorded."""
    model = Toy(Copies(), reinject=True).train()
    model.layers[1].eval()
    modes = [module.training for module in model.modules()]
    rng = torch.get_rng_state()
    with neftune(model, neftune_alpha=ALPHA, neftune_seed=3) as handle:
        assert handle.carriers is not None
        assert [module.training for module in model.modules()] == modes
        assert torch.equal(torch.get_rng_state(), rng)
        assert handle.read_logs() == {"neft/alpha": ALPHA, "neft/tokens_noised": 0.0}
        assert handle.rng_state() is None, "the seeded stream has drawn nothing"


def test_a_recomputed_block_gets_the_noise_its_forward_got_on_every_carrier():
    """Reentrant checkpointing of every block, hooks included (as transformers 4.x does): backward's recompute
    of each block receives the very noise its forward pass got, on every input that carries the embeddings."""
    model = Toy(Copies(), reinject=True).train()
    model.checkpointed = True
    seen: list[torch.Tensor] = []
    with neftune(model, neftune_alpha=ALPHA, neftune_seed=0):
        model(**batch())  # learns the carriers
        spies = [
            layer.register_forward_pre_hook(lambda module, args: seen.append(args[1].detach().clone()))
            for layer in model.layers
        ]
        model(**batch()).square().mean().backward()
        for spy in spies:
            spy.remove()
    layers = len(model.layers)
    forward, recomputed = seen[:layers], seen[layers:]
    assert len(recomputed) == layers
    clean = block_inputs(model, model)
    for layer, (before, again) in enumerate(zip(forward, reversed(recomputed), strict=True)):
        assert not torch.equal(before, clean[layer][1]), "the forward pass's re-injected input is noised"
        assert torch.equal(before, again), "the recompute received the forward pass's noised input"
