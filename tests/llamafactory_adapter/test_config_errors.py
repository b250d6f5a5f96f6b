"""Our keys are split out and validated before LLaMA-Factory (or any model) loads; bad ones stop the run
with a message naming the key, the value and what is allowed."""

from __future__ import annotations

from importlib import metadata

import pytest

from neft_plugins import CONFIG_KEYS, NEFTuneConfigError, NEFTuneConflictError
from neft_plugins.integrations.llamafactory.cli import main
from neft_plugins.integrations.llamafactory.train import load_args, prepare_args
from neft_plugins.versions import TESTED
from support.llamafactory_cli import EXAMPLES, neft_llamafactory, tiny_overrides
from support.logs import double_noise_error

BOTH_KEYS = double_noise_error("neftune_noise_alpha", 5, 5)


def test_split_removes_our_keys_and_keeps_the_rest():
    args = load_args(EXAMPLES / "sft_lora_neftune.yaml", ["neftune_alpha=7.5", "learning_rate=3e-4"])
    config, rest = prepare_args(args)
    assert config.neftune_alpha == 7.5 and config.neftune_seed == 42
    assert not set(CONFIG_KEYS) & set(rest)
    assert rest["learning_rate"] == 3e-4 and rest["finetuning_type"] == "lora"
    assert "neftune_noise_alpha" not in rest


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["neftune_noise_alpha=5"], NEFTuneConflictError, BOTH_KEYS),
        (
            ["neftune_noise_alpha=5", "neftune_alpha=0"],
            NEFTuneConflictError,
            double_noise_error("neftune_noise_alpha", 5, 0),
        ),
        (
            ["neftune_schedul=cosine"],
            NEFTuneConfigError,
            "neftune_schedul: unknown key; did you mean neftune_schedule?",
        ),
        (["neftune_alpha=-1"], NEFTuneConfigError, "neftune_alpha: got -1; expected a finite number >= 0"),
        (
            ["neftune_alpha=abc"],
            NEFTuneConfigError,
            "neftune_alpha: got 'abc' (str); expected a finite number",
        ),
        (
            ["neftune_distribution=cauchy"],
            NEFTuneConfigError,
            "neftune_distribution: got 'cauchy'; expected one of 'uniform', 'gaussian'",
        ),
        (
            ["neftune_scope=everything"],
            NEFTuneConfigError,
            "neftune_scope: got 'everything'; expected one of",
        ),
        (["stage=ppo"], NEFTuneConfigError, "neftune_alpha: got 5.0 with stage: 'ppo'; LLaMA-Factory's PPO"),
    ],
)
def test_bad_config_is_rejected(overrides, error, message):
    args = load_args(EXAMPLES / "sft_lora_neftune.yaml", overrides)
    with pytest.raises(error) as raised:
        prepare_args(args)
    assert message in str(raised.value)


def test_builtin_key_alone_passes_through_with_a_warning(caplog):
    args = load_args(EXAMPLES / "sft_lora_neftune.yaml", ["neftune_noise_alpha=5"])
    del args["neftune_alpha"]
    config, rest = prepare_args(args)
    assert not config.enabled and rest["neftune_noise_alpha"] == 5
    assert "neftune_noise_alpha uses transformers' built-in NEFTune" in caplog.text


def test_cli_rejects_both_keys_before_loading_anything():
    """The console script itself, in a process of its own: exit status 2, our message, no traceback."""
    result = neft_llamafactory(
        "train", EXAMPLES / "sft_full_neftune.yaml", "neftune_noise_alpha=5", timeout=120
    )
    assert result.returncode == 2
    assert f"neft-llamafactory: error: {BOTH_KEYS}" in result.stderr
    assert "Loading dataset" not in result.text and "Traceback" not in result.stderr


def test_cli_rejects_bad_value(capsys):
    assert main(["train", str(EXAMPLES / "sft_full_neftune.yaml"), "neftune_length=row"]) == 2
    assert "neft-llamafactory: error: neftune_length: got 'row'; expected one of 'sequence', 'padded'" in (
        capsys.readouterr().err
    )


def test_llamafactory_still_rejects_unknown_keys(tiny_model, tmp_path):
    """Only our keys are taken out: a typo is still LLaMA-Factory's error, raised before the model loads."""
    overrides = tiny_overrides(tiny_model, tmp_path)
    result = neft_llamafactory(
        "train", EXAMPLES / "sft_full_neftune.yaml", *overrides, "lerning_rate=5", timeout=300
    )
    assert result.returncode != 0
    assert "lerning_rate" in result.stderr and "not used by the HfArgumentParser" in result.stderr
    assert "attached NEFTune" not in result.stderr and "trainable params" not in result.text


def test_command_line_form_splits_our_keys():
    argv = ["--stage", "sft", "--neftune_alpha", "15", "--neftune_seed=7", "--neftune_scope", "response"]
    config, rest = prepare_args(argv)
    assert (config.neftune_alpha, config.neftune_seed, config.neftune_scope) == (15.0, 7, "response")
    assert rest == ["--stage", "sft"]
    with pytest.raises(NEFTuneConflictError, match="neftune_noise_alpha: got 5 beside neftune_alpha: 5"):
        prepare_args(["--neftune_noise_alpha", "5", "--neftune_alpha", "5"])
    with pytest.raises(NEFTuneConfigError, match="stage: 'ppo'"):
        prepare_args(["--stage=ppo", "--neftune_alpha", "5"])


def test_a_misspelt_flag_gets_our_did_you_mean_before_llamafactory_parses(capsys):
    assert main(["train", "--stage", "sft", "--neftune_alhpa", "5"]) == 2
    assert "neft-llamafactory: error: neftune_alhpa: unknown key; did you mean neftune_alpha?" in (
        capsys.readouterr().err
    )


def test_cli_version_names_the_tested_llamafactory(capsys):
    assert main(["version"]) == 0
    installed = metadata.version("llamafactory")
    assert (
        f"llamafactory {installed} (tested: {', '.join(TESTED['llamafactory'])})" in capsys.readouterr().out
    )
