"""`neft-mlx lora`: MLX-LM's own `mlx_lm.lora` with our keys, its compiled training step measured by a spy
independent of the library."""

from __future__ import annotations

import json

import pytest
import yaml
from mlx_adapter.runs import run_lora

from support.cli_run import run_cli

ALPHA = 5.0


def assert_the_papers_noise(spy, alpha: float = ALPHA) -> None:
    ratios, spreads = spy.ratios(alpha), spy.spreads()
    assert ratios, "the spy saw no training step"
    scores = [(ratio - 1) / spread for ratio, spread in zip(ratios, spreads, strict=True)]
    assert max(map(abs, scores)) < 6, scores  # each sequence inside the uniform spread
    assert abs(sum(scores) / len(scores)) < 4 / len(scores) ** 0.5, scores  # and no bias across them
    assert all(step.padding_max == 0.0 for step in spy.steps)


@pytest.fixture(scope="module")
def noised_run(tmp_path_factory, model_dir, data_dir):
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run_lora(
            monkeypatch,
            model_dir,
            data_dir,
            tmp_path_factory.mktemp("noised"),
            "--iters",
            "6",
            "--steps-per-eval",
            "6",
            "--save-every",
            "3",
            "--neftune_alpha",
            str(ALPHA),
            "--neftune_seed",
            "1",
        )


def test_each_sequence_gets_alpha_over_root_3_and_padding_nothing_in_the_compiled_step(noised_run):
    assert noised_run.status == 0
    assert len(noised_run.spy.steps) == 6
    assert_the_papers_noise(noised_run.spy)
    # Different lengths every step, through one compiled step.
    assert len({tuple(step.tokens) for step in noised_run.spy.steps}) > 1


def test_the_reports_carry_the_neft_entries(noised_run):
    report = noised_run.reports[-1]
    assert report["neft/alpha"] == ALPHA
    assert report["neft/noise_norm"] == pytest.approx(ALPHA / 3**0.5, rel=0.1)
    assert report["neft/tokens_noised"] == sum(noised_run.spy.steps[-1].tokens)
    assert report["neft/noise_to_embed"] == pytest.approx(
        report["neft/noise_norm"] / report["neft/embed_norm"]
    )


def test_the_noise_stream_is_saved_beside_each_adapter_checkpoint(noised_run):
    saved = {
        path.name: json.loads(path.read_text())
        for path in sorted(noised_run.adapter_path.glob("*.neftune.json"))
    }
    assert saved == {
        "0000003_adapters.neftune.json": {"seed": 1, "passes": 3, "world_size": 1},
        "0000006_adapters.neftune.json": {"seed": 1, "passes": 6, "world_size": 1},
        "adapters.neftune.json": {"seed": 1, "passes": 6, "world_size": 1},
    }


def test_evaluation_is_bit_identical_to_a_run_without_neftune(noised_run, tmp_path, model_dir, data_dir):
    with pytest.MonkeyPatch.context() as monkeypatch:
        clean = run_lora(
            monkeypatch, model_dir, data_dir, tmp_path, "--iters", "1", "--steps-per-eval", "6", "--seed", "0"
        )
    assert clean.val_losses[0] == noised_run.val_losses[0]  # before any training step: the same weights


def test_keys_from_the_yaml_config_and_the_prompt_scope(tmp_path, model_dir, data_dir):
    config = tmp_path / "lora.yml"
    config.write_text(yaml.safe_dump({"neftune_alpha": 10, "neftune_scope": "response", "mask_prompt": True}))
    with pytest.MonkeyPatch.context() as monkeypatch:
        run = run_lora(
            monkeypatch, model_dir, data_dir, tmp_path / "out", "--iters", "2", "--config", str(config)
        )
    assert run.status == 0 and run.reports[-1]["neft/alpha"] == 10
    # Only the response is noised: fewer tokens than the rows hold.
    assert 0 < run.reports[-1]["neft/tokens_noised"] < sum(run.spy.steps[-1].tokens)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--neftune_alpah", "5"], "neftune_alpah: unknown key; did you mean neftune_alpha?"),
        (["--neftune-alpha", "-1"], "neftune_alpha: got -1"),
        (
            ["--neftune_alpha", "5", "--neftune_distribution", "laplace"],
            "neftune_distribution: got 'laplace'",
        ),
    ],
)
def test_a_bad_key_stops_the_command_before_any_model_loads(argv, message, capsys):
    from neft_plugins.integrations.mlx.cli import main

    assert main(["lora", "--model", "/nonexistent/model", "--train", *argv]) == 2
    assert f"neft-mlx: error: {message}" in capsys.readouterr().err


def test_the_console_script_runs_mlx_lm_and_prints_the_reports(tmp_path, model_dir, data_dir):
    command = [
        *("neft-mlx", "lora"),
        *("--model", str(model_dir), "--train", "--data", str(data_dir), "--iters", "2"),
        *("--batch-size", "4", "--num-layers", "2", "--steps-per-report", "1", "--max-seq-length", "64"),
        *("--adapter-path", str(tmp_path), "--neftune_alpha", "5"),
    ]
    done = run_cli(command, tmp_path)
    assert done.returncode == 0, done.describe()
    assert "Iter 2: neft/alpha 5, neft/tokens_noised" in done.stdout
    assert "attached NEFTune at Model.layers[0] (TransformerBlock) input" in done.stderr
    assert "detached NEFTune from Model.layers[0] (TransformerBlock) input: 2 training passes" in done.stderr
    assert "torch" not in done.stderr
