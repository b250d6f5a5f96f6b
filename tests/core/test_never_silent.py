"""Wherever NEFTune cannot do its job on a training step, it says so, once."""

import logging

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from neft_plugins import NEFTuneCallback, NEFTuneConfigError, attach
from support.tiny import (
    make_llama,
    make_lora,
    make_tokenizer,
    prompt_completion_records,
    short_run_args,
    text_records,
)

BYPASS = "did not run LlamaForCausalLM.model.embed_tokens, so it got no noise"
NOTHING_NOISED = "no token got noise since the last log"


def warnings_in(caplog, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


def test_a_training_pass_with_inputs_embeds_warns_once(caplog):
    model = make_llama().train()
    embeds = model.get_input_embeddings()(torch.randint(4, 60, (2, 8))).detach()
    handle = attach(model, neftune_alpha=5)
    try:
        with caplog.at_level(logging.WARNING, logger="neft_plugins"):
            model(inputs_embeds=embeds).logits.sum().backward()
            model(inputs_embeds=embeds).logits.sum().backward()
            with torch.no_grad():
                model(inputs_embeds=embeds)  # not a training pass: nothing to say
    finally:
        handle.detach()
    assert warnings_in(caplog, BYPASS) == 1


def test_input_ids_raise_no_warning(caplog):
    model = make_llama().train()
    handle = attach(model, neftune_alpha=5)
    try:
        with caplog.at_level(logging.WARNING, logger="neft_plugins"):
            model(input_ids=torch.randint(4, 60, (2, 8))).logits.sum().backward()
    finally:
        handle.detach()
    assert warnings_in(caplog, BYPASS) == 0


def test_all_labels_ignored_warns_once_at_the_log(tmp_path, caplog):
    """Every label -100: the batches add nothing to the loss and get no noise; the log says neft/tokens_noised 0
    and one warning says why."""
    tokenizer = make_tokenizer()

    def unsupervised(records: list[dict]) -> dict[str, torch.Tensor]:
        batch = tokenizer([record["text"] for record in records], padding=True, return_tensors="pt")
        return {**batch, "labels": torch.full_like(batch["input_ids"], -100)}

    trainer = Trainer(
        model=make_llama(),
        args=short_run_args(
            TrainingArguments, tmp_path, max_steps=3, use_cpu=True, remove_unused_columns=False
        ),
        train_dataset=Dataset.from_list(text_records(16, lengths=(5, 12))),
        data_collator=unsupervised,
        callbacks=[NEFTuneCallback(neftune_alpha=5)],
    )
    with caplog.at_level(logging.WARNING, logger="neft_plugins"):
        trainer.train()
    logged = [entry for entry in trainer.state.log_history if "neft/tokens_noised" in entry]
    assert len(logged) == 3 and all(entry["neft/tokens_noised"] == 0 for entry in logged)
    assert warnings_in(caplog, NOTHING_NOISED) == 1


def sft_run(tmp_path, callbacks, **overrides):
    """A short SFT run. Returns the training steps' log entries, and every training-mode call's inputs with
    whether autograd was on."""
    model = make_llama()
    calls = []
    model.register_forward_pre_hook(
        lambda m, a, kwargs: calls.append((dict(kwargs), torch.is_grad_enabled())) if m.training else None,
        with_kwargs=True,
    )
    args = {"max_steps": 4, "max_length": 64, "use_cpu": True, **overrides}
    trainer = SFTTrainer(
        model=model,
        args=short_run_args(SFTConfig, tmp_path, **args),
        train_dataset=Dataset.from_list(text_records(32, lengths=(5, 30))),
        processing_class=make_tokenizer(),
        callbacks=callbacks,
    )
    trainer.train()
    return [entry for entry in trainer.state.log_history if "grad_norm" in entry], calls, model


def test_clean_loss_is_the_same_batch_without_noise(tmp_path):
    """With the weights frozen (lr 0), each logged neft/clean_loss is the model's loss on that step's batch,
    recomputed after training with NEFTune detached; it differs from the noised loss logged beside it."""
    logged, calls, model = sft_run(
        tmp_path, [NEFTuneCallback(neftune_alpha=15, neftune_clean_loss=True)], learning_rate=0.0
    )
    clean_calls = [inputs for inputs, grad in calls if not grad]
    training_calls = [inputs for inputs, grad in calls if grad]
    assert len(clean_calls) == len(training_calls) == len(logged) == 4
    for entry, inputs in zip(logged, training_calls, strict=True):
        with torch.no_grad():
            assert entry["neft/clean_loss"] == pytest.approx(float(model(**inputs).loss), rel=1e-6)
    assert all(entry["neft/clean_loss"] != entry["loss"] for entry in logged)


@pytest.mark.parametrize(("accumulation", "logging_steps"), [(1, 1), (2, 1), (4, 1), (2, 3)])
def test_clean_loss_is_normalised_as_the_logged_loss(tmp_path, accumulation, logging_steps):
    """lr 0 and negligible noise: the clean loss equals the trainer's loss on the same micro-batches to float
    precision, under gradient accumulation (each micro-batch normalised by the whole step's label count, then
    summed); with one step per log that is the logged loss itself."""
    logged, _, _ = sft_run(
        tmp_path,
        [NEFTuneCallback(neftune_alpha=1e-10, neftune_clean_loss=True)],
        learning_rate=0.0,
        max_steps=6,
        gradient_accumulation_steps=accumulation,
        logging_steps=logging_steps,
        per_device_train_batch_size=2,
    )
    assert len(logged) == 6 // logging_steps
    for entry in logged:
        assert entry["neft/clean_loss"] == pytest.approx(entry["neft/noised_loss"], rel=1e-6), entry
        if logging_steps == 1:
            assert entry["neft/clean_loss"] == pytest.approx(entry["loss"], abs=1e-4), entry  # 4.x rounds it


def test_clean_loss_costs_one_forward_per_log(tmp_path):
    callback = NEFTuneCallback(neftune_alpha=5, neftune_clean_loss=True)
    logged, calls, _ = sft_run(tmp_path, [callback], logging_steps=2)
    assert [entry["step"] for entry in logged] == [2, 4]
    assert all("neft/clean_loss" in entry for entry in logged)
    assert sum(not grad for _, grad in calls) == 2


def test_clean_loss_is_off_by_default(tmp_path):
    logged, calls, _ = sft_run(tmp_path, [NEFTuneCallback(neftune_alpha=5)])
    assert logged and all("neft/clean_loss" not in entry for entry in logged)
    assert all(grad for _, grad in calls)


def test_clean_loss_is_refused_where_the_loss_is_not_a_language_model_loss(tmp_path, caplog):
    tokenizer = make_tokenizer()
    records = prompt_completion_records(8, lengths=(3, 12))
    trainer = DPOTrainer(
        model=make_llama(),
        args=short_run_args(DPOConfig, tmp_path, max_steps=1, max_length=64, use_cpu=True),
        train_dataset=Dataset.from_list(
            [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": r["prompt"]} for r in records]
        ),
        peft_config=make_lora(),
        processing_class=tokenizer,
        callbacks=[NEFTuneCallback(neftune_alpha=5, neftune_clean_loss=True)],
    )
    with caplog.at_level(logging.WARNING, logger="neft_plugins"):
        trainer.train()
    assert (
        "neft/clean_loss is not available here: DPOTrainer's loss is not a language-model loss" in caplog.text
    )
    assert all("neft/clean_loss" not in entry for entry in trainer.state.log_history)


def test_clean_loss_must_be_a_boolean():
    with pytest.raises(NEFTuneConfigError, match="neftune_clean_loss: got 'yes'; expected true or false"):
        NEFTuneCallback(neftune_alpha=5, neftune_clean_loss="yes")
