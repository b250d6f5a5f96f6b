"""Wherever NEFTune cannot do its job on a training step, it says so, once."""

import contextlib
import logging
import math
import re
from collections.abc import Iterator

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from neft_plugins import NEFTuneCallback, NEFTuneConfigError, NEFTuneHandle, attach, neftune
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


EVAL_MODE = "made in eval mode, so NEFTune added no noise to it"
NO_STEP = "but set_step(step, total_steps) was not called"


def batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(4, 60, (2, 8))
    return {"input_ids": ids, "labels": ids}


@contextlib.contextmanager
def attached_by(route: str, model: torch.nn.Module, **keys) -> Iterator[NEFTuneHandle]:
    """NEFTune as a hand-written loop holds it: ``with neftune(...)``, or ``attach()`` and a ``detach()``."""
    if route == "neftune":
        with neftune(model, **keys) as handle:
            yield handle
        return
    handle = attach(model, **keys)
    try:
        yield handle
    finally:
        handle.detach()


@pytest.mark.parametrize("route", ["neftune", "attach"])
def test_a_loop_left_in_eval_mode_says_so_once(route, caplog):
    """from_pretrained() leaves a model in eval mode: the loop's backward passes say that nothing was noised,
    and why; once model.train() is called the same loop is noised."""
    model = make_llama().eval()
    with (
        caplog.at_level(logging.WARNING, logger="neft_plugins"),
        attached_by(route, model, neftune_alpha=5) as h,
    ):
        for _ in range(3):
            model(**batch()).loss.backward()
        in_eval_mode = h.read_logs()
        model.train()
        model(**batch()).loss.backward()
        in_training_mode = h.read_logs()
    assert warnings_in(caplog, EVAL_MODE) == 1
    assert "call model.train()" in caplog.text
    assert in_eval_mode["neft/tokens_noised"] == 0
    assert in_training_mode["neft/tokens_noised"] == 16


def test_a_backward_through_the_logits_of_an_eval_mode_pass_says_so(caplog):
    """A loop that computes its own loss from the logits (no labels) is told too."""
    model = make_llama().eval()
    with caplog.at_level(logging.WARNING, logger="neft_plugins"), neftune(model, neftune_alpha=5):
        model(input_ids=batch()["input_ids"]).logits.logsumexp(-1).mean().backward()
    assert warnings_in(caplog, EVAL_MODE) == 1


def test_evaluation_generation_and_reference_passes_stay_silent_and_clean(caplog):
    """Evaluation under no_grad(), evaluation in eval mode with autograd on but no backward, generate() and a
    no_grad() reference pass in training mode: no warning, outputs bit-identical to the model without NEFTune."""
    model = make_llama()
    inputs = batch()
    prompt = inputs["input_ids"][:1, :4]

    def outputs() -> list[torch.Tensor]:
        model.eval()
        with torch.no_grad():
            evaluated = model(**inputs).logits
        without_no_grad = model(**inputs).logits.detach()
        generated = model.generate(prompt, max_new_tokens=5, do_sample=False)
        model.train()
        with torch.no_grad():
            reference = model(**inputs).logits
        return [evaluated, without_no_grad, generated, reference]

    clean = outputs()
    with caplog.at_level(logging.WARNING, logger="neft_plugins"), neftune(model, neftune_alpha=15) as handle:
        with_neftune = outputs()
        logs = handle.read_logs()
    assert all(torch.equal(a, b) for a, b in zip(clean, with_neftune, strict=True))
    assert logs["neft/tokens_noised"] == 0
    assert warnings_in(caplog, EVAL_MODE) == 0 and warnings_in(caplog, NOTHING_NOISED) == 0


@pytest.mark.parametrize("route", ["neftune", "attach"])
def test_a_decaying_schedule_without_set_step_says_so_once(route, caplog):
    model = make_llama().train()
    keys = {"neftune_alpha": 5, "neftune_schedule": "linear"}
    with caplog.at_level(logging.WARNING, logger="neft_plugins"), attached_by(route, model, **keys):
        model(**batch()).loss.backward()
        model(**batch()).loss.backward()
    assert warnings_in(caplog, NO_STEP) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="neft_plugins"), attached_by(route, model, **keys) as handle:
        for step in range(2):
            handle.set_step(step, 2)
            model(**batch()).loss.backward()
    assert warnings_in(caplog, NO_STEP) == 0


def test_the_detach_line_says_what_the_model_received(caplog):
    """The detach line sums up the attachment: passes, tokens noised, sequences, and the mean noise norm per
    sequence, which is alpha/sqrt(3) within the uniform spread."""
    model = make_llama(hidden_size=256).train()
    with (
        caplog.at_level(logging.WARNING, logger="neft_plugins"),
        neftune(model, neftune_alpha=6, neftune_seed=0),
    ):
        for _ in range(10):
            ids = torch.randint(4, 60, (4, 16))
            model(input_ids=ids, labels=ids).loss.backward()
    line = next(r.getMessage() for r in caplog.records if "detached NEFTune" in r.getMessage())
    summary = re.search(
        r": 10 training passes, 640 tokens noised in 40 sequences, mean noise norm ([\d.]+)", line
    )
    assert summary, line
    assert float(summary.group(1)) == pytest.approx(6 / math.sqrt(3), rel=0.02)


def test_a_detach_with_no_training_pass_says_so(caplog):
    model = make_llama()
    with (
        caplog.at_level(logging.WARNING, logger="neft_plugins"),
        neftune(model, neftune_alpha=5),
        torch.no_grad(),
    ):
        model(**batch())
    assert (
        "detached NEFTune from the input of LlamaForCausalLM.model.layers.0: no training pass got noise"
        in (caplog.text)
    )
