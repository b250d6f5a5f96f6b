"""The explicit binding: an integration hands the callback its trainer (``NEFTuneCallback(...).bind(trainer)``),
and the callback then never searches the call stack, for the trainer or for the checkpoint train() resumes from.
Unbound, it searches, and says how to bind when it finds nothing."""

from __future__ import annotations

import pytest
from datasets import Dataset
from test_scale import losses, resume_args
from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments
from trl import SFTTrainer

import neft_plugins.callback as callback_module
from neft_plugins import NEFTuneAttachError, NEFTuneCallback
from support.tiny import make_llama, make_tokenizer, short_run_args, text_records
from support.versions import transformers_resumes_under_torch_2_13


@transformers_resumes_under_torch_2_13
def test_a_bound_callback_resumes_exactly_without_searching_the_call_stack(tmp_path, monkeypatch):
    def no_stack_search(*args, **kwargs):
        raise AssertionError("a bound callback searched the call stack")

    monkeypatch.setattr(callback_module, "_caller_local", no_stack_search)
    dataset = Dataset.from_list(text_records(40, lengths=(3, 20)))

    def bound_trainer(output_dir):
        trainer = SFTTrainer(
            model=make_llama(),
            args=resume_args(output_dir, 4),
            train_dataset=dataset,
            processing_class=make_tokenizer(),
        )
        trainer.add_callback(NEFTuneCallback(neftune_alpha=15, neftune_seed=5).bind(trainer))
        return trainer

    uninterrupted = bound_trainer(tmp_path / "a")
    uninterrupted.train()
    resumed = bound_trainer(tmp_path / "b")
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))
    assert len(losses(resumed)) == 2 and losses(resumed) == losses(uninterrupted)


def test_an_unbound_callback_with_no_trainer_calling_it_says_how_to_bind(tmp_path):
    args = short_run_args(TrainingArguments, tmp_path)
    with pytest.raises(NEFTuneAttachError, match=r"NEFTuneCallback\(\.\.\.\)\.bind\(trainer\)"):
        NEFTuneCallback(neftune_alpha=5).on_train_begin(
            args, TrainerState(), TrainerControl(), model=make_llama()
        )


def test_the_resumed_checkpoint_is_read_through_a_train_override_that_hands_its_arguments_on(tmp_path):
    """ms-swift's trainer overrides ``train(*args, **kwargs)`` and is called ``trainer.train(checkpoint)``."""

    class HandsOn(Trainer):
        def train(self, *args, **kwargs):
            return super().train(*args, **kwargs)

    trainer = HandsOn.__new__(HandsOn)  # only train()'s signature is read
    checkpoint = str(tmp_path / "checkpoint-2")
    assert callback_module._resume_argument(trainer, trainer.train, (checkpoint,), {}) == checkpoint
