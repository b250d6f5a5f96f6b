"""Vision-language models: the image placeholder tokens in input_ids get no noise and do not count in a
sequence's length, so the text of every sequence gets noise norm alpha/sqrt(3) however many media tokens it holds.

Measured twice: in the NoiseRecord the observers get, and in what the first decoder layer receives (a noised
training pass against a clean no-grad pass of the same batch), on tiny random Qwen2-VL, LLaVA and Gemma 3
models; then through a real TRL SFTTrainer run on image+text records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from neft_plugins import NEFTuneAttachError, NEFTuneCallback, attach
from support.noise import assert_near_paper_norm
from support.spy import first_block_inputs
from support.tiny import short_run_args
from support.versions import qwen2_vl_processor_builds, transformers_gemma3, trl_vision_datasets
from support.vlm import (
    PLACEHOLDERS_PER_IMAGE,
    TEXT_HIDDEN,
    TinyVLM,
    image_text_records,
    llava_processor,
    make_gemma3,
    make_llava,
    make_qwen2_vl,
    qwen2_vl_processor,
    tiny_images,
    without_placeholder_ids,
)

ALPHA = 5.0
TEXT_LENGTHS = [5, 20, 12]  # words after each row's image: very different shares of placeholders
MODELS = [
    pytest.param(make_qwen2_vl, id="qwen2-vl"),
    pytest.param(make_llava, id="llava"),
    pytest.param(make_gemma3, id="gemma3", marks=transformers_gemma3),
]


def text_positions(tiny: TinyVLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Real (unpadded) positions that are not media placeholders."""
    return (batch["attention_mask"] == 1) & (batch["input_ids"] != tiny.placeholder_id)


def first_layer_inputs(model: Any, batch: dict[str, torch.Tensor], grad: bool) -> torch.Tensor:
    """The hidden states the first decoder layer receives in one training-mode forward."""

    def forward() -> None:
        with torch.set_grad_enabled(grad):
            model(**batch)

    seen = first_block_inputs(model.get_decoder().layers[0], forward)
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("make", MODELS)
def test_text_tokens_get_the_paper_norm_and_placeholders_none(
    make: Callable[[], TinyVLM], recorder, assert_noise_norms
) -> None:
    tiny = make()
    model = tiny.model.train()
    batch = tiny.batch(TEXT_LENGTHS)
    text = text_positions(tiny, batch)
    assert int((batch["input_ids"] == tiny.placeholder_id).sum()) == PLACEHOLDERS_PER_IMAGE * len(
        TEXT_LENGTHS
    )
    min_elements = int(text.sum(1).min()) * TEXT_HIDDEN

    handle = attach(model, neftune_alpha=ALPHA)
    try:
        assert tiny.placeholder_id in handle.placeholder_ids
        clean = first_layer_inputs(model, batch, grad=False)  # no autograd: NEFTune stays off
        noised = first_layer_inputs(model, batch, grad=True)
    finally:
        handle.detach()

    (record,) = recorder.records
    assert int(record.tokens_noised) == int(text.sum()), "only text tokens are noised"
    assert_noise_norms(record.sequence_noise_norms(), ALPHA, min_elements)
    # What reaches the model: the image features replace the placeholders' embeddings, noise and all.
    difference = noised - clean
    assert torch.equal(difference[~text], torch.zeros_like(difference[~text])), "placeholders and padding"
    received = torch.stack([difference[row][text[row]].norm() for row in range(len(TEXT_LENGTHS))])
    assert_noise_norms(received, ALPHA, min_elements)


@pytest.mark.parametrize("make", MODELS)
def test_multimodal_config_without_placeholder_ids_is_refused(make: Callable[[], TinyVLM]) -> None:
    model = make().model
    without_placeholder_ids(model.config)
    with pytest.raises(NEFTuneAttachError, match="multimodal"):
        attach(model, neftune_alpha=ALPHA)


class TrainingCalls:
    """The text (non-placeholder, non-padding) tokens of every training call, as the model received them."""

    def __init__(self, model: torch.nn.Module, placeholder_id: int) -> None:
        self.text_tokens: list[int] = []
        self.placeholders: list[int] = []
        self.placeholder_id = placeholder_id
        self._hook = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if module.training and torch.is_grad_enabled():
            ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
            self.text_tokens.append(int(((mask == 1) & (ids != self.placeholder_id)).sum()))
            self.placeholders.append(int((ids == self.placeholder_id).sum()))

    def remove(self) -> None:
        self._hook.remove()


@trl_vision_datasets
@pytest.mark.parametrize(
    ("make", "processor"),
    [
        pytest.param(make_qwen2_vl, qwen2_vl_processor, id="qwen2-vl", marks=qwen2_vl_processor_builds),
        pytest.param(make_llava, llava_processor, id="llava"),
    ],
)
def test_sft_trainer_on_images_logs_the_paper_norm_over_text_tokens(
    make: Callable[[], TinyVLM], processor: Callable[[], Any], tmp_path
) -> None:
    """A real SFTTrainer run on image+text conversations (TRL's vision data path and collator)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tiny = make()
    records = [
        {
            "images": [image],
            "messages": [
                {"role": "user", "content": record["question"]},
                {"role": "assistant", "content": record["answer"]},
            ],
        }
        for image, record in zip(tiny_images(8), image_text_records(8), strict=True)
    ]
    args = short_run_args(
        SFTConfig,
        tmp_path / "out",
        max_steps=3,
        per_device_train_batch_size=4,
        use_cpu=True,
        max_length=None,
        learning_rate=1e-3,
        seed=0,
    )
    trainer = SFTTrainer(
        model=tiny.model,
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=processor(),
        callbacks=[NEFTuneCallback(neftune_alpha=ALPHA)],
    )
    calls = TrainingCalls(trainer.model, tiny.placeholder_id)
    try:
        trainer.train()
    finally:
        calls.remove()

    logged = [entry for entry in trainer.state.log_history if "neft/noise_norm" in entry]
    assert len(logged) == len(calls.text_tokens) == 3
    assert calls.placeholders == [4 * PLACEHOLDERS_PER_IMAGE] * 3, (
        "every step's 4 records hold one image of 4 placeholders each"
    )
    for entry, text_tokens in zip(logged, calls.text_tokens, strict=True):
        assert entry["neft/tokens_noised"] == text_tokens, "placeholders and padding get no noise"
        assert_near_paper_norm([entry["neft/noise_norm"]], ALPHA, rel=0.05, context=entry)
