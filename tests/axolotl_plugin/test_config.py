"""The ``neftune_*`` keys join Axolotl's config schema: bad values and the double-NEFTune combination are
refused when Axolotl loads the config (``axolotl.cli.config.load_cfg``, what ``axolotl train`` calls first),
with messages that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from neft_plugins import CONFIG_KEYS, NEFTuneCallback
from neft_plugins.keys import KEYS
from support.axolotl_cli import example_config, run_axolotl
from support.logs import ATTACHED, double_noise_error
from support.tiny import Tiny


def load(tiny: Tiny, folder: Path, **overrides: Any):
    from axolotl.cli.config import load_cfg

    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(example_config("lora", tiny, folder, **overrides)), encoding="utf-8")
    return load_cfg(str(path))


def test_args_model_has_exactly_the_core_keys():
    from neft_plugins.integrations.axolotl import NEFTuneArgs, NEFTunePlugin

    assert tuple(NEFTuneArgs.model_fields) == CONFIG_KEYS
    # The help text of each key is the core's one declaration.
    schema = NEFTuneArgs.model_json_schema()["properties"]
    assert {name: schema[name]["description"] for name in CONFIG_KEYS} == {key.name: key.help for key in KEYS}
    assert NEFTunePlugin().get_input_args() == "neft_plugins.integrations.axolotl.args.NEFTuneArgs"


def test_a_missing_plugin_hook_point_is_the_one_compatibility_error(monkeypatch):
    from axolotl.integrations.base import BasePlugin

    from neft_plugins import NEFTuneCompatibilityError
    from neft_plugins.integrations.axolotl import NEFTunePlugin
    from neft_plugins.versions import installed_version, tested_range

    monkeypatch.delattr(BasePlugin, "add_callbacks_post_trainer")
    with pytest.raises(NEFTuneCompatibilityError) as raised:
        NEFTunePlugin()
    assert str(raised.value) == (
        f"axolotl {installed_version('axolotl')}: BasePlugin.add_callbacks_post_trainer missing; NEFTunePlugin "
        f"relies on it. Install a tested version ({tested_range('axolotl')})."
    )


class TrainerStandIn:
    """What the callback's binding wraps on a trainer: ``train`` and ``log``."""

    def train(self, resume_from_checkpoint=None):
        return None

    def log(self, logs):
        return None


def test_valid_keys_load_and_become_the_callback_config(tiny, tmp_path):
    from neft_plugins.integrations.axolotl import NEFTunePlugin

    cfg = load(
        tiny,
        tmp_path,
        neftune_alpha=10,
        neftune_distribution="gaussian",
        neftune_schedule="cosine",
        neftune_scope="response",
        neftune_seed=7,
        neftune_clean_loss=True,
    )
    assert cfg.neftune_alpha == 10.0
    trainer = TrainerStandIn()
    [callback] = NEFTunePlugin().add_callbacks_post_trainer(cfg, trainer=trainer)
    assert isinstance(callback, NEFTuneCallback)
    assert callback._trainer is trainer, "the plugin binds the callback to the trainer Axolotl built"
    assert callback.config.as_dict() == {
        "neftune_alpha": 10.0,
        "neftune_distribution": "gaussian",
        "neftune_schedule": "cosine",
        "neftune_scope": "response",
        "neftune_length": "sequence",
        "neftune_seed": 7,
        "neftune_clean_loss": True,
    }


def test_alpha_zero_adds_no_callback(tiny, tmp_path):
    from neft_plugins.integrations.axolotl import NEFTunePlugin

    cfg = load(tiny, tmp_path, neftune_alpha=0)
    assert NEFTunePlugin().add_callbacks_post_trainer(cfg, trainer=None) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"neftune_alpha": -1}, "neftune_alpha: got -1; expected a finite number >= 0"),
        ({"neftune_alpha": "five"}, "neftune_alpha: got 'five' (str); expected a finite number >= 0"),
        (
            {"neftune_distribution": "laplace"},
            "neftune_distribution: got 'laplace'; expected one of 'uniform'",
        ),
        ({"neftune_schedule": "sometimes"}, "neftune_schedule: got 'sometimes'; expected one of 'constant'"),
        (
            {"neftune_scope": "outputs"},
            "neftune_scope: got 'outputs'; expected one of 'all', 'prompt', 'response'",
        ),
        ({"neftune_length": "row"}, "neftune_length: got 'row'; expected one of 'sequence', 'padded'"),
        ({"neftune_seed": -3}, "neftune_seed: got -3; expected an integer in [0, 2**63)"),
        (
            {"neftune_length": "padded", "neftune_scope": "response"},
            "neftune_scope: got 'response' with neftune_length: 'padded'",
        ),
    ],
)
def test_bad_values_fail_at_config_load_naming_the_key(tiny, tmp_path, overrides, message):
    with pytest.raises(ValueError) as error:
        load(tiny, tmp_path, **overrides)
    assert message in str(error.value)


@pytest.mark.parametrize("alpha", [5, 0])
@pytest.mark.parametrize("builtin_key", ["neftune_noise_alpha", "noisy_embedding_alpha"])
def test_builtin_key_beside_ours_is_refused_even_with_alpha_0(tiny, tmp_path, builtin_key, alpha):
    with pytest.raises(ValueError) as error:
        load(tiny, tmp_path, **{builtin_key: 5, "neftune_alpha": alpha})
    assert double_noise_error(builtin_key, 5, alpha) in str(error.value)


def test_misspelt_key_is_refused_with_a_suggestion(tiny, tmp_path):
    """`neftune_schedul: cosine` would otherwise train with the default constant schedule, without a word."""
    with pytest.raises(ValueError) as error:
        load(tiny, tmp_path, neftune_schedul="cosine")
    assert "neftune_schedul: unknown key; did you mean neftune_schedule?" in str(error.value)


def test_builtin_key_alone_is_left_to_axolotl(tiny, tmp_path):
    cfg = load(tiny, tmp_path, neftune_alpha=None, neftune_noise_alpha=5)
    assert cfg.neftune_noise_alpha == 5


def test_cli_refuses_double_neftune_before_loading_the_model(tiny, tmp_path):
    config = example_config("lora", tiny, tmp_path, neftune_noise_alpha=5)
    # The refusal happens where the config loads, whatever the launcher; `python` saves two interpreter start-ups.
    run = run_axolotl(config, tmp_path, launcher="python")
    assert run.returncode != 0
    assert double_noise_error("neftune_noise_alpha", 5, 5) in run.text, run.describe()
    assert "axolotl.loaders" not in run.text  # stopped before any model or tokenizer was loaded
    assert ATTACHED not in run.text and not run.metrics
