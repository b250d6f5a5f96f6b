"""The pure functions, and the noise they produce inside a real model's forward pass."""

import itertools
import math

import pytest
import torch

from neft_plugins import NEFTuneInputError, neftune
from neft_plugins.noise import (
    per_token_scale,
    scope_mask,
    segments_from_block_mask,
    segments_from_cu_seqlens,
    segments_from_row_values,
)
from neft_plugins.plugins import plugin_manager
from support.layouts import block_mask, padding_mask, restarting_positions, segment_ids
from support.noise import assert_near_paper_norm, paper_norm
from support.spy import first_block_input
from support.tiny import make_llama

DIM = 64


def read_segments(batch_shape, **inputs):
    return plugin_manager().hook.neft_read_segments(inputs=inputs, batch_shape=batch_shape)


def test_scale_uses_each_sequences_own_length_and_zero_elsewhere():
    segments = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    scale = 5.0 * per_token_scale(segments, segments > 0, dim=DIM)
    assert torch.allclose(scale[0, :3], torch.full((3,), 5 / math.sqrt(3 * DIM)))
    assert torch.equal(scale[0, 3:], torch.zeros(3))
    assert torch.allclose(scale[1], torch.full((6,), 5 / math.sqrt(6 * DIM)))


def test_scale_counts_tokens_per_segment_of_a_packed_row():
    segments = torch.tensor([[1, 1, 2, 2, 2, 2, 3, 0]])
    scale = per_token_scale(segments, segments > 0, dim=1)
    expected = torch.tensor([[1 / math.sqrt(2)] * 2 + [0.5] * 4 + [1.0] + [0.0]])
    assert torch.allclose(scale, expected)


def test_scope_counts_only_the_tokens_in_scope():
    segments = torch.tensor([[1, 1, 1, 1, 1, 0]])
    labels = torch.tensor([[-100, -100, 7, 8, 9, -100]])
    response = scope_mask(segments, labels, "response")
    prompt = scope_mask(segments, labels, "prompt")
    assert response.tolist() == [[False, False, True, True, True, False]]
    assert prompt.tolist() == [[True, True, False, False, False, False]]
    scale = per_token_scale(segments, response, dim=1)
    assert torch.allclose(
        scale, torch.tensor([[0, 0, 1 / math.sqrt(3)] * 1 + [1 / math.sqrt(3)] * 2 + [0.0]])
    )
    with pytest.raises(ValueError, match="needs `labels`"):
        scope_mask(segments, None, "prompt")


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        ([[1, 1, 1, 0, 0]], [[1, 1, 1, 0, 0]]),  # right padding
        ([[0, 0, 1, 1, 1]], [[0, 0, 1, 1, 1]]),  # left padding
        ([[1, 1, 2, 2, 2, 3, 0]], [[1, 1, 2, 2, 2, 3, 0]]),  # Axolotl multipack segment ids
        ([[3, 3, 1, 1, 0]], [[1, 1, 2, 2, 0]]),  # ids need not be increasing
    ],
)
def test_row_masks(mask, expected):
    mask = torch.tensor(mask)
    assert segments_from_row_values(mask, mask != 0).tolist() == expected
    assert read_segments(tuple(mask.shape), attention_mask=mask).tolist() == expected


def test_restarting_position_ids_split_a_packed_row():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert read_segments((1, 9), position_ids=positions).tolist() == [[1, 1, 1, 2, 2, 3, 3, 3, 3]]


def test_position_ids_with_a_left_padded_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    positions = torch.tensor([[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]])
    assert read_segments((2, 5), attention_mask=mask, position_ids=positions).tolist() == [
        [0, 0, 1, 1, 1],
        [1, 1, 1, 1, 1],
    ]


def test_flash_attention_cumulative_lengths():
    cu = torch.tensor([0, 3, 5, 9], dtype=torch.int32)
    assert segments_from_cu_seqlens(cu, 10).tolist() == [[1, 1, 1, 2, 2, 3, 3, 3, 3, 0]]
    assert read_segments((1, 10), cu_seq_lens_q=cu).tolist() == [[1, 1, 1, 2, 2, 3, 3, 3, 3, 0]]


def test_block_diagonal_4d_masks():
    mask = block_mask(segment_ids([2, 3, 1], 8))
    assert segments_from_block_mask(mask).tolist() == [[1, 1, 2, 2, 2, 3, 0, 0]]
    assert read_segments((1, 8), attention_mask=mask).tolist() == [[1, 1, 2, 2, 2, 3, 0, 0]]
    assert segments_from_block_mask(mask == 0).tolist() == [[1, 1, 2, 2, 2, 3, 0, 0]]


def test_nothing_means_every_token_is_real():
    assert read_segments((2, 3)).tolist() == [[1, 1, 1], [1, 1, 1]]


def noised_embeddings(model, input_ids, **inputs):
    """Run a training forward pass and return (clean, noised) inputs of the first decoder layer (a Llama's
    are its token embeddings)."""
    noised = first_block_input(model.model.layers[0], lambda: model(input_ids=input_ids, **inputs))
    with torch.no_grad():
        return model.get_input_embeddings()(input_ids), noised


def test_padded_batch_noise_norm_per_sequence(recorder, assert_noise_norms):
    """Sequences of 3 and 40 tokens in one batch padded to 120 each get alpha/sqrt(3)."""
    model = make_llama(hidden_size=DIM).train()
    mask = padding_mask([3, 40, 120, 3, 40])
    input_ids = torch.randint(4, 60, mask.shape) * mask
    with neftune(model, neftune_alpha=5):
        clean, noisy = noised_embeddings(model, input_ids, attention_mask=mask)
    noise = noisy - clean
    assert torch.count_nonzero(noise[mask == 0]) == 0, "padding must get no noise"
    per_row = torch.linalg.vector_norm(noise.flatten(1), dim=1)
    assert_noise_norms(per_row, alpha=5, min_elements=3 * DIM)
    assert_noise_norms(recorder.sequence_noise_norms(), alpha=5, min_elements=3 * DIM)


def test_packed_row_noise_norm_per_segment(recorder, assert_noise_norms):
    model = make_llama(hidden_size=DIM).train()
    lengths = [3, 40, 5, 60]
    positions = restarting_positions(lengths)
    input_ids = torch.randint(4, 60, positions.shape)
    with neftune(model, neftune_alpha=10):
        clean, noisy = noised_embeddings(model, input_ids, position_ids=positions)
    noise = (noisy - clean)[0]
    bounds = torch.tensor([0, *lengths]).cumsum(0)
    norms = torch.stack([noise[a:b].norm() for a, b in itertools.pairwise(bounds)])
    assert_noise_norms(norms, alpha=10, min_elements=3 * DIM)
    assert_noise_norms(recorder.sequence_noise_norms(), alpha=10, min_elements=3 * DIM)


def test_padding_tail_with_restarting_position_ids_gets_no_noise(recorder, assert_noise_norms):
    """Axolotl multipack with sdpa/flash: no attention_mask, and the padding tail's position ids count up
    from 0 like one more sequence; its labels are all -100."""
    model = make_llama(hidden_size=DIM).train()
    lengths, tail = [3, 40, 12], 9
    positions = restarting_positions([*lengths, tail])
    input_ids = torch.randint(4, 60, positions.shape)
    labels = input_ids.clone()
    labels[0, sum(lengths) :] = -100
    labels[0, 0] = -100  # a real sequence may have unsupervised tokens and still be noised whole
    with neftune(model, neftune_alpha=5):
        clean, noisy = noised_embeddings(model, input_ids, position_ids=positions, labels=labels)
    noise = (noisy - clean)[0]
    assert torch.count_nonzero(noise[sum(lengths) :]) == 0
    assert int(recorder.records[0].tokens_noised) == sum(lengths)
    assert_noise_norms(recorder.sequence_noise_norms(), alpha=5, min_elements=3 * DIM)


def test_response_scope_noises_response_tokens_only(assert_noise_norms):
    model = make_llama(hidden_size=DIM).train()
    input_ids = torch.randint(4, 60, (2, 30))
    labels = input_ids.clone()
    labels[:, :12] = -100
    with neftune(model, neftune_alpha=5, neftune_scope="response"):
        clean, noisy = noised_embeddings(model, input_ids, labels=labels)
    noise = noisy - clean
    assert torch.count_nonzero(noise[:, :12]) == 0
    assert_noise_norms(torch.linalg.vector_norm(noise.flatten(1), dim=1), alpha=5, min_elements=18 * DIM)


def test_scope_without_labels_is_a_clear_error():
    model = make_llama(hidden_size=DIM).train()
    with (
        neftune(model, neftune_alpha=5, neftune_scope="prompt"),
        pytest.raises(NEFTuneInputError, match="labels"),
    ):
        model(input_ids=torch.randint(4, 60, (1, 5)))


def test_gaussian_noise_has_the_same_expected_norm():
    model = make_llama(hidden_size=DIM).train()
    input_ids = torch.randint(4, 60, (64, 50))
    with neftune(model, neftune_alpha=5, neftune_distribution="gaussian"):
        clean, noisy = noised_embeddings(model, input_ids)
    norms = torch.linalg.vector_norm((noisy - clean).flatten(1), dim=1)
    assert_near_paper_norm([norms.mean()], 5, rel=0.01)
    fourth_moment = float(((noisy - clean) * math.sqrt(50 * DIM) / paper_norm(5)).pow(4).mean())
    assert abs(fourth_moment - 3.0) < 0.1, "gaussian kurtosis is 3 (uniform's would be 1.8)"


def test_padded_length_matches_transformers_builtin_bit_for_bit():
    from neft_plugins.transformers_neftune import builtin_hook

    neftune_post_forward_hook = builtin_hook()

    model = make_llama(hidden_size=DIM).train()
    input_ids = torch.randint(4, 60, (3, 17))
    mask = padding_mask([10, 17, 17])
    embeddings = model.get_input_embeddings()

    torch.manual_seed(1234)
    with neftune(model, neftune_alpha=5, neftune_length="padded"):
        _, ours = noised_embeddings(model, input_ids, attention_mask=mask)

    embeddings.neftune_noise_alpha = 5.0
    builtin = embeddings.register_forward_hook(neftune_post_forward_hook)
    try:
        torch.manual_seed(1234)
        _, theirs = noised_embeddings(model, input_ids, attention_mask=mask)
    finally:
        builtin.remove()
        del embeddings.neftune_noise_alpha
    assert torch.equal(ours, theirs)


def test_half_precision_noise_keeps_its_norm_on_long_sequences():
    model = make_llama(hidden_size=DIM).train()
    input_ids = torch.randint(4, 60, (2, 4096))
    for dtype in (torch.bfloat16, torch.float16):
        model.get_input_embeddings().to(dtype)
        with neftune(model, neftune_alpha=5):
            clean, noisy = noised_embeddings(model, input_ids)
        assert noisy.dtype == dtype
        noise = noisy.float() - clean.float()
        assert torch.count_nonzero(noise) > 0.5 * noise.numel(), f"{dtype}: the noise underflowed"
        norms = torch.linalg.vector_norm(noise.flatten(1), dim=1)
        assert_near_paper_norm(norms.tolist(), 5, rel=0.05, context=dtype)
