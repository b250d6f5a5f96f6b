"""Encoder-decoder models: NEFTune noises the encoder's input (the instruction), through the embedding module
the encoder really runs, on every supported transformers version; never the decoder's teacher-forced input."""

import logging

import pytest
import torch
from datasets import Dataset
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

from neft_plugins import NEFTuneAttachError, NEFTuneCallback, NEFTuneConfigError, attach
from support.noise import assert_near_paper_norm
from support.spy import FirstBlockSpy
from support.tiny import make_tokenizer, prompt_completion_records, short_run_args

ALPHA = 5.0


def tiny_t5():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=64,
        d_ff=128,
        d_kv=16,
        num_layers=1,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        dropout_rate=0.0,  # the clean and noised passes must differ by the noise alone
    )
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    return T5ForConditionalGeneration(config), tokenizer


def test_only_the_encoder_input_gets_the_paper_noise():
    model, tokenizer = tiny_t5()
    model.train()
    lengths = (6, 30)
    rows = [" ".join(["cat"] * n) for n in lengths]
    batch = tokenizer(rows, padding=True, return_tensors="pt")
    batch["labels"] = tokenizer(["dog bird", "red green blue"], padding=True, return_tensors="pt")[
        "input_ids"
    ]
    handle = attach(model, neftune_alpha=ALPHA)
    try:
        # Hooked after NEFTune, so they see what the blocks receive; a no_grad pass is never noised.
        with (
            FirstBlockSpy(model.encoder.block[0], keep_inputs=True) as encoder,
            FirstBlockSpy(model.decoder.block[0], keep_inputs=True) as decoder,
        ):
            with torch.no_grad():
                model(**batch)
            model(**batch).loss.backward()
        encoder_in, decoder_in = encoder.received, decoder.received
        logs = handle.read_logs()
    finally:
        handle.detach()
    encoder_noise = encoder_in[1] - encoder_in[0]
    real = batch["attention_mask"].sum(1)
    assert_near_paper_norm([encoder_noise[row, :n].norm() for row, n in enumerate(real)], ALPHA, rel=0.05)
    assert float(encoder_noise[0, real[0] :].abs().max()) == 0.0, "padding gets no noise"
    assert torch.equal(decoder_in[1], decoder_in[0]), "the decoder's teacher-forced input is clean"
    assert logs["neft/tokens_noised"] == float(real.sum())


def test_prompt_or_response_scope_is_refused_for_encoder_decoders():
    model, _ = tiny_t5()
    with pytest.raises(
        NEFTuneConfigError, match="neftune_scope: got 'response' for an encoder-decoder model"
    ):
        attach(model, neftune_alpha=ALPHA, neftune_scope="response")


def test_seq2seq_trainer_noises_each_instruction(tmp_path, caplog):
    model, tokenizer = tiny_t5()
    records = prompt_completion_records(16, lengths=(3, 30))

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = tokenizer([row["prompt"] for row in rows], padding=True, return_tensors="pt")
        labels = tokenizer([row["completion"] for row in rows], padding=True, return_tensors="pt")[
            "input_ids"
        ]
        return {**batch, "labels": labels.masked_fill(labels == tokenizer.pad_token_id, -100)}

    trainer = Seq2SeqTrainer(
        model=model,
        args=short_run_args(
            Seq2SeqTrainingArguments,
            tmp_path,
            max_steps=3,
            per_device_train_batch_size=8,
            use_cpu=True,
            remove_unused_columns=False,
        ),
        train_dataset=Dataset.from_list(records),
        data_collator=collate,
        callbacks=[NEFTuneCallback(neftune_alpha=ALPHA)],
    )
    with caplog.at_level(logging.WARNING, logger="neft_plugins"):
        trainer.train()
    assert "attached NEFTune at the input of T5Stack.block.0" in caplog.text, "the encoder's first block"
    logged = [entry for entry in trainer.state.log_history if "neft/noise_norm" in entry]
    assert len(logged) == 3
    assert_near_paper_norm([entry["neft/noise_norm"] for entry in logged], ALPHA, rel=0.05)


def test_layer_drop_is_refused_at_attach():
    """LayerDrop skips blocks at random in training, the first one included: its noise would go with it."""
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(
        vocab_size=64,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_layerdrop=0.1,
    )
    with pytest.raises(
        NEFTuneAttachError, match=r"BartConfig.encoder_layerdrop = 0.1: LayerDrop skips blocks"
    ):
        attach(BartForConditionalGeneration(config), neftune_alpha=ALPHA)
