"""A tiny local MLX-LM Llama (config.json, safetensors, a word-level tokenizer with a chat template) and
prompt/completion data: nothing from the hub, no torch. Used by the fixtures and ``benchmarks/mlx_ratios.py``."""

from __future__ import annotations

import json
from pathlib import Path

from support.tiny import make_tokenizer, prompt_completion_records, write_jsonl

TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }} {% endfor %}"


def tiny_model(vocab_size: int = 128, seed: int = 0):
    import mlx.core as mx
    from mlx_lm.models import llama

    mx.random.seed(seed)
    return llama.Model(llama.ModelArgs(**TINY_LLAMA, vocab_size=vocab_size))


def save_mlx_llama(folder: Path, vocab_size: int) -> None:
    """The tiny Llama as MLX-LM loads a hub repository: config.json and model.safetensors."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    model = tiny_model(vocab_size=vocab_size)
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (folder / "config.json").write_text(json.dumps({**TINY_LLAMA, "vocab_size": vocab_size}))


def save_model_dir(folder: Path) -> Path:
    """The tokenizer and the tiny Llama in ``folder``, as `mlx_lm.load` reads a local model."""
    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    save_mlx_llama(folder, len(tokenizer))
    return folder


def write_data(folder: Path) -> Path:
    """MLX-LM's data folder: train, valid and test jsonl of prompt/completion records, 3-30 words each."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, count, seed in (("train", 48, 0), ("valid", 8, 1), ("test", 8, 2)):
        write_jsonl(folder / f"{name}.jsonl", prompt_completion_records(count, seed=seed, lengths=(3, 30)))
    return folder
