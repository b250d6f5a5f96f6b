"""Unsloth's CPU backend end to end, as a user's script runs it: ``FastLanguageModel.from_pretrained`` on a tiny
local Llama folder, LoRA (16-bit, or 4-bit QLoRA) through ``get_peft_model`` or full fine-tuning, TRL's
``SFTTrainer`` (as Unsloth patches it) with ``NEFTuneCallback(neftune_alpha=5)``: the noise the first decoder layer
gets, per sequence, measured by the independent spy, and the ``neft/*`` logs."""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer
from unsloth import FastLanguageModel
from unsloth_runs import HIDDEN, MAX_LENGTH

from neft_plugins import NEFTuneCallback, NEFTuneConflictError
from support.logs import double_noise_error
from support.noise import (
    assert_near_paper_norm,
    assert_the_builtin_on_padded_rows,
    paper_norm,
    uniform_norm_tolerance,
)
from support.spy import first_block_inputs
from support.tiny import short_run_args
from support.trainer_spy import SpyCallback

ALPHA = 5.0
LOG_TOLERANCE = 0.06  # the mean over one step's 4 sequences (measured spread ~1%)


def sft(model, tokenizer, dataset, output_dir, callbacks, **overrides) -> SFTTrainer:
    """TRL's SFTTrainer as a user's Unsloth script builds it: batches of 4, 2 steps."""
    defaults = {"max_steps": 2, "per_device_train_batch_size": 4, "max_length": MAX_LENGTH, "seed": 0}
    args = short_run_args(SFTConfig, output_dir, **{**defaults, **overrides})
    return SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks
    )


def check_ours(trainer: SFTTrainer, spy: SpyCallback) -> list[float]:
    """Every sequence within its 5-sigma bound of alpha/sqrt(3), padding exactly 0, the neft/* logs; the
    per-sequence ratios to alpha/sqrt(3)."""
    ratios = []
    for each in spy.training_passes():
        assert each.largest_padding_noise() == 0.0, "padding gets no noise"
        assert (each.segments == 0).any(), "the batch is right-padded"
        for length, norm in each.sequences():
            assert_near_paper_norm([norm], ALPHA, rel=uniform_norm_tolerance(length * HIDDEN), context=length)
            ratios.append(norm / paper_norm(ALPHA))
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2
    assert all(entry["neft/alpha"] == ALPHA and entry["neft/tokens_noised"] > 0 for entry in logged)
    assert_near_paper_norm([entry["neft/noise_norm"] for entry in logged], ALPHA, rel=LOG_TOLERANCE)
    return ratios


@pytest.mark.parametrize("tuning", ["lora", "qlora", "full"])
def test_our_callback_gives_each_sequence_the_paper_noise(tiny_model, dataset, load, tmp_path, tuning):
    model, tokenizer = load(tiny_model, full_finetuning=tuning == "full", load_in_4bit=tuning == "qlora")
    quantized = any(isinstance(module, bnb.nn.Linear4bit) for module in model.modules())
    assert quantized == (tuning == "qlora")
    neftune = NEFTuneCallback(neftune_alpha=ALPHA)
    spy = SpyCallback(neftune)
    trainer = sft(model, tokenizer, dataset, tmp_path / "out", [neftune, spy])
    trainer.train()
    ratios = check_ours(trainer, spy)
    print(f"ours ({tuning}): per-sequence ratios {[round(r, 3) for r in ratios]}")
    assert neftune.handle is None, "detached when training ends"


class InferenceProbe(TrainerCallback):
    """After the first step, with NEFTune attached: in Unsloth's inference mode (``FastLanguageModel
    .for_inference``), what the first block receives in a greedy ``generate`` and in a forward with autograd on;
    then back to training (``for_training``)."""

    def __init__(self, neftune: NEFTuneCallback, prompt: torch.Tensor) -> None:
        self.neftune = neftune
        self.prompt = prompt
        self.generated: torch.Tensor | None = None
        self.generation_inputs: list[torch.Tensor] = []
        self.forward_input: torch.Tensor | None = None
        self.embeddings: torch.Tensor | None = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.generated is not None:
            return
        assert self.neftune.handle is not None, "NEFTune is attached between the training steps"
        block = self.neftune.handle.first_block
        FastLanguageModel.for_inference(model)
        try:
            self.generation_inputs = first_block_inputs(block, lambda: self._generate(model))
            self.forward_input = first_block_inputs(block, lambda: model(input_ids=self.generated))[0]
        finally:
            FastLanguageModel.for_training(model)
        self.embeddings = model.get_input_embeddings().weight.detach().clone()

    def _generate(self, model) -> None:
        self.generated = model.generate(input_ids=self.prompt, max_new_tokens=6, do_sample=False)


def test_unsloths_inference_mode_gets_no_noise_while_neftune_is_attached(tiny_model, dataset, load, tmp_path):
    """generate() in Unsloth's inference mode and a forward in it (eval mode, autograd on), between two training
    steps: the first block gets the embedding rows of the tokens bit for bit."""
    model, tokenizer = load(tiny_model)
    neftune = NEFTuneCallback(neftune_alpha=ALPHA)
    prompt = tokenizer("what is the color of the river", return_tensors="pt").input_ids
    probe = InferenceProbe(neftune, prompt)
    sft(model, tokenizer, dataset, tmp_path / "out", [neftune, probe]).train()
    generated, steps = probe.generated, probe.generation_inputs
    assert generated is not None and generated.shape[1] > prompt.shape[1]
    assert steps[0].shape[1] == prompt.shape[1], "the prompt first, then one token per step (KV cache on)"
    clean = probe.embeddings[generated]
    assert torch.equal(torch.cat(steps, dim=1), clean[:, : sum(each.shape[1] for each in steps)])
    assert torch.equal(probe.forward_input, clean)


def test_unsloths_builtin_key_beside_ours_is_refused_with_the_one_message(
    tiny_model, dataset, load, tmp_path
):
    model, tokenizer = load(tiny_model)
    with pytest.raises(NEFTuneConflictError) as error:
        sft(
            model,
            tokenizer,
            dataset,
            tmp_path / "out",
            [NEFTuneCallback(neftune_alpha=ALPHA)],
            neftune_noise_alpha=5,
        )
    assert str(error.value) == double_noise_error("neftune_noise_alpha", 5, ALPHA)


def test_the_builtin_key_alone_noises_padding_and_scales_by_the_padded_row(
    tiny_model, dataset, load, tmp_path
):
    """What ``SFTConfig(neftune_noise_alpha=5)`` gives on Unsloth's CPU backend (transformers' hook on the
    embedding output), measured the same way: the padded row's length as L (each sequence's norm is
    alpha/sqrt(3) * sqrt(L_s / L_row)) and padding noised. The ratios are printed (``pytest -s``) for
    docs/unsloth.md."""
    model, tokenizer = load(tiny_model)
    spy = SpyCallback()
    sft(model, tokenizer, dataset, tmp_path / "out", [spy], neftune_noise_alpha=ALPHA).train()
    passes = list(spy.training_passes())
    assert_the_builtin_on_padded_rows(passes, ALPHA)
