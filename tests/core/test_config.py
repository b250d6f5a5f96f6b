import math

import pytest

from neft_plugins import CONFIG_KEYS, NEFTuneConfig, NEFTuneConfigError


def test_defaults_are_off_and_follow_the_paper():
    config = NEFTuneConfig()
    assert not config.enabled
    assert config.as_dict() == {
        "neftune_alpha": 0.0,
        "neftune_distribution": "uniform",
        "neftune_schedule": "constant",
        "neftune_scope": "all",
        "neftune_length": "sequence",
        "neftune_seed": None,
        "neftune_clean_loss": False,
    }
    assert tuple(config.as_dict()) == CONFIG_KEYS


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"neftune_alpha": -1}, "neftune_alpha: got -1; expected a finite number >= 0"),
        ({"neftune_alpha": math.nan}, "neftune_alpha: got nan; expected a finite number >= 0"),
        ({"neftune_alpha": math.inf}, "neftune_alpha: got inf; expected a finite number >= 0"),
        ({"neftune_alpha": "5"}, "neftune_alpha: got '5' (str); expected a finite number >= 0"),
        ({"neftune_alpha": True}, "neftune_alpha: got True (bool); expected a finite number >= 0"),
        (
            {"neftune_distribution": "cauchy"},
            "neftune_distribution: got 'cauchy'; expected one of 'uniform', 'gaussian'",
        ),
        (
            {"neftune_schedule": "step"},
            "neftune_schedule: got 'step'; expected one of 'constant', 'linear', 'cosine'",
        ),
        (
            {"neftune_scope": "answer"},
            "neftune_scope: got 'answer'; expected one of 'all', 'prompt', 'response'",
        ),
        ({"neftune_length": "row"}, "neftune_length: got 'row'; expected one of 'sequence', 'padded'"),
        ({"neftune_seed": 1.5}, "neftune_seed: got 1.5; expected an integer in [0, 2**63)"),
        ({"neftune_seed": -3}, "neftune_seed: got -3; expected an integer in [0, 2**63)"),
        ({"neftune_seed": "7"}, "neftune_seed: got '7'; expected an integer in [0, 2**63)"),
        ({"neftune_scope": 5}, "neftune_scope: got 5; expected one of 'all', 'prompt', 'response'"),
        ({"neftune_length": None}, "neftune_length: got None; expected one of 'sequence', 'padded'"),
        ({"neftune_distribution": ["uniform"]}, "neftune_distribution: got ['uniform']; expected one of"),
        ({"neftune_schedule": math.nan}, "neftune_schedule: got nan; expected one of 'constant'"),
        ({"neftune_seed": math.inf}, "neftune_seed: got inf; expected an integer in [0, 2**63)"),
        ({"neftune_seed": 2**63}, "neftune_seed: got 9223372036854775808; expected an integer in [0, 2**63)"),
        (
            {"neftune_scope": "response", "neftune_length": "padded"},
            "neftune_scope: got 'response' with neftune_length: 'padded'",
        ),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(keys, message):
    with pytest.raises(NEFTuneConfigError) as error:
        NEFTuneConfig(**keys)
    assert str(error.value).startswith(message)


def test_from_mapping_takes_our_keys_and_treats_null_as_default():
    config = NEFTuneConfig.from_mapping({"neftune_alpha": 5, "neftune_seed": None, "learning_rate": 1e-4})
    assert config.neftune_alpha == 5.0 and config.neftune_seed is None and config.enabled


def test_split_separates_our_keys_from_the_framework_config():
    config, rest = NEFTuneConfig.split({"neftune_alpha": 15, "neftune_schedule": "cosine", "stage": "sft"})
    assert (config.neftune_alpha, config.neftune_schedule) == (15.0, "cosine")
    assert rest == {"stage": "sft"}


def test_split_rejects_bad_values_before_anything_else_happens():
    with pytest.raises(NEFTuneConfigError, match="neftune_alpha: got 'high'"):
        NEFTuneConfig.split({"neftune_alpha": "high", "stage": "sft"})


def test_one_error_family():
    """Every error neft-plugins raises on purpose is a NEFTuneError; a conflict is a kind of config error, so
    the frameworks' config loaders (pydantic, argparse-style CLIs) report it like any bad value."""
    from neft_plugins import errors

    kinds = [
        value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Exception)
    ]
    assert len(kinds) >= 7 and all(issubclass(kind, errors.NEFTuneError) for kind in kinds)
    assert issubclass(errors.NEFTuneConflictError, errors.NEFTuneConfigError)
    assert issubclass(errors.NEFTuneConfigError, ValueError)


@pytest.mark.parametrize(
    ("keyword", "suggested"),
    [("neftune_alpah", "neftune_alpha"), ("alpha", "neftune_alpha"), ("neftune_sead", "neftune_seed")],
)
def test_a_misspelt_keyword_in_the_python_api_names_the_nearest_key(keyword, suggested):
    from neft_plugins import NEFTuneCallback, attach
    from support.tiny import make_llama

    model = make_llama()
    for build in (NEFTuneConfig, NEFTuneCallback, lambda **keys: attach(model, **keys)):
        with pytest.raises(NEFTuneConfigError, match=f"^{keyword}: unknown key; did you mean {suggested}\\?"):
            build(**{keyword: 5})


def test_a_misspelt_flag_on_a_framework_command_line_names_the_nearest_key():
    """Every adapter that takes a framework's command line (neft-llamafactory, neft-swift) splits it here."""
    from neft_plugins.integrations.arguments import split_argv

    with pytest.raises(
        NEFTuneConfigError, match=r"^neftune_alhpa: unknown key; did you mean neftune_alpha\?"
    ):
        split_argv(["--stage", "sft", "--neftune_alhpa=5"])
    assert split_argv(["--neftune_noise_alpha", "5"]) == ({}, ["--neftune_noise_alpha", "5"])
