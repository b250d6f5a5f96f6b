"""Packing: the batch ms-swift's own padding-free collator builds (`--packing`/`--padding_free`: one row, position_ids
restarting at each sequence, no attention mask) fed through the tiny Llama with `neft_plugins.attach`. The CLI
refuses packing on CPU (it needs a flash-attention backend), so this checks the layout, not a `swift sft` run."""

from __future__ import annotations

from neft_plugins import attach
from support.noise import assert_near_paper_norm, uniform_norm_tolerance
from support.spy import FirstBlockSpy
from support.tiny import alpaca_records

ALPHA = 5.0


def test_each_sequence_of_a_packed_row_gets_the_papers_noise(tiny_model, hidden_size):
    from swift.model import get_processor
    from swift.template import get_template
    from transformers import LlamaForCausalLM

    template = get_template(
        get_processor(str(tiny_model), model_type="llama"), template_type="default", padding_free=True
    )
    template.set_mode("train")
    records = alpaca_records(5, 1, instruction=(3, 8, 20), output=(3, 10, 30))
    encoded = [
        template.encode(
            {
                "messages": [
                    {"role": "user", "content": r["instruction"]},
                    {"role": "assistant", "content": r["output"]},
                ]
            },
            return_length=True,
        )
        for r in records
    ]
    lengths = [len(each["input_ids"]) for each in encoded]
    batch = template.data_collator(encoded)  # replaces the list's items by the packed row
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1, "ms-swift's packed layout"
    assert (batch["position_ids"][0] == 0).sum() == len(records)

    model = LlamaForCausalLM.from_pretrained(tiny_model).train()
    handle = attach(model, neftune_alpha=ALPHA)
    try:
        with FirstBlockSpy(handle.first_block, model) as spy:
            model(**batch)
    finally:
        handle.detach()
    (measured,) = spy.passes
    assert measured.sequence_lengths() == lengths
    for length, norm in measured.sequences():
        assert_near_paper_norm(
            [norm], ALPHA, rel=uniform_norm_tolerance(length * hidden_size), context=length
        )
