"""A real GRPOTrainer run on a tiny local Llama with NEFTuneCallback: only the policy pass that carries the
gradient is noised; rollouts, old-policy and reference log-prob passes (all under no_grad) stay clean."""

from __future__ import annotations

import functools
import logging
import random
from typing import Any

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from neft_plugins import NEFTuneCallback
from support.tiny import WORDS, make_llama, make_lora, make_tokenizer, sentence, short_run_args

ALPHA = 5.0
MIN_PROMPT_WORDS = 8
MIN_ELEMENTS = (MIN_PROMPT_WORDS + 1) * 64  # the shortest prompt, at least one completion token, width 64


def reward_in_set(completions: list[str], **_: Any) -> list[float]:
    target = set(WORDS[:20])
    return [sum(word in target for word in text.split()) / max(1, len(text.split())) for text in completions]


class CallSpy:
    """Every call of a model: grad mode, training mode, whether inside ``generate``, and whether it was noised
    (the recorder got a NoiseRecord during the call)."""

    def __init__(self, model: torch.nn.Module, role: str, records: list) -> None:
        self.calls: list[dict[str, Any]] = []
        self._role = role
        self._records = records
        self._generating = 0
        model.generate = self._count_generate(model.generate)
        model.register_forward_pre_hook(self._enter, with_kwargs=True)
        model.register_forward_hook(self._leave)

    def _count_generate(self, generate):
        @functools.wraps(generate)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self._generating += 1
            try:
                return generate(*args, **kwargs)
            finally:
                self._generating -= 1

        return counted

    def _enter(self, module, args, kwargs) -> None:
        self.calls.append(
            {
                "role": self._role,
                "grad": torch.is_grad_enabled(),
                "training": module.training,
                "generating": self._generating > 0,
                "records_before": len(self._records),
            }
        )

    def _leave(self, module, args, output) -> None:
        call = self.calls[-1]
        call["noised"] = len(self._records) > call["records_before"]


def innermost(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM itself: PEFT's generate and forward both end there."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_grpo_noises_only_the_policy_pass(tmp_path, recorder, assert_noise_norms, lora, caplog):
    model_dir = tmp_path / "model"
    make_llama().save_pretrained(model_dir)
    tokenizer = make_tokenizer()
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # no token_type_ids for generate (TRL 0.24)
    tokenizer.save_pretrained(model_dir)
    rng = random.Random(0)
    dataset = Dataset.from_list([{"prompt": sentence(rng, range(MIN_PROMPT_WORDS, 13))} for _ in range(8)])
    args = short_run_args(
        GRPOConfig,
        tmp_path / "out",
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        beta=0.04,  # the reference pass runs
        num_iterations=2,  # the old-policy pass runs
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=reward_in_set,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=make_lora() if lora else None,
        callbacks=[NEFTuneCallback(neftune_alpha=ALPHA)],
    )
    spies = [CallSpy(innermost(trainer.model), "policy", recorder.records)]
    if trainer.ref_model is not None:
        spies.append(CallSpy(innermost(trainer.ref_model), "reference", recorder.records))
    with caplog.at_level(logging.WARNING, logger="neft_plugins"):
        trainer.train()
    # one warning at attach: the KL and the ratio compare the noised policy pass with clean ones
    assert caplog.text.count("GRPOTrainer: NEFTune noises the policy pass that carries the gradient") == 1

    calls = [call for spy in spies for call in spy.calls]
    generate_calls = [call for call in calls if call["generating"]]
    gradient_calls = [call for call in calls if call["grad"] and call["training"]]
    clean_scoring = [call for call in calls if not call["generating"] and not call["grad"]]
    # (a) rollouts are never noised; every noised pass is a grad-enabled training pass
    assert generate_calls and not any(call["noised"] for call in generate_calls), "a rollout was noised"
    assert [call for call in calls if call["noised"]] == gradient_calls
    # (b) the policy pass that carries the gradient is noised, with the paper's per-sequence norm
    assert len(gradient_calls) == len(recorder.records) == args.max_steps
    assert all(call["role"] == "policy" for call in gradient_calls)
    assert_noise_norms(recorder.sequence_noise_norms(), ALPHA, MIN_ELEMENTS)
    # (c) old-policy and reference log-prob passes (no grad) are clean
    roles = {call["role"] for call in clean_scoring}
    assert roles == ({"policy"} if lora else {"policy", "reference"}), roles
    assert not any(call["noised"] for call in clean_scoring), "a no-grad log-prob pass was noised"
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(entry["neft/alpha"] == ALPHA for entry in logged)
