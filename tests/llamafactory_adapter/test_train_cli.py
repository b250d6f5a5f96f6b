"""Real ``neft-llamafactory train`` runs of the example configs on a tiny local Llama (CPU, 3 steps each).

What they prove: our keys are taken out before LLaMA-Factory parses the YAML, NEFTune is attached and
detached, and every logging step reports a per-sequence noise norm of alpha/sqrt(3) - which a padded or
packed-row L would miss by a factor of about sqrt(L_row / L_sequence).
"""

from __future__ import annotations

import pytest

from support.llamafactory_cli import EXAMPLES, NORM_TOLERANCE, assert_noise_norms, train
from support.logs import DETACHED_FROM_LLAMA, attached_to_llama
from support.matrix import on_newest
from support.noise import assert_near_paper_norm
from support.versions import llamafactory_neat_packing, transformers_4bit_on_cpu


def assert_lifecycle(result, alpha: float) -> None:
    assert attached_to_llama(alpha) in result.stderr, result.stderr[-3000:]
    assert DETACHED_FROM_LLAMA in result.stderr
    assert result.stderr.index(attached_to_llama(alpha)) < result.stderr.index(DETACHED_FROM_LLAMA)


@pytest.mark.parametrize(
    ("config", "alpha", "extra"),
    [
        pytest.param(
            "sft_full_neftune.yaml",
            10.0,
            {"neftune_alpha": 10},
            id="sft-full",
            marks=on_newest("llamafactory"),
        ),
        pytest.param("sft_lora_neftune.yaml", 5.0, {}, id="sft-lora"),
        pytest.param(
            "sft_qlora_neftune.yaml",
            5.0,
            {},
            id="sft-qlora",
            marks=[transformers_4bit_on_cpu, on_newest("llamafactory")],
        ),
        pytest.param(
            "sft_lora_neftune.yaml",
            15.0,
            {"packing": "true", "neftune_alpha": 15},
            id="sft-packing",
            marks=on_newest("llamafactory"),
        ),
    ],
)
def test_example_trains_with_per_sequence_noise(config, alpha, extra, tiny_model, tmp_path):
    result = train(EXAMPLES / config, tiny_model, tmp_path, **extra)
    assert_lifecycle(result, alpha)
    assert_noise_norms(result.metrics, alpha, steps=3)  # printed to the console
    # trainer_state.json (TensorBoard/W&B get the same)
    assert_noise_norms(result.written_logs(), alpha, steps=3)
    if config == "sft_qlora_neftune.yaml":
        assert "Quantizing model to 4 bit with bitsandbytes" in result.text


@llamafactory_neat_packing
@on_newest("llamafactory")
def test_neat_packing_noises_each_packed_sequence_with_its_own_length(tiny_model, tmp_path):
    """Neat packing: segment ids become a 4-D block-diagonal float mask [B,1,L,L] (no flash-attention on
    CPU); each packed sequence must still get noise norm alpha/sqrt(3) and padding none."""
    alpha = 5.0
    result = train(EXAMPLES / "sft_neat_packing_neftune.yaml", tiny_model, tmp_path, spy=True)
    calls = result.passes().get(0, [])
    assert_lifecycle(result, alpha)
    assert_noise_norms(result.metrics, alpha, steps=3)
    assert_noise_norms(result.written_logs(), alpha, steps=3)

    assert calls and all(call.grad_enabled and call.training for call in calls)
    for call in calls:
        assert call.mask_shape is not None and call.mask_dtype is not None
        rows, length = call.rows, call.mask_shape[-1]
        assert call.mask_shape == [rows, 1, length, length], call.mask_shape
        assert "float" in call.mask_dtype
        assert call.largest_padding_noise() == 0.0, "padding got noise"
    segments = [segment for call in calls for segment in call.sequences()]
    assert len(segments) > 3 * sum(call.rows for call in calls) / 2, "rows were not packed"
    norms = [norm for _, norm in segments]
    assert_near_paper_norm(norms, alpha, rel=0.25)  # per sequence, 3+ tokens
    assert_near_paper_norm([sum(norms) / len(norms)], alpha, rel=NORM_TOLERANCE / 2)
    # What one L for the whole packed row (transformers' built-in) would have given instead:
    row_l = sum(n for n, _ in segments) / sum(call.rows for call in calls)
    mean_l = sum(n for n, _ in segments) / len(segments)
    assert (mean_l / row_l) ** 0.5 < 1 - 3 * NORM_TOLERANCE, "test data too weakly packed to tell"


@on_newest("llamafactory")
def test_dpo_noises_policy_passes_and_not_reference_passes(tiny_model, tmp_path):
    """DPO with LoRA: the reference model is the policy with its adapter disabled under torch.no_grad()."""
    alpha = 5.0
    result = train(
        EXAMPLES / "dpo_lora_neftune.yaml", tiny_model, tmp_path, spy=True, per_device_train_batch_size=2
    )
    calls = result.passes().get(0, [])
    assert_lifecycle(result, alpha)
    assert_noise_norms(result.metrics, alpha, steps=3)
    assert "rewards/chosen" in result.metrics[0]

    policy = [call for call in calls if call.grad_enabled]
    reference = [call for call in calls if not call.grad_enabled]
    assert len(policy) == 3 and len(reference) == 3, [(c.grad_enabled, c.rows) for c in calls]
    assert all(call.largest_noise() == 0.0 for call in reference), "a reference pass got noise"
    assert all(call.largest_noise() > 0 and call.largest_padding_noise() == 0.0 for call in policy)
    for call in policy:
        assert call.rows == 4  # chosen + rejected of 2 examples
        for tokens, norm in call.sequences():
            assert_near_paper_norm([norm], alpha, rel=0.25, context=tokens)
