"""One rule for a framework's built-in NEFTune key beside ours, in the core and the trainer callback.

The rule (``check_no_double_noise``): a non-zero built-in key is refused wherever ``neftune_alpha`` is given,
even as 0 — with 0 meant as "off", the built-in would still noise. Without ``neftune_alpha`` it is left alone.
"""

import pytest

from neft_plugins import NEFTuneConfig, NEFTuneConfigError, NEFTuneConflictError, attach
from support.logs import double_noise_error
from support.tiny import make_llama


@pytest.mark.parametrize("alpha", [5, 0])
@pytest.mark.parametrize("builtin_key", ["neftune_noise_alpha", "noisy_embedding_alpha"])
def test_builtin_key_beside_ours_is_refused_even_with_alpha_0(alpha, builtin_key):
    with pytest.raises(NEFTuneConflictError) as error:
        NEFTuneConfig.from_mapping({"neftune_alpha": alpha, builtin_key: 5})
    assert str(error.value) == double_noise_error(builtin_key, 5, alpha)


@pytest.mark.parametrize("builtin", [None, 0])
def test_builtin_key_unset_or_0_is_no_conflict(builtin):
    assert NEFTuneConfig.from_mapping({"neftune_alpha": 5, "neftune_noise_alpha": builtin}).enabled


def test_builtin_key_without_ours_is_the_frameworks_business():
    assert not NEFTuneConfig.from_mapping({"neftune_noise_alpha": 5}).enabled


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "neftune_schedul",
            "neftune_schedul: unknown key; did you mean neftune_schedule? neft-plugins' keys",
        ),
        ("neftune_alpah", "neftune_alpah: unknown key; did you mean neftune_alpha?"),
        ("neftune_xyz", "neftune_xyz: unknown key; neft-plugins' keys are neftune_alpha, "),
    ],
)
def test_misspelt_key_is_refused_with_a_suggestion(key, message):
    with pytest.raises(NEFTuneConfigError) as error:
        NEFTuneConfig.from_mapping({"neftune_alpha": 5, key: "cosine"})
    assert str(error.value).startswith(message)


def test_attach_refuses_an_embedding_with_the_builtin_attribute():
    model = make_llama()
    model.get_input_embeddings().neftune_noise_alpha = 5
    with pytest.raises(NEFTuneConflictError, match=r"neftune_noise_alpha: got 5 beside neftune_alpha: 0\.0"):
        attach(model, neftune_alpha=0)
