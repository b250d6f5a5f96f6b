"""`neft_plugins.mlx.train` (MLX-LM's `mlx_lm.tuner.train` with our keys): every way MLX-LM trains, measured by
the spy inside the compiled step."""

from __future__ import annotations

import json
import sys

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx_adapter.assets import tiny_model
from mlx_adapter.spy import FirstBlockSpy
from mlx_adapter.test_lora_cli import assert_the_papers_noise
from mlx_lm.tuner import trainer
from mlx_lm.tuner.utils import linear_to_lora_layers

from neft_plugins import NEFTuneConfig, NEFTunePluginError, hookimpl
from neft_plugins.mlx import attach, train
from neft_plugins.plugins import plugin_manager
from support.cli_run import run_cli

LORA = {"rank": 4, "dropout": 0.0, "scale": 10.0}


def records(count: int = 24, seed: int = 0, prompt: bool = False) -> list[tuple[list[int], int]]:
    rng = np.random.default_rng(seed)
    rows = [
        [int(token) for token in rng.integers(1, 128, size=int(rng.integers(4, 40)))] for _ in range(count)
    ]
    return [(row, len(row) // 2 if prompt else 0) for row in rows]


def fixed_batches(data, size: int = 4):
    """MLX-LM's batch layout (right-padded with 0 to 1 + a multiple of 32, lengths = (offset, length)) in a fixed
    order, the same in every run."""

    def batches(dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
        index = 0
        while True:
            rows = [data[(index + j) % len(data)] for j in range(size)]
            index += size
            width = 1 + 32 * ((max(len(row) for row, _ in rows) + 31) // 32)
            array = np.zeros((size, width), np.int32)
            for j, (row, _) in enumerate(rows):
                array[j, : len(row)] = row
            yield mx.array(array), mx.array([[offset, len(row)] for row, offset in rows])
            if not loop and index >= len(data):
                return

    return batches


def short_args(tmp_path, **overrides) -> trainer.TrainingArgs:
    tmp_path.mkdir(parents=True, exist_ok=True)
    defaults = {
        "batch_size": 4,
        "iters": 3,
        "steps_per_report": 1,
        "steps_per_eval": 1000,
        "max_seq_length": 64,
        "adapter_file": str(tmp_path / "adapters.safetensors"),
    }
    return trainer.TrainingArgs(**{**defaults, **overrides})


def lora_model(kind: str = "lora", seed: int = 0) -> nn.Module:
    model = tiny_model(seed=seed)
    if kind == "quantized":
        nn.quantize(model, group_size=32, bits=4)
    model.freeze()
    if kind == "full":
        model.unfreeze()
    else:
        linear_to_lora_layers(model, 2, LORA, use_dora=kind == "dora")
    return model


class Reports(trainer.TrainingCallback):
    def __init__(self, then: trainer.TrainingCallback | None = None) -> None:
        self.reports: list[dict] = []
        self.then = then

    def on_train_loss_report(self, train_info: dict) -> None:
        self.reports.append(dict(train_info))
        if self.then is not None:
            self.then.on_train_loss_report(train_info)


def spied_run(tmp_path, kind="lora", data=None, seed=0, args=None, **keys):
    model = lora_model(kind, seed=seed)
    spy = FirstBlockSpy(model)
    reports = Reports(spy)
    try:
        train(
            model,
            optim.Adam(learning_rate=1e-3),
            data or records(),
            args=args or short_args(tmp_path),
            iterate_batches=fixed_batches(data or records()),
            training_callback=reports,
            **keys,
        )
    finally:
        spy.remove()
    return spy, reports.reports, model


def same_noise(left, right) -> bool:
    """The same noise, step for step: the spy subtracts the clean embeddings, which differ between models in the
    last float32 bit of the sum."""
    left_norms = [norm for step in left for norm in step.noise_norms]
    right_norms = [norm for step in right for norm in step.noise_norms]
    return len(left) == len(right) and left_norms == pytest.approx(right_norms, rel=1e-5)


@pytest.mark.parametrize("kind", ["lora", "dora", "full", "quantized"])
def test_every_fine_tune_type_gets_the_papers_noise(tmp_path, kind):
    spy, _, model = spied_run(tmp_path, kind, neftune_alpha=5)
    assert_the_papers_noise(spy)
    assert type(model.layers[0]).__name__ == "TransformerBlock" and "_neftune" not in model.layers[0]


def test_gaussian_noise_has_the_uniforms_energy(tmp_path):
    spy, _, _ = spied_run(
        tmp_path, args=short_args(tmp_path, iters=6), neftune_alpha=5, neftune_distribution="gaussian"
    )
    ratios = spy.ratios(5.0)
    # A normal of variance 1/3 per element: the relative spread of a norm is 0.707/sqrt(L*d).
    spreads = [0.7071 / (tokens * step.width) ** 0.5 for step in spy.steps for tokens in step.tokens]
    scores = [(ratio - 1) / spread for ratio, spread in zip(ratios, spreads, strict=True)]
    assert abs(sum(scores) / len(scores)) < 4 / len(scores) ** 0.5
    assert max(map(abs, scores)) < 6


def test_the_schedule_runs_over_optimizer_steps_with_gradient_accumulation(tmp_path):
    args = short_args(tmp_path, iters=4, grad_accumulation_steps=2)
    spy, reports, _ = spied_run(tmp_path, args=args, neftune_alpha=6, neftune_schedule="linear")
    # Two optimizer steps of two passes each: step 0 gets alpha, step 1 alpha * (1 - 1/2).
    assert [report["neft/alpha"] for report in reports] == [6.0, 6.0, 3.0, 3.0]
    for step, alpha in zip(spy.steps, (6.0, 6.0, 3.0, 3.0), strict=True):
        for norm in step.noise_norms:
            assert norm / (alpha / 3**0.5) == pytest.approx(1, abs=0.15)


def test_grad_checkpoint_checkpoints_every_block_and_draws_the_same_noise(tmp_path):
    plain = Reports()
    checkpointed = Reports()
    for reports, grad_checkpoint in ((plain, False), (checkpointed, True)):
        model = lora_model()
        train(
            model,
            optim.Adam(learning_rate=1e-3),
            records(),
            args=short_args(tmp_path, grad_checkpoint=grad_checkpoint),
            iterate_batches=fixed_batches(records()),
            training_callback=reports,
            neftune_alpha=5,
            neftune_seed=3,
        )
    assert type(model.layers[1]).__call__.__name__ == "checkpointed_fn"  # MLX-LM's, on the blocks' own class
    for left, right in zip(plain.reports, checkpointed.reports, strict=True):
        assert left["train_loss"] == pytest.approx(right["train_loss"], rel=1e-5)
        assert left["neft/noise_norm"] == pytest.approx(right["neft/noise_norm"], rel=1e-6)


def test_the_seed_is_independent_of_the_global_rng_and_resuming_continues_the_stream(tmp_path):
    data = records(48)
    whole, other_rng = (
        spied_run(
            tmp_path / name, data=data, seed=seed, args=short_args(tmp_path / name, iters=4), neftune_alpha=5,
            neftune_seed=7,
        )[0]
        for name, seed in (("whole", 0), ("rng", 1))
    )  # fmt: skip
    assert same_noise(other_rng.steps, whole.steps)
    other_seed, _, _ = spied_run(
        tmp_path / "seed",
        data=data,
        args=short_args(tmp_path / "seed", iters=4),
        neftune_alpha=5,
        neftune_seed=8,
    )
    assert not same_noise(other_seed.steps, whole.steps)

    first = tmp_path / "first"
    spied_run(first, data=data, args=short_args(first, iters=2), neftune_alpha=5)  # no seed: one drawn, saved
    saved = json.loads((first / "adapters.neftune.json").read_text())
    assert saved["passes"] == 2
    # The resumed run sees batches 3 and 4 and continues the first run's stream from pass 2.
    model = lora_model()
    spy = FirstBlockSpy(model)
    try:
        train(
            model,
            optim.Adam(learning_rate=1e-3),
            data,
            args=short_args(tmp_path / "resumed", iters=2),
            iterate_batches=fixed_batches(data[8:]),
            training_callback=spy,
            resume_adapter_file=str(first / "adapters.safetensors"),
            neftune_alpha=5,
        )
    finally:
        spy.remove()
    again = tmp_path / "again"
    reference, _, _ = spied_run(
        again, data=data, args=short_args(again, iters=4), neftune_alpha=5, neftune_seed=saved["seed"]
    )
    assert same_noise(spy.steps, reference.steps[2:])


def test_generation_and_evaluation_are_bit_identical_while_attached():
    model = lora_model()
    ids = mx.array([[5, 9, 17, 33, 2, 8]])
    clean = model(ids)
    handle = attach(model, neftune_alpha=5, total_steps=10)
    try:
        model.train()
        outside_the_loss = model(ids)  # generation, or any call not through the loss
        model.eval()
        evaluated = handle.loss(lambda m, batch, lengths: m(batch))(model, ids, mx.array([[0, 6]]))
        model.train()
        noised = handle.loss(lambda m, batch, lengths: m(batch))(model, ids, mx.array([[0, 6]]))
    finally:
        handle.detach()
    assert mx.array_equal(outside_the_loss, clean).item() and mx.array_equal(evaluated, clean).item()
    assert not mx.array_equal(noised, clean).item()
    assert mx.array_equal(model(ids), clean).item()


def test_the_prompt_and_response_scopes_noise_their_part_only():
    model = lora_model()
    ids = mx.array([[5, 9, 17, 33, 2, 8, 0, 0]])
    spy = FirstBlockSpy(model)
    seen = {}
    try:
        for scope in ("prompt", "response"):
            handle = attach(model, neftune_alpha=5, neftune_scope=scope, total_steps=1)
            model.train()
            handle.loss(lambda m, batch, lengths: m(batch))(model, ids, mx.array([[2, 6]]))
            handle.detach()
            seen[scope] = model["_spy"]["norms"].item()
    finally:
        spy.remove()
    # Two prompt tokens, four response tokens: each part alone carries alpha/sqrt(3).
    assert seen["prompt"] == pytest.approx(5 / 3**0.5, rel=0.35)
    assert seen["response"] == pytest.approx(5 / 3**0.5, rel=0.25)


def test_a_plugin_distribution_is_refused_on_mlx_naming_the_plugin():
    class Laplace:
        @hookimpl
        def neft_distributions(self):
            return {"laplace": lambda out, magnitude, generator: out}

    plugin = Laplace()
    plugin_manager().register(plugin, name="my-laplace-plugin")
    try:
        config = NEFTuneConfig(neftune_alpha=5, neftune_distribution="laplace")
        with pytest.raises(
            NEFTunePluginError, match="'laplace' comes from my-laplace-plugin, whose sampler fills torch"
        ):
            attach(lora_model(), config, total_steps=1)
    finally:
        plugin_manager().unregister(plugin)


def test_a_model_without_blocks_is_refused_with_the_reason():
    from neft_plugins import NEFTuneAttachError

    class NoBlocks(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(16, 8)

        def __call__(self, ids):
            return self.embed(ids)

    with pytest.raises(NEFTuneAttachError, match=r"NoBlocks has no model\.layers list of blocks"):
        attach(NoBlocks(), neftune_alpha=5)


def test_the_mlx_route_runs_with_torch_unimportable(tmp_path):
    """The MLX cell runs in an environment without torch; here torch is also made unimportable in a process of its
    own (transformers, which MLX-LM imports, then takes it for absent), so the proof holds wherever it runs."""
    script = (
        "import sys, pathlib\n"
        "sys.modules['torch'] = None\n"
        "from mlx_adapter.test_train_route import spied_run\n"
        f"spied_run(pathlib.Path({str(tmp_path)!r}), neftune_alpha=5)\n"
        "from neft_plugins.integrations.mlx.cli import main\n"
        "assert main(['version']) == 0\n"
    )
    done = run_cli([sys.executable, "-c", script], tmp_path)
    assert done.returncode == 0, done.describe()
    assert "detached NEFTune from Model.layers[0] (TransformerBlock) input: 3 training passes" in done.stderr


def test_resuming_with_another_seed_or_world_size_says_the_stream_does_not_continue(tmp_path, caplog):
    (tmp_path / "adapters.neftune.json").write_text('{"seed": 1, "passes": 2, "world_size": 2}')
    spied_run(tmp_path / "run", resume_adapter_file=str(tmp_path / "adapters.safetensors"), neftune_alpha=5)
    assert "noise stream was saved by 2 processes with seed 1; this run has 1 with seed 1" in caplog.text
    spied_run(tmp_path / "none", resume_adapter_file=str(tmp_path / "missing.safetensors"), neftune_alpha=5)
    assert "missing.safetensors has no NEFTune noise stream beside it" in caplog.text


def test_a_scope_that_noises_nothing_says_so(tmp_path, caplog):
    spied_run(tmp_path, neftune_alpha=5, neftune_scope="prompt")  # offsets 0: no prompt tokens
    assert "no token got noise in the training passes so far (neftune_scope=prompt" in caplog.text


def test_an_untested_mlx_lm_warns_once_naming_the_tested_range(tmp_path, monkeypatch, caplog):
    from neft_plugins import versions

    real = versions.installed_version
    monkeypatch.setattr(
        versions, "installed_version", lambda name: "99.0" if name == "mlx-lm" else real(name)
    )
    monkeypatch.setattr(versions, "_warned", set())
    spied_run(tmp_path / "first", neftune_alpha=5)
    spied_run(tmp_path / "second", neftune_alpha=5)
    warnings = [record.getMessage() for record in caplog.records if "untested" in record.getMessage()]
    assert warnings == [
        "neft_plugins: mlx-lm 99.0 is untested (tested: mlx-lm 0.32.2); every hook point it uses was found, so it runs"
    ]
