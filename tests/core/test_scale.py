"""Distributed ranks, exact resume, gradient checkpointing and torch.compile, run for real on CPU."""

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from neft_plugins import NEFTuneCallback, neftune
from neft_plugins.engine.noise_stream import STATE_FILE
from support.distributed import torchrun
from support.layouts import packed, padded_rows
from support.matrix import on_newest
from support.noise import assert_near_paper_norm, paper_norm
from support.spy import first_block_inputs
from support.tiny import make_llama, make_lora, make_tokenizer, short_run_args, text_records
from support.versions import transformers_resumes_under_torch_2_13

HERE = Path(__file__).parent


# Unseeded and seeded (neftune_seed 7): the ranks must draw different noise either way.
@pytest.mark.parametrize(
    ("strategy", "seed", "wrapper"),
    [
        pytest.param("ddp", "none", "DistributedDataParallel", marks=on_newest("transformers")),
        pytest.param("ddp", "7", "DistributedDataParallel", marks=on_newest("transformers")),
        ("fsdp2", "7", "FSDP"),
    ],
)
def test_two_ranks_draw_different_noise_of_the_right_norm(
    tmp_path, strategy, seed, wrapper, assert_noise_norms
):
    torchrun(HERE / "distributed_train.py", str(tmp_path), seed, strategy)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(rank["wrapper"].startswith(wrapper) for rank in ranks)
    assert ranks[0]["torch_seed"] == ranks[1]["torch_seed"], "both ranks seeded the global RNG alike"
    # Identical batches on both ranks: identical noise would give identical per-sequence norms.
    assert len(ranks[0]["norms"]) == len(ranks[1]["norms"]) == 4
    assert all(a != b for a, b in zip(ranks[0]["norms"], ranks[1]["norms"], strict=True))
    for rank in ranks:
        assert_noise_norms(torch.tensor(rank["norms"]), 5.0, 20 * 64)


@on_newest("transformers")
def test_context_parallel_counts_the_whole_sequence(tmp_path, assert_noise_norms):
    """Each rank holds half of every sequence; L must still be the whole sequence's length."""
    torchrun(HERE / "context_parallel_train.py", str(tmp_path))
    result = json.loads((tmp_path / "context_parallel.json").read_text())
    assert_noise_norms(torch.tensor(result["with_group"]), 5.0, 5 * 64)
    # Counting only the local slice over-noises each rank's half: sqrt(2) too much for a sequence split in two.
    over = torch.tensor(result["without_group"]) / paper_norm(5)
    assert torch.allclose(over, torch.full_like(over, math.sqrt(2)), rtol=0.1), over
    assert "packed rows under context parallelism" in result["packed_refused"]


def resume_args(output_dir, max_steps):
    return short_run_args(
        SFTConfig,
        output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=4,
        save_strategy="steps",
        save_steps=2,
        use_cpu=True,
        max_length=64,
        learning_rate=1e-3,
        seed=3,
    )


def losses(trainer, steps=(3, 4)):
    return {
        entry["step"]: entry["loss"]
        for entry in trainer.state.log_history
        if entry.get("step") in steps and "loss" in entry
    }


@transformers_resumes_under_torch_2_13
def test_resume_continues_the_noise_exactly(tmp_path, caplog):
    dataset = Dataset.from_list(text_records(40, lengths=(3, 20)))
    tokenizer = make_tokenizer()

    def trainer(output_dir):
        return SFTTrainer(
            model=make_llama(),
            args=resume_args(output_dir, 4),
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[NEFTuneCallback(neftune_alpha=15, neftune_seed=5)],
        )

    uninterrupted = trainer(tmp_path / "a")
    uninterrupted.train()
    checkpoint = tmp_path / "a" / "checkpoint-2"
    assert (checkpoint / STATE_FILE.format(rank=0)).exists(), "the noise generator's state is checkpointed"

    resumed = trainer(tmp_path / "b")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert len(losses(resumed)) == 2 and losses(resumed) == losses(uninterrupted)

    state_file = checkpoint / STATE_FILE.format(rank=0)
    saved = torch.load(state_file, weights_only=True)
    assert saved["world_size"] == 1
    torch.save({**saved, "world_size": 2}, state_file)
    with caplog.at_level(logging.WARNING, logger="neft_plugins"):
        trainer(tmp_path / "d").train(resume_from_checkpoint=str(checkpoint))
    assert "was saved by 2 processes and resumes on 1" in caplog.text

    state_file.unlink()  # without the saved state the noise would restart
    caplog.clear()
    restarted = trainer(tmp_path / "c")
    with caplog.at_level(logging.WARNING, logger="neft_plugins"):
        restarted.train(resume_from_checkpoint=str(checkpoint))
    assert losses(restarted) != losses(resumed)
    assert (
        f"{checkpoint} has no {STATE_FILE.format(rank=0)}, so the noise stream starts afresh" in caplog.text
    )


def captured_noise_run(model, inputs, trainable):
    """One seeded training step; returns (gradients, the exact noise that was added), and checks that a
    recompute in backward (transformers 4.x checkpoints the layer's hooks too; 5.x only its forward) received
    the same noise as the forward pass."""
    embeddings = model.get_input_embeddings()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with neftune(model, neftune_alpha=15, neftune_seed=1):
        forward, *recomputed = first_block_inputs(
            base.model.layers[0], lambda: model(**inputs).loss.backward()
        )
    assert all(torch.equal(forward, each) for each in recomputed), (
        "the first block was recomputed with other noise"
    )
    with torch.no_grad():
        noise = forward - embeddings(inputs["input_ids"])
    return {name: p.grad.clone() for name, p in trainable(model)}, noise


@pytest.mark.parametrize("mode", ["reentrant", "non_reentrant", "peft_input_require_grads"])
def test_gradient_checkpointing_gradients_match_a_hand_computed_reference(mode):
    from peft import get_peft_model

    def build():
        model = make_llama()
        if mode == "peft_input_require_grads":
            model = get_peft_model(model, make_lora())
        return model.train()

    def trainable(model):
        return [(name, p) for name, p in model.named_parameters() if p.requires_grad]

    inputs = padded_rows([7, 20, 20], 60)

    model = build()
    model.gradient_checkpointing_enable(
        gradient_checkpointing_kwargs={"use_reentrant": mode != "non_reentrant"}
    )
    if mode == "peft_input_require_grads":
        model.enable_input_require_grads()
    gradients, noise = captured_noise_run(model, inputs, trainable)
    assert torch.count_nonzero(noise[0, 7:]) == 0 and torch.count_nonzero(noise[0, :7]) == 7 * 64

    reference = build()  # same initial weights, no checkpointing, the same noise added by hand
    hook = reference.get_input_embeddings().register_forward_hook(lambda m, a, out: out + noise)
    try:
        reference(**inputs).loss.backward()
    finally:
        hook.remove()
    for name, parameter in trainable(reference):
        assert torch.allclose(gradients[name], parameter.grad, atol=1e-6), name


def compile_batches() -> dict[str, dict[str, torch.Tensor]]:
    """A padded batch (attention_mask) and a packed row (restarting position_ids, no mask), 26 tokens each."""
    padded = padded_rows([10, 16], 60)
    return {"padded": padded, "packed": packed(padded)}


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_the_noise_path_adds_no_graph_break(layout):
    torch._dynamo.reset()
    model = make_llama().train()
    batch = compile_batches()[layout]
    without = torch._dynamo.explain(model)(**batch)
    with neftune(model, neftune_alpha=5, neftune_seed=0):
        model(**batch)  # the first noised pass learns the carriers of the embeddings, eagerly
        explained = torch._dynamo.explain(model)(**batch)
    assert without.graph_break_count == 0, without.break_reasons
    assert explained.graph_break_count == 0, [reason.reason for reason in explained.break_reasons]


def train_steps(model, batch, steps, compile_after_attach=False, **keys):
    """``steps`` noised SGD steps under ``neftune(model, **keys)`` (with ``compile_after_attach``, through
    ``torch.compile(model, fullgraph=True)`` made after NEFTune attached); the graphs compiled after each step."""
    from torch._dynamo.utils import counters

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    graphs = []
    with neftune(model, **keys) as handle:
        call = torch.compile(model, fullgraph=True, backend="aot_eager") if compile_after_attach else model
        for step in range(steps):
            handle.set_step(step, steps)
            call(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            graphs.append(counters["stats"]["unique_graphs"])
    return graphs


COMPILE_KEYS = {"neftune_alpha": 5, "neftune_schedule": "cosine", "neftune_seed": 1}


def eager_records(recorder, batch, steps):
    """The records of an eager run of ``steps`` steps; the recorder and dynamo's counters then start afresh."""
    from torch._dynamo.utils import counters

    train_steps(make_llama().train(), batch, steps, **COMPILE_KEYS)
    eager = list(recorder.records)
    recorder.records.clear()
    torch._dynamo.reset()
    counters.clear()
    return eager


def assert_the_eager_noise(records, eager, tokens):
    """Every pass reached the observer with the eager run's alpha, tokens and per-sequence noise norms."""
    assert len(records) == len(eager), "every compiled training pass reached the observer"
    assert [int(record.tokens_noised) for record in records] == [tokens] * len(eager)
    assert [record.alpha for record in records] == [record.alpha for record in eager]
    for compiled_record, eager_record in zip(records, eager, strict=True):
        compiled_norms, eager_norms = (
            compiled_record.sequence_noise_norms(),
            eager_record.sequence_noise_norms(),
        )
        assert torch.allclose(compiled_norms, eager_norms, rtol=1e-5), (compiled_norms, eager_norms)


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_attach_then_compile_traces_whole_from_the_first_step(recorder, layout):
    """``attach`` then ``torch.compile(fullgraph=True)``: the probe pass at attach learnt where the embeddings go,
    so the very first training step is compiled (no eager pass) and every step, the first included, gets the
    eager run's noise from the same seeded stream."""
    batch = compile_batches()[layout]
    eager = eager_records(recorder, batch, 4)
    graphs = train_steps(make_llama().train(), batch, 4, compile_after_attach=True, **COMPILE_KEYS)
    assert graphs[0] > 0 and graphs == [graphs[0]] * 4, f"graphs after each step: {graphs}"
    assert_the_eager_noise(recorder.records, eager, tokens=26)


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_fullgraph_compiled_training_gets_eager_noise_without_recompiling(recorder, layout):
    """A cosine schedule changes alpha every step and an observer sees every pass: neither recompiles. The noise
    comes from the same seeded stream as in eager mode, so each sequence gets the eager run's noise norm."""
    batch = compile_batches()[layout]
    eager = eager_records(recorder, batch, 6)
    compiled = torch.compile(make_llama().train(), fullgraph=True, backend="aot_eager")
    graphs = train_steps(compiled, batch, 6, **COMPILE_KEYS)
    # The first pass runs eagerly (it learns the carriers of the embeddings), then one graph serves every step.
    assert graphs[0] == 0 and graphs[1] > 0 and graphs[1:] == [graphs[1]] * 5, (
        f"graphs after each step: {graphs}"
    )
    assert_the_eager_noise(recorder.records, eager, tokens=26)
    assert_near_paper_norm(eager[-1].sequence_noise_norms().tolist(), eager[-1].alpha, rel=0.2)
