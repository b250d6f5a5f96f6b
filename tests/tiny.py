"""Tiny local models, tokenizers and datasets for tests: nothing comes from the model hub."""

from __future__ import annotations

import random

WORDS = (
    "the a an of to in and or is are was be it this that with for on as at by from "
    "what how why who explain write list give name describe summarize translate answer question "
    "cat dog bird fish tree river mountain city music color number water fire light sound "
    "red green blue small large quick slow happy sad old new good bad first last one two three"
).split()
SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate((*SPECIALS, *WORDS))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )


def make_llama(hidden_size: int = 64, layers: int = 2, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(SPECIALS) + len(WORDS),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    return LlamaForCausalLM(config)


def sentence(rng: random.Random, length: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(length))


def prompt_completion_records(count: int, seed: int = 0, lengths: tuple[int, ...] = (3, 40)) -> list[dict]:
    """Records whose prompts and completions have very different lengths."""
    rng = random.Random(seed)
    return [
        {"prompt": sentence(rng, rng.choice(lengths)), "completion": sentence(rng, rng.choice(lengths))}
        for _ in range(count)
    ]


def text_records(count: int, seed: int = 0, lengths: tuple[int, ...] = (3, 40)) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": sentence(rng, rng.choice(lengths))} for _ in range(count)]
