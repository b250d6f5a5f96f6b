"""A tiny random Llama, its tokenizer and small jsonl datasets, built locally: nothing from the model hub.

Run as a script to build them into a folder, e.g. to try the example configs by hand:
    python tests/axolotl/tiny_assets.py /tmp/neft-tiny
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

# Alpaca's and ChatML's template words, then a small word list for the data.
TEMPLATE_WORDS = (
    "Below is an instruction that describes a task paired with input provides further context Write "
    "response appropriately completes the request Instruction Input Response system user assistant "
    "### : , . \n"
).split()
WORDS = (
    "the a an of to in and or is are was be it this that with for on as at by from what how why who "
    "explain write list give name describe summarize translate answer question cat dog bird fish tree "
    "river mountain city music color number water fire light sound red green blue small large quick slow "
    "happy sad old new good bad first last one two three"
).split()
SPECIALS = ("<pad>", "</s>", "<s>", "<unk>", "<|im_start|>", "<|im_end|>")
HIDDEN_SIZE = 64


def vocabulary() -> list[str]:
    return list(dict.fromkeys((*SPECIALS, *TEMPLATE_WORDS, *WORDS)))


def save_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        bos_token="<s>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.save_pretrained(folder)


def save_model(folder: Path, seed: int = 0) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocabulary()),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=2 * HIDDEN_SIZE,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder)


def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def alpaca_records(count: int, seed: int = 0) -> list[dict]:
    """Instruction records of very different lengths (about 30 to 110 tokens with Alpaca's template)."""
    rng = random.Random(seed)
    return [
        {
            "instruction": _sentence(rng, 2, 12),
            "input": _sentence(rng, 0, 10) if rng.random() < 0.5 else "",
            "output": _sentence(rng, 3, 60),
        }
        for _ in range(count)
    ]


def dpo_records(count: int, seed: int = 1) -> list[dict]:
    """Preference pairs in the shape of Intel/orca_dpo_pairs (Axolotl type ``chatml.intel``)."""
    rng = random.Random(seed)
    return [
        {
            "system": _sentence(rng, 0, 6),
            "question": _sentence(rng, 3, 15),
            "chosen": _sentence(rng, 3, 30),
            "rejected": _sentence(rng, 3, 30),
        }
        for _ in range(count)
    ]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def build(folder: Path) -> dict[str, Path]:
    """Model + tokenizer in ``folder/model``, ``folder/alpaca.jsonl`` and ``folder/dpo.jsonl``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model"
    save_model(model)
    save_tokenizer(model)
    return {
        "model": model,
        "alpaca": write_jsonl(folder / "alpaca.jsonl", alpaca_records(96)),
        "dpo": write_jsonl(folder / "dpo.jsonl", dpo_records(48)),
    }


if __name__ == "__main__":
    for name, path in build(Path(sys.argv[1] if len(sys.argv) > 1 else "neft-tiny")).items():
        print(f"{name}: {path}")


ALPACA_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}"
)


def longest_alpaca_tokens(model_dir: Path, records: list[dict]) -> int:
    """An upper bound on one record's length in tokens with Alpaca's template (plus BOS and EOS)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [ALPACA_TEMPLATE.format(**record) for record in records]
    return 2 + max(len(tokenizer(text, add_special_tokens=False).input_ids) for text in texts)
