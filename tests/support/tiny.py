"""Tiny local Llamas, word-level tokenizers and records for tests: nothing comes from the model hub.

``build_tiny(folder)`` builds the assets every adapter's runs share (``tests/conftest.py``'s ``tiny`` fixture, once
per session): one Llama + tokenizer folder, one Alpaca dataset and one preference dataset; each adapter's fixtures
only write these records in its framework's format.
Run as a module to build them into a folder, e.g. to try the example configs by hand:
    PYTHONPATH=tests python -m support.tiny /tmp/neft-tiny
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

Args = TypeVar("Args")

WORDS = (
    "the a an of to in and or is are was be it this that with for on as at by from "
    "what how why who explain write list give name describe summarize translate answer question "
    "cat dog bird fish tree river mountain city music color number water fire light sound "
    "red green blue small large quick slow happy sad old new good bad first last one two three"
).split()
# pad, eos, bos, unk (ids 0-3), then additional special tokens
SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")
CHAT_SPECIALS = ("<pad>", "</s>", "<s>", "<unk>", "<|im_start|>", "<|im_end|>")  # Llama's names, ChatML's
# Alpaca's and ChatML's template words, in the shared tiny model's vocabulary beside the data's words.
TEMPLATE_WORDS = (
    "Below is an instruction that describes a task paired with input provides further context Write "
    "response appropriately completes the request Instruction Input Response system user assistant "
    "### : , . \n"
).split()
HIDDEN = 64  # the shared tiny Llama's width: d in alpha / sqrt(L * d)


def vocabulary(specials: Sequence[str] = SPECIALS, extra_words: Sequence[str] = ()) -> list[str]:
    return list(dict.fromkeys((*specials, *extra_words, *WORDS)))


def make_tokenizer(
    specials: Sequence[str] = SPECIALS, extra_words: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pad, eos, bos, unk, *additional = specials
    vocab = {token: index for index, token in enumerate(vocabulary(specials, extra_words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=pad,
        eos_token=eos,
        bos_token=bos,
        unk_token=unk,
        additional_special_tokens=additional,
    )


def make_llama(hidden_size: int = 64, layers: int = 2, seed: int = 0, **config: Any) -> LlamaForCausalLM:
    """A random Llama for ``make_tokenizer()``'s vocabulary; ``config`` overrides LlamaConfig fields."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    defaults: dict[str, Any] = {
        "vocab_size": len(vocabulary()),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
    }
    return LlamaForCausalLM(LlamaConfig(**{**defaults, **config}))


def make_lora() -> LoraConfig:
    """Rank-4 LoRA on the attention's q and v projections."""
    from peft import LoraConfig

    return LoraConfig(r=4, target_modules=["q_proj", "v_proj"])


def short_run_args(config: type[Args], output_dir: Path, **overrides: Any) -> Args:
    """``config`` (TrainingArguments or a TRL subclass) for a short test run: a log every step, no reports,
    no checkpoints; ``overrides`` on top."""
    defaults = {"output_dir": str(output_dir), "logging_steps": 1, "report_to": [], "save_strategy": "no"}
    return config(**{**defaults, **overrides})


def sentence(rng: random.Random, lengths: Sequence[int]) -> str:
    """``rng.choice(lengths)`` words (a ``range`` draws as ``rng.randint`` does)."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.choice(lengths)))


def prompt_completion_records(count: int, seed: int = 0, lengths: Sequence[int] = (3, 40)) -> list[dict]:
    """Records whose prompts and completions have very different lengths."""
    rng = random.Random(seed)
    return [{"prompt": sentence(rng, lengths), "completion": sentence(rng, lengths)} for _ in range(count)]


def text_records(count: int, seed: int = 0, lengths: Sequence[int] = (3, 40)) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": sentence(rng, lengths)} for _ in range(count)]


def alpaca_records(
    count: int, seed: int, instruction: Sequence[int], output: Sequence[int], inputs: Sequence[int] = ()
) -> list[dict]:
    """Alpaca records with word counts drawn from the given lengths; with ``inputs``, about half get an input."""
    rng = random.Random(seed)
    return [
        {
            "instruction": sentence(rng, instruction),
            "input": sentence(rng, inputs) if inputs and rng.random() < 0.5 else "",
            "output": sentence(rng, output),
        }
        for _ in range(count)
    ]


def dpo_records(count: int, seed: int = 1) -> list[dict]:
    """Preference pairs in the shape of Intel/orca_dpo_pairs (Axolotl type ``chatml.intel``)."""
    rng = random.Random(seed)
    return [
        {
            "system": sentence(rng, range(7)),
            "question": sentence(rng, range(3, 16)),
            "chosen": sentence(rng, range(3, 31)),
            "rejected": sentence(rng, range(3, 31)),
        }
        for _ in range(count)
    ]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Tiny:
    """The assets every adapter's runs share."""

    model: Path  # a 2-layer Llama of width ``hidden_size`` and its chat tokenizer
    alpaca: Path  # 96 Alpaca records (jsonl), about 30 to 110 tokens with Alpaca's template
    dpo: Path  # 48 preference pairs (jsonl) in the shape of Intel/orca_dpo_pairs
    hidden_size: int = HIDDEN

    def alpaca_records(self) -> list[dict]:
        return read_jsonl(self.alpaca)

    def dpo_records(self) -> list[dict]:
        return read_jsonl(self.dpo)


def build_tiny(folder: Path) -> Tiny:
    """The tiny Llama + chat tokenizer in ``folder/model``, ``folder/alpaca.jsonl`` and ``folder/dpo.jsonl``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model"
    vocab_size = len(vocabulary(CHAT_SPECIALS, TEMPLATE_WORDS))
    make_llama(
        hidden_size=HIDDEN, vocab_size=vocab_size, max_position_embeddings=1024, tie_word_embeddings=False
    ).save_pretrained(model)
    make_tokenizer(CHAT_SPECIALS, TEMPLATE_WORDS).save_pretrained(model)
    alpaca = alpaca_records(96, 0, instruction=range(2, 13), output=range(3, 61), inputs=range(11))
    return Tiny(
        model=model,
        alpaca=write_jsonl(folder / "alpaca.jsonl", alpaca),
        dpo=write_jsonl(folder / "dpo.jsonl", dpo_records(48)),
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


if __name__ == "__main__":
    built = build_tiny(Path(sys.argv[1] if len(sys.argv) > 1 else "neft-tiny"))
    for name in ("model", "alpaca", "dpo"):
        print(f"{name}: {getattr(built, name)}")
