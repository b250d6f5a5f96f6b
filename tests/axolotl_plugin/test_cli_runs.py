"""The real ``axolotl train`` CLI with the plugin, on each example config (tiny local Llama, local jsonl).

Everything is asserted from the run's own output: the console logs of the plugin's callback and the
per-step metrics the trainer prints (``neft/noise_norm``, ``neft/tokens_noised``, TRL's ``num_tokens``).
"""

from __future__ import annotations

import itertools
import json
import statistics

import pytest

from support.axolotl_cli import SEQUENCE_LEN, longest_alpaca_tokens
from support.cli_run import CliRun
from support.logs import ATTACHED, DETACHED
from support.matrix import on_newest
from support.noise import assert_near_paper_norm, paper_norm

ALPHA = 5.0
# Each logged value is a mean over >= 2 sequences of >= ~30 tokens x 64 dims; its spread is < 1%, and
# the printed value has 4 significant digits. A wrong L misses by 25% or more here.
TOLERANCE = 0.05


def assert_lifecycle(run: CliRun) -> None:
    """Attached before the first training step, detached after the last, and noise on every step."""
    assert run.returncode == 0, run.describe()
    assert len(run.metrics) == run.config["max_steps"], run.describe()
    attached = run.text.find(ATTACHED)
    detached = run.text.find(DETACHED)
    first_step = run.text.find("'neft/noise_norm'")
    last_step = run.text.rfind("'neft/noise_norm'")
    assert 0 <= attached < first_step, "the plugin's callback did not attach before training"
    assert last_step < detached, "the plugin's callback did not detach after training"
    assert run.text.count(ATTACHED) == run.text.count(DETACHED) == 1
    assert run.metric("neft/alpha") == [ALPHA] * len(run.metrics)
    assert all(tokens > 0 for tokens in run.metric("neft/tokens_noised"))


def mean_noise_norm(run: CliRun) -> float:
    return statistics.fmean(run.metric("neft/noise_norm"))


def assert_paper_norm(run: CliRun) -> None:
    context = f"(the mean of neft/noise_norm {run.metric('neft/noise_norm')})"
    assert_near_paper_norm([mean_noise_norm(run)], ALPHA, rel=TOLERANCE, context=context)


@pytest.mark.parametrize("example", ["lora", pytest.param("qlora", marks=on_newest("axolotl"))])
def test_sft_noises_each_sequence_with_paper_norm(train_example, example):
    run = train_example(example)
    assert_lifecycle(run)
    assert_paper_norm(run)


@on_newest("axolotl")
def test_qlora_trains_a_4bit_model(train_example):
    run = train_example("qlora")
    assert run.returncode == 0, run.describe()
    assert "converting PEFT model w/ prepare_model_for_kbit_training" in run.text
    saved = json.loads((run.output_dir / "config.json").read_text())
    quantization = saved["quantization_config"]
    assert quantization["load_in_4bit"] is True and quantization["bnb_4bit_quant_type"] == "nf4"


def test_saved_adapter_holds_nothing_of_ours(train_example):
    from safetensors import safe_open

    run = train_example("lora")
    with safe_open(run.output_dir / "adapter_model.safetensors", "pt") as adapter:
        keys = list(adapter.keys())
    assert keys and all("lora_" in key for key in keys)
    assert not any("neft" in key.lower() for key in keys)


@pytest.fixture(scope="session")
def longest_record(tiny) -> int:
    return longest_alpaca_tokens(tiny.model, tiny.alpaca_records())


def assert_rows_were_packed(run: CliRun, longest_record: int) -> None:
    rows = run.config["micro_batch_size"]
    per_row = [tokens / rows for tokens in run.metric("neft/tokens_noised")]
    assert all(tokens > 1.5 * longest_record for tokens in per_row), (
        f"tokens per packed row {per_row}; one record has at most {longest_record}: rows were not packed"
    )


def assert_padding_not_noised(run: CliRun) -> None:
    capacity = run.config["micro_batch_size"] * SEQUENCE_LEN
    assert all(tokens < capacity for tokens in run.metric("neft/tokens_noised")), (
        f"neft/tokens_noised {run.metric('neft/tokens_noised')} vs {capacity} positions per step: "
        "the padding at the end of the packed rows was noised"
    )


@on_newest("axolotl")
def test_packing_gives_each_packed_sequence_its_own_length(train_example, longest_record):
    """The example as users run it (a packing-capable attention backend: Axolotl drops attention_mask and
    sends position_ids that restart for each packed sequence)."""
    run = train_example("packing")
    assert_lifecycle(run)
    assert_rows_were_packed(run, longest_record)
    assert_paper_norm(run)
    # No attention_mask here: the padding tail carries position ids from 0 like one more sequence, and
    # is known by its labels (all -100).
    assert_padding_not_noised(run)


@on_newest("axolotl")
def test_full_finetuning_packed_with_segment_ids_in_attention_mask(train_example, longest_record):
    """``full.yml`` with ``sample_packing: true`` and no attention backend named: Axolotl's multipack collator
    then puts segment ids 1..K in attention_mask (0 = padding). Each segment gets its own L, and the
    padding at the end of the packed rows gets no noise."""
    run = train_example("full", sample_packing=True, pad_to_sequence_len=True)
    assert_lifecycle(run)
    assert_rows_were_packed(run, longest_record)
    assert_paper_norm(run)
    assert_padding_not_noised(run)


@on_newest("axolotl")
def test_packing_norm_tells_per_sequence_from_row_length(train_example):
    """Control: the same run with L = the packed row (``neftune_length: padded``, transformers' built-in
    scaling). Each sequence then gets alpha/sqrt(3) * sqrt(L_s / L_row): here about 0.35-0.65x, so the
    per-sequence check above would fail if our hook used the row length."""
    per_sequence = train_example("packing")
    per_row = train_example("packing", neftune_length="padded")
    assert_lifecycle(per_row)
    ratio = mean_noise_norm(per_row) / paper_norm(ALPHA)
    assert ratio < 1 - 5 * TOLERANCE, f"noise norm with the row's L is {ratio:.3f}x alpha/sqrt(3)"
    assert mean_noise_norm(per_sequence) / mean_noise_norm(per_row) > 1.3


@on_newest("axolotl")
def test_dpo_noises_policy_passes_only(train_example):
    """``rl: dpo`` (Axolotl ignores its built-in key there). The LoRA reference pass runs the same model,
    adapters off, under no_grad: it must get no noise. TRL counts the tokens of the policy pass in
    ``num_tokens``; ``neft/tokens_noised`` must equal it step for step (noised reference passes would
    double it)."""
    run = train_example("dpo")
    assert_lifecycle(run)
    assert_paper_norm(run)
    num_tokens = run.metric("num_tokens")
    policy_tokens = [num_tokens[0]] + [after - before for before, after in itertools.pairwise(num_tokens)]
    assert run.metric("neft/tokens_noised") == policy_tokens
