"""A real LLaMA-Factory training run (``neft-llamafactory train``, in a subprocess, CPU, 3 steps) of a tiny local
vision-language model on image+text records.

What it proves: through LLaMA-Factory's multimodal data path (its template's mm_plugin expands each image into the
model's placeholder tokens, its collator builds pixel_values), NEFTune attaches to the language model's embeddings,
noises the text tokens only (``support.spy`` on the first decoder layer: placeholders and padding get exactly
none, every sequence's text alpha/sqrt(3)), and logs as ``neft/tokens_noised`` exactly the text tokens the model
got. The logged ``neft/noise_norm`` alone cannot tell: noise spread over placeholders too would measure
alpha/sqrt(3) as well.

Qwen2-VL (template ``qwen2_vl``) needs its processor, which transformers 4.57+ cannot build without torchvision
(see ``support.versions.qwen2_vl_processor_builds``); LLaVA (template ``llava``) runs everywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support.llamafactory_cli import EXAMPLES, NORM_TOLERANCE, assert_noise_norms, train
from support.logs import ATTACHED
from support.matrix import on_newest
from support.noise import assert_near_paper_norm
from support.versions import qwen2_vl_processor_builds
from support.vlm import (
    PLACEHOLDERS_PER_IMAGE,
    TinyVLM,
    image_text_records,
    llava_processor,
    make_llava,
    make_qwen2_vl,
    qwen2_vl_processor,
    tiny_images,
)

ALPHA = 5.0
RECORDS = 16


def save_model(make: Callable[[], TinyVLM], processor: Callable[[], Any], folder: Path) -> TinyVLM:
    tiny = make()
    tiny.model.save_pretrained(folder)
    processor().save_pretrained(folder)
    return tiny


def write_dataset(folder: Path) -> None:
    """LLaMA-Factory's sharegpt format with an ``images`` column: one tiny PNG per record, ``<image>`` marking it."""
    records = []
    for index, (image, text) in enumerate(
        zip(tiny_images(RECORDS), image_text_records(RECORDS), strict=True)
    ):
        path = folder / f"image_{index}.png"
        image.save(path)
        conversation = [
            {"from": "human", "value": f"<image>{text['question']}"},
            {"from": "gpt", "value": text["answer"]},
        ]
        records.append({"conversations": conversation, "images": [str(path)]})
    (folder / "tiny_mm.json").write_text(json.dumps(records))
    info = {
        "file_name": "tiny_mm.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "images": "images"},
    }
    (folder / "dataset_info.json").write_text(json.dumps({"tiny_mm": info}))


@on_newest("llamafactory")
@pytest.mark.parametrize(
    ("make", "processor", "template"),
    [
        pytest.param(
            make_qwen2_vl, qwen2_vl_processor, "qwen2_vl", id="qwen2-vl", marks=qwen2_vl_processor_builds
        ),
        pytest.param(make_llava, llava_processor, "llava", id="llava"),
    ],
)
def test_image_text_run_noises_text_tokens_with_the_paper_norm(
    make: Callable[[], TinyVLM], processor: Callable[[], Any], template: str, tmp_path: Path
) -> None:
    model_dir, data_dir = tmp_path / "model", tmp_path / "data"
    data_dir.mkdir()
    tiny = save_model(make, processor, model_dir)
    write_dataset(data_dir)
    result = train(
        EXAMPLES / "sft_lora_neftune.yaml",
        model_dir,
        tmp_path,
        spy=True,
        template=template,
        dataset="tiny_mm",
        dataset_dir=data_dir,
        per_device_train_batch_size=4,
        neftune_alpha=ALPHA,
    )
    spied = result.passes().get(0, [])

    attached = (
        rf"{re.escape(ATTACHED)} the input of {type(tiny.model).__name__}\.\S*layers\.0 \(alpha={ALPHA}"
    )
    assert re.search(attached, result.stderr), result.stderr[-3000:]
    assert_noise_norms(result.metrics, ALPHA, steps=3)  # printed to the console
    assert_noise_norms(result.written_logs(), ALPHA, steps=3)  # trainer_state.json
    # What the embeddings gave the model: noise on text tokens only, alpha/sqrt(3) per sequence.
    calls = [call for call in spied if call.training]
    assert len(calls) == 3
    for call, entry in zip(calls, result.written_logs(), strict=True):
        assert call.input_ids is not None
        placeholders = call.input_ids == tiny.placeholder_id
        text = (call.segments > 0) & ~placeholders
        context = {"text_tokens": text.sum(1).tolist()}
        assert int(placeholders.sum()) == 4 * PLACEHOLDERS_PER_IMAGE, (
            "every record's image is 4 placeholder tokens"
        )
        assert entry["neft/tokens_noised"] == int(text.sum()), "placeholders and padding get no noise"
        assert call.largest_noise(~text) == 0.0, "placeholders and padding get no noise"
        norms = call.row_norms(text)
        assert_near_paper_norm(norms, ALPHA, rel=0.25, context=context)  # per sequence, 20+ text tokens
        assert_near_paper_norm([sum(norms) / len(norms)], ALPHA, rel=NORM_TOLERANCE / 2, context=context)
