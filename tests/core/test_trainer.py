"""Real transformers/TRL trainer runs on a tiny local Llama, with NEFTuneCallback."""

import pytest
import torch
from datasets import Dataset
from test_attach import neft_traces
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
from trl import SFTConfig, SFTTrainer

from neft_plugins import NEFTuneCallback, NEFTuneConflictError
from support.noise import assert_near_paper_norm
from support.tiny import (
    make_llama,
    make_lora,
    make_tokenizer,
    prompt_completion_records,
    short_run_args,
    text_records,
)
from support.versions import transformers_4bit_on_new_bitsandbytes, trl_packing_keeps_sequences

ALPHA = 5.0
MIN_ELEMENTS = 3 * 64  # the shortest sequences have 3 tokens of width 64


def sft_args(tmp_path, **overrides):
    defaults = {
        "max_steps": 3,
        "per_device_train_batch_size": 8,
        "use_cpu": True,
        "max_length": 128,
        "learning_rate": 1e-3,
        "seed": 0,
    }
    return short_run_args(SFTConfig, tmp_path / "out", **{**defaults, **overrides})


class BatchSpy:
    """Counts the real tokens and grad mode of every model call, as the model saw them."""

    def __init__(self, model):
        self.calls = []
        self._hook = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        real = int(mask.sum()) if mask is not None and mask.dim() == 2 else kwargs["input_ids"].numel()
        self.calls.append({"real_tokens": real, "grad": torch.is_grad_enabled(), "training": module.training})

    def remove(self):
        self._hook.remove()


def assert_run_noised_right(trainer, recorder, spy, assert_noise_norms):
    training_calls = [call for call in spy.calls if call["grad"] and call["training"]]
    assert len(recorder.records) == len(training_calls) > 0
    for record, call in zip(recorder.records, training_calls, strict=True):
        assert int(record.tokens_noised) == call["real_tokens"], "padding must get no noise"
    assert_noise_norms(recorder.sequence_noise_norms(), ALPHA, MIN_ELEMENTS)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(entry["neft/alpha"] == ALPHA for entry in logged)
    assert_near_paper_norm([entry["neft/noise_norm"] for entry in logged], ALPHA, rel=0.05)
    assert all(entry["neft/embed_norm"] > 0 and entry["neft/tokens_noised"] > 0 for entry in logged)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def mixed_lengths():
    return Dataset.from_list(text_records(48, lengths=(3, 40, 90)))


def run_sft(tmp_path, model, dataset, tokenizer, callbacks, **overrides):
    trainer = SFTTrainer(
        model=model,
        args=sft_args(tmp_path, **overrides.pop("args", {})),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        **overrides,
    )
    spy = BatchSpy(trainer.model)
    try:
        trainer.train()
    finally:
        spy.remove()
    return trainer, spy


def noised_sft(tmp_path, dataset, tokenizer, model=None, **overrides):
    """``run_sft`` of ``model`` (a fresh tiny Llama by default) with NEFTuneCallback(neftune_alpha=ALPHA)."""
    model = make_llama() if model is None else model
    return run_sft(tmp_path, model, dataset, tokenizer, [NEFTuneCallback(neftune_alpha=ALPHA)], **overrides)


def test_full_finetune_right_padding(tmp_path, tokenizer, mixed_lengths, recorder, assert_noise_norms):
    model = make_llama()
    callback = NEFTuneCallback(neftune_alpha=ALPHA)
    trainer, spy = run_sft(tmp_path, model, mixed_lengths, tokenizer, [callback])
    assert_run_noised_right(trainer, recorder, spy, assert_noise_norms)
    assert callback.handle is None and neft_traces(model) == [], "detached after training"


def test_lora(tmp_path, tokenizer, mixed_lengths, recorder, assert_noise_norms):
    trainer, spy = noised_sft(tmp_path, mixed_lengths, tokenizer, peft_config=make_lora())
    assert_run_noised_right(trainer, recorder, spy, assert_noise_norms)
    assert neft_traces(trainer.model) == []


@transformers_4bit_on_new_bitsandbytes
def test_qlora_4bit(tmp_path, tokenizer, mixed_lengths, recorder, assert_noise_norms):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    make_llama().save_pretrained(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path / "tiny",
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
        dtype=torch.float32,
    )
    assert any("4bit" in type(m).__name__ for m in model.modules())
    trainer, spy = noised_sft(tmp_path, mixed_lengths, tokenizer, model, peft_config=make_lora())
    assert_run_noised_right(trainer, recorder, spy, assert_noise_norms)


def test_left_padding_with_a_plain_trainer(tmp_path, tokenizer, mixed_lengths, recorder, assert_noise_norms):
    tokenizer = make_tokenizer()
    tokenizer.padding_side = "left"
    dataset = mixed_lengths.map(lambda r: tokenizer(r["text"]), remove_columns=["text"])
    model = make_llama()
    trainer = Trainer(
        model=model,
        args=short_run_args(
            TrainingArguments, tmp_path / "out", max_steps=3, per_device_train_batch_size=8, use_cpu=True
        ),
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[NEFTuneCallback(neftune_alpha=ALPHA)],
    )
    seen_left_padding = []
    hook = model.register_forward_pre_hook(
        lambda m, a, k: seen_left_padding.append(bool((k["attention_mask"][:, 0] == 0).any())),
        with_kwargs=True,
    )
    spy = BatchSpy(model)
    try:
        trainer.train()
    finally:
        hook.remove()
        spy.remove()
    assert any(seen_left_padding)
    assert_run_noised_right(trainer, recorder, spy, assert_noise_norms)


@trl_packing_keeps_sequences
def test_padding_free_packing(tmp_path, tokenizer, mixed_lengths, recorder, assert_noise_norms):
    trainer, spy = noised_sft(
        tmp_path,
        mixed_lengths,
        tokenizer,
        args={"packing": True, "padding_free": True, "max_length": 256, "per_device_train_batch_size": 4},
    )
    sequences_per_row = [int(r.is_sequence.sum()) for r in recorder.records]
    assert max(sequences_per_row) > 4, "rows were packed"
    assert_run_noised_right(trainer, recorder, spy, assert_noise_norms)


def test_response_scope_on_prompt_completion_data(tmp_path, tokenizer, recorder, assert_noise_norms):
    dataset = Dataset.from_list(prompt_completion_records(24, lengths=(3, 30)))
    trainer, _ = run_sft(
        tmp_path,
        make_llama(),
        dataset,
        tokenizer,
        [NEFTuneCallback(neftune_alpha=ALPHA, neftune_scope="response")],
    )
    assert_noise_norms(recorder.sequence_noise_norms(), ALPHA, MIN_ELEMENTS)
    batch = next(iter(trainer.get_train_dataloader()))
    assert sum(int(r.tokens_noised) for r in recorder.records[:1]) == int((batch["labels"] != -100).sum())


def test_eval_loss_is_untouched(tmp_path, tokenizer, mixed_lengths):
    """With a zero learning rate the weights never change, so eval loss during a noised run must equal
    eval loss of the same weights with nothing attached, bit for bit."""
    model = make_llama()
    args = {"learning_rate": 0.0, "eval_strategy": "steps", "eval_steps": 2, "max_steps": 2}
    trainer, _ = run_sft(
        tmp_path,
        model,
        mixed_lengths,
        tokenizer,
        [NEFTuneCallback(neftune_alpha=15)],
        eval_dataset=mixed_lengths,
        args=args,
    )
    during = [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]
    assert during and trainer.evaluate()["eval_loss"] == during[0]
    noised_train_loss = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    clean, _ = run_sft(
        tmp_path, make_llama(), mixed_lengths, tokenizer, [], args=args, eval_dataset=mixed_lengths
    )
    clean_train_loss = [entry["loss"] for entry in clean.state.log_history if "loss" in entry]
    assert noised_train_loss != clean_train_loss, "the training passes were noised"


class FailingAt:
    def __init__(self, model, call):
        self.calls, self.fail_at = 0, call
        self._hook = model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("step failed on purpose")

    def remove(self):
        self._hook.remove()


@pytest.mark.parametrize("added_later", [False, True])
def test_a_failing_step_leaves_nothing_attached(tmp_path, tokenizer, mixed_lengths, added_later):
    model = make_llama()
    callback = NEFTuneCallback(neftune_alpha=ALPHA)
    trainer = SFTTrainer(
        model=model,
        args=sft_args(tmp_path),
        train_dataset=mixed_lengths,
        processing_class=tokenizer,
        callbacks=[] if added_later else [callback],
    )
    if added_later:
        trainer.add_callback(callback)
    failing = FailingAt(model, call=2)
    with pytest.raises(RuntimeError, match="step failed on purpose"):
        trainer.train()
    failing.remove()
    assert failing.calls == 2, "the first step ran with NEFTune attached, the second raised"
    assert callback.handle is None
    assert neft_traces(model) == []


@pytest.mark.parametrize("alpha", [ALPHA, 0.0])
def test_refuses_the_builtin_key_beside_ours(tmp_path, tokenizer, mixed_lengths, alpha):
    """Even with neftune_alpha 0 (meant as "off"): the built-in would still noise."""
    args = sft_args(tmp_path, neftune_noise_alpha=5)
    with pytest.raises(NEFTuneConflictError, match="neftune_noise_alpha: got 5"):
        SFTTrainer(
            model=make_llama(),
            args=args,
            train_dataset=mixed_lengths,
            processing_class=tokenizer,
            callbacks=[NEFTuneCallback(neftune_alpha=alpha)],
        )
    model = make_llama()
    trainer = SFTTrainer(model=model, args=args, train_dataset=mixed_lengths, processing_class=tokenizer)
    trainer.add_callback(NEFTuneCallback(neftune_alpha=alpha))
    with pytest.raises(NEFTuneConflictError, match="neftune_noise_alpha: got 5"):
        trainer.train()
    assert neft_traces(model) == [], "transformers' own hook is removed too"


def test_dpo_reference_passes_get_no_noise(tmp_path, tokenizer, recorder, assert_noise_norms):
    from trl import DPOConfig, DPOTrainer

    records = prompt_completion_records(16, lengths=(3, 12))
    dataset = Dataset.from_list(
        [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": r["prompt"]} for r in records]
    )
    trainer = DPOTrainer(
        model=make_llama(),
        args=short_run_args(
            DPOConfig, tmp_path / "dpo", max_steps=2, per_device_train_batch_size=4, use_cpu=True
        ),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=make_lora(),
        callbacks=[NEFTuneCallback(neftune_alpha=ALPHA)],
    )
    spy = BatchSpy(trainer.model)
    try:
        trainer.train()
    finally:
        spy.remove()
    reference_calls = [call for call in spy.calls if not call["grad"]]
    policy_calls = [call for call in spy.calls if call["grad"] and call["training"]]
    assert reference_calls, "the reference model ran through the same (adapter-disabled) model"
    assert len(recorder.records) == len(policy_calls) > 0
    assert_noise_norms(recorder.sequence_noise_norms(), ALPHA, MIN_ELEMENTS)
    assert all("neft/noise_norm" in entry for entry in trainer.state.log_history if "loss" in entry)
