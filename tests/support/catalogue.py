"""transformers' catalogue of text models, built tiny, and where NEFTune's noise lands in each.

``catalogue_entries()`` lists every causal-LM, image-text-to-text (used with text only) and seq2seq class of
the installed transformers, plus variants whose config turns on what the defaults hide (an embedding
multiplier, a scaled embedding, OPT-350m's projection). ``build_tiny(entry)`` builds one from its own config
class, shrunk generically; ``first_block_inputs`` reads what the first block of the text stack receives, found
at run time and independently of neft_plugins; ``measure(entry)`` compares a noised training forward with a
clean one. ``PYTHONPATH=tests python -m support.catalogue`` prints the table for the installed version.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

ALPHA = 5.0
LENGTHS = (7, 19, 30)  # real tokens per sequence, right-padded to the longest
DECODER_LENGTH = 5
RATIO_RANGE = (0.85, 1.15)  # measured noise norm / (alpha / sqrt(3)), per sequence
TELEMETRY_REL = 0.03

HIDDEN, LAYERS, HEADS, HEAD_DIM, FFN, VOCAB, POSITIONS, EXPERTS = 64, 2, 4, 16, 128, 256, 128, 4
# Config attribute names and what to set them to, applied to every config nested in the model's: whole
# names first, then parts of names, in order. "<=" sizes only shrink (a default below stays).
EXACT: dict[str, int] = {
    **dict.fromkeys(("hidden_size", "d_model", "n_embd", "n_embed", "dim", "embed_dim", "model_dim"), HIDDEN),
    **dict.fromkeys(
        ("d_embed", "emb_dim", "embedding_dim", "word_embed_proj_dim", "codebook_dim", "adapter_in_dim"),
        HIDDEN,
    ),
    **dict.fromkeys(("top_k", "moe_k"), 2),  # experts per token
    **dict.fromkeys(("n_group", "topk_group", "n_groups"), 1),  # expert groups; SSM groups
    "rotary_dim": HEAD_DIM // 2,
    **dict.fromkeys(("n_head", "n_heads", "num_heads", "multi_query_group_num"), HEADS),
    **dict.fromkeys(("d_kv", "kv_channels"), HEAD_DIM),
    **dict.fromkeys(("ffn_dim", "d_ff", "n_inner", "kv_lora_rank", "q_lora_rank"), FFN),
    **dict.fromkeys(("depth", "n_layer", "n_layers"), LAYERS),
    # SSM heads * SSM head dim must equal expand * hidden_size.
    **dict.fromkeys(("expand", "mamba_expand"), 1),
    "mamba_d_ssm": HIDDEN,
}
PARTS: tuple[tuple[str, int, bool], ...] = (  # (part of a name, size, only shrink)
    ("experts_per", 2, True),
    ("moe_topk", 2, True),
    ("experts", EXPERTS, True),
    ("expert_num", EXPERTS, True),
    ("rope_head_dim", HEAD_DIM // 2, False),
    ("head_dim", HEAD_DIM, False),
    ("headdim", HEAD_DIM, False),
    ("d_head", HEAD_DIM, False),
    ("heads", HEADS, False),
    ("intermediate_size", FFN, False),
    ("ffn_dim", FFN, False),
    ("ffn_hidden_size", FFN, False),
    ("hidden_size", HIDDEN, False),
    ("layers", LAYERS, True),
    ("max_position", POSITIONS, True),
    ("position_embeddings", POSITIONS, True),
    ("n_positions", POSITIONS, True),
    ("n_ctx", POSITIONS, True),
    ("max_seq_len", POSITIONS, True),
    ("max_sequence_length", POSITIONS, True),
    ("sliding_window", POSITIONS, True),
    ("attention_window", 16, True),  # Longformer's: the input is padded to a multiple of it
)
NOISY = ("dropout", "layerdrop", "pdrop", "drop_path", "jitter")  # any attribute containing one -> 0
TOKEN_ID_SUFFIXES = ("_token_id", "_token_ids", "_token_index", "_id")
# Sub-configs of media towers, and module names inside them: not the text stack.
MEDIA = ("vision", "visual", "image", "audio", "speech", "video", "vq", "perceiver", "vit", "patch")

# Config values real checkpoints use where the default hides behaviour between embedding and first block.
VARIANTS: dict[str, Any] = {
    "embedding_multiplier": 12.0,  # Granite, GraniteMoE*, Falcon-H1, HyperCLOVA X
    "scale_emb": 12.0,  # MiniCPM3
    "scale_embedding": True,  # Marian, Pegasus, BART family, mBART, PLBart, ... (sqrt(d_model))
    "rescale_embeddings": True,  # BigBird
    "mup_enabled": True,  # AFMoE
}
# Per-model fixes, by the model_type of the (nested) config: only where the generic shrink cannot be right.
FIXES: dict[str, dict[str, Any]] = {
    # Layer indices, not sizes: back to their defaults (each layer its own cache, the last vision layer).
    "mistral_large4_text": {"kv_source_layers": None},
    "molmo2_adapter": {"vision_feature_layer": [-1]},
    # Kolibri 1.1: its indexers and shared caches are layer indices (derived again from the tiny layer types);
    # an indexer scores with the query heads of key head 0, of which the tiny shrink leaves one.
    "kolibri1_1": {"index_layers": None, "kv_source_layers": None, "index_num_heads": 1},
    "xmod": {"default_language": "en_XX"},  # adapters are per language: one must be chosen
    # Recurrent stacks whose defaults have no attention layer within the tiny depth (a cache needs one);
    # Zamba ties its shared attention across hybrid layers: it needs two.
    "bamba": {"attn_layer_indices": [1]},
    "granitemoehybrid": {"layer_types": ["mamba", "attention"]},
    "recurrent_gemma": {"block_types": ["recurrent", "attention"]},
    "zamba": {"layers_block_type": ["hybrid", "mamba", "hybrid"]},
    "zamba2": {"layers_block_type": ["hybrid", "mamba", "hybrid"], "hybrid_layer_ids": [0, 2]},
    # Left for the checkpoint to fill, and not a size.
    "lfm2_moe": {"layer_types": ["conv", "full_attention"]},
    # Qwen4-Exp's QSA indexer: validated whole at construction, before sizes left None could be filled.
    "qwen4_exp_text": {
        "indexer_budget": 8,
        "indexer_compress_ratio": 4,
        "indexer_n_heads": HEADS,
        "indexer_kv_heads": 1,
        "indexer_head_dim": HEAD_DIM,
    },
    "chameleon": {"vocabulary_map": {"<image>": VOCAB - 16}},
    "emu3": {"vocabulary_map": {"<image>": VOCAB - 16}},
    "qwen2_5_omni_thinker": {"vision_start_token_id": VOCAB - 16},
    "qwen3_omni_moe_thinker": {"vision_start_token_id": VOCAB - 16},
    "gpt_neo": {"attention_types": [[["global", "local"], 1]]},  # (pattern, repeats): one per layer
    "transfo-xl": {"cutoffs": [64, 128]},  # adaptive softmax clusters, within the vocabulary
    # Of 2 layers, one sharing an earlier one's cache would read a cache no layer of its type makes.
    "gemma3n_text": {"num_kv_shared_layers": 0},
    # Serialized as (attention, mlp) pairs, every count doubled; input + recurrent + output = all layers.
    "dory": {
        **dict.fromkeys(("n_input_layers", "n_recurrent_layers", "n_output_layers"), 2),
        "num_hidden_layers": 6,
        "layer_types": ["sliding_attention", "mlp", "sliding_attention", "mlp", "full_attention", "mlp"],
    },
    # Axial position shape must multiply to the sequence length it is trained on; a causal LM must decode.
    "reformer": {
        "is_decoder": True,
        "axial_pos_shape": [5, 6],
        "axial_pos_embds_dim": [32, 32],
        "max_position_embeddings": 30,
        **dict.fromkeys(("lsh_attn_chunk_length", "local_attn_chunk_length"), 10),
    },
}


@dataclass(frozen=True)
class Entry:
    id: str
    model_class: type | None
    config: Any = field(default=None, repr=False)  # the tiny config, built
    reason: str | None = None  # why it cannot be built


# --- the catalogue -----------------------------------------------------------------------------------------


def _mapping_names() -> list[tuple[str, str]]:
    from transformers.models.auto import modeling_auto

    names = [
        "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
        "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
        "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    ]
    pairs: list[tuple[str, str]] = []
    for name in names:
        for model_type, class_name in getattr(modeling_auto, name, {}).items():
            for one in [class_name] if isinstance(class_name, str) else class_name:
                pairs.append((model_type, one))
    return pairs


def catalogue_entries() -> list[Entry]:
    """One entry per model class (the model type whose config class is the class's own, else the first), then
    the config variants."""
    import transformers

    by_class: dict[str, list[str]] = {}
    for model_type, class_name in _mapping_names():
        by_class.setdefault(class_name, []).append(model_type)
    entries: list[Entry] = []
    for class_name, model_types in by_class.items():
        model_class = getattr(transformers, class_name, None)
        own = getattr(model_class, "config_class", None)
        model_type = next((t for t in model_types if getattr(own, "model_type", None) == t), model_types[0])
        entry_id = f"{model_type}:{class_name}"
        if model_class is None:
            entries.append(Entry(entry_id, None, reason=f"transformers has no class {class_name}"))
            continue
        try:
            config = tiny_config(_own_config_class(model_class, model_type))
        except Exception as error:
            entries.append(Entry(entry_id, model_class, reason=f"config: {_describe(error)}"))
            continue
        entries.append(Entry(entry_id, model_class, config))
        entries += [
            Entry(f"{entry_id}+{label}", model_class, variant) for label, variant in _variants(config)
        ]
    return entries


def _variants(config: Any) -> Iterator[tuple[str, Any]]:
    """Copies of ``config`` with one hidden behaviour turned on, where the config (or its text config) has it."""
    text = text_config(config)
    for in_text, owner in [(False, config)] + ([(True, text)] if text is not config else []):
        for key, value in VARIANTS.items():
            if key in vars(owner) and vars(owner)[key] != value:
                yield f"{key}={value}", _with(config, in_text, {key: value})
    if getattr(text, "model_type", None) == "opt":
        yield "word_embed_proj_dim=32", _with(config, False, {"word_embed_proj_dim": 32})


def _with(config: Any, in_text: bool, values: dict[str, Any]) -> Any:
    variant = config.__class__.from_dict(config.to_dict())
    owner = text_config(variant) if in_text else variant
    for key, value in values.items():
        setattr(owner, key, value)
    return variant


def text_config(config: Any) -> Any:
    text = None
    with contextlib.suppress(ValueError):  # several text configs (MusicGen's encoder and decoder)
        text = config.get_text_config() if hasattr(config, "get_text_config") else None
    return text if text is not None else config


# --- building tiny -----------------------------------------------------------------------------------------


def _own_config_class(model_class: type, model_type: str) -> type:
    """The class's own config class (MusicGen's and Emu3's causal LMs take their decoder's config), else the
    model type's."""
    from transformers import CONFIG_MAPPING

    own = getattr(model_class, "config_class", None)
    return own if getattr(own, "model_type", "") in CONFIG_MAPPING else CONFIG_MAPPING[model_type]


def tiny_config(config_class: type) -> Any:
    """``config_class()``, shrunk: every nested config through the same walk."""
    default = config_class()
    config = config_class(**_shrink(default.to_dict(), {}, default))
    text = text_config(config)
    for nested in _configs(config):
        for key, value in list(vars(nested).items()):
            named = _named_size(key)
            # Left for the checkpoint to fill (Ministral's head_dim, DeepSeek-V2's experts); not layer indices.
            if value is None and named is not None and "layer" not in key:
                setattr(nested, key, named[0])
        rope = getattr(nested, "rope_parameters", None) or getattr(nested, "rope_scaling", None)
        if rope is None and nested is text and text is not config and hasattr(nested, "rope_scaling"):
            rope = nested.rope_scaling = {"rope_type": "default", "type": "default"}  # 4.x: read unguarded
        if not isinstance(rope, dict):
            continue
        if isinstance(rope.get("mrope_section"), list):
            # Set by __init__ when not given: fitted here, in place.
            rope["mrope_section"] = _mrope_section(rope["mrope_section"], vars(nested))
        elif nested is text and text is not config and hasattr(config, "vision_config"):
            # Vision-language models with multimodal RoPE default its sections in the modeling code.
            rope["mrope_section"] = _mrope_section([2, 3, 3], vars(nested))
    return config


def _configs(config: Any) -> Iterator[Any]:
    """``config`` and every config nested in it."""
    yield config
    for value in vars(config).values():
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):
            yield from _configs(value)


def _shrink(values: dict[str, Any], token_ids: dict[int, int], default: Any = None) -> dict[str, Any]:
    """``values``, shrunk. Sizes that the class of ``default`` (the config ``values`` come from) derives are left
    out, for it to derive them again from the shrunk ones."""
    taken = _taken(type(default)) if default is not None else None
    old_layers = {v for k, v in values.items() if _is_layer_count(k, v) and v > LAYERS}
    kept = {count: _kept_layers(count, values.values()) for count in old_layers}
    shrunk: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and "model_type" in value:
            value = _shrink(value, token_ids)  # derives nothing: a parent may fill in its own defaults
        elif isinstance(value, dict) and value and all(str(k).isdigit() for k in value):
            value = _first_and_last_layers(value, token_ids)
        elif isinstance(value, list) and len(value) in kept:
            value = [
                _size(key, v) if _is_size(v) else v for v in (value[index] for index in kept[len(value)])
            ]
        elif _is_layer_count(key, value) and value in kept:
            value = len(kept[value])
        elif isinstance(value, bool) and "kernel" in key:
            value = False  # CUDA-only kernels (Jamba's, Zamba's on 4.x)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            pass
        elif any(noisy in key for noisy in NOISY):
            value = type(value)(0)
        elif key.endswith(TOKEN_ID_SUFFIXES) and isinstance(value, int):
            value = _token_id(value, token_ids)
        elif "vocab" in key and isinstance(value, int):
            value = min(value, VOCAB)
        elif isinstance(value, int) and value > 0:
            if taken is not None and key not in taken:
                continue
            value = _size(key, value)
        shrunk[key] = value
    for key in ("eos_token_id", "bos_token_id"):  # lists of ids (Llama 3 style)
        if isinstance(shrunk.get(key), list):
            shrunk[key] = [_token_id(one, token_ids) for one in shrunk[key]]
    # Sizes the config derives from others, where the default has them so.
    if (
        "qk_rope_head_dim" in values and values.get("head_dim") == values["qk_rope_head_dim"]
    ):  # DeepSeek's MLA
        shrunk["head_dim"] = shrunk["qk_rope_head_dim"]
    # Mistral 4's rotary half of the head: equal parts stay equal.
    if values.get("qk_nope_head_dim") == values.get("qk_rope_head_dim") is not None:
        shrunk["qk_nope_head_dim"] = shrunk["qk_rope_head_dim"]
    parts = values.get("qk_nope_head_dim", 0) + values.get("qk_rope_head_dim", 0)
    if "qk_head_dim" in values and values["qk_head_dim"] == parts:
        shrunk["qk_head_dim"] = shrunk["qk_nope_head_dim"] + shrunk["qk_rope_head_dim"]
    for (
        key,
        period,
    ) in values.items():  # every `period`-th layer from `offset` (Jamba's attention and experts)
        offset = key.replace("_period", "_offset")
        if key.endswith("_period") and isinstance(period, int) and isinstance(values.get(offset), int):
            shrunk[key] = min(period, LAYERS)
            shrunk[offset] = values[offset] % shrunk[key]
    shrunk.update(FIXES.get(values.get("model_type", ""), {}))
    for key, value in shrunk.items():
        if isinstance(value, dict) and isinstance(value.get("mrope_section"), list):
            shrunk[key] = {**value, "mrope_section": _mrope_section(value["mrope_section"], shrunk)}
    return shrunk


def _taken(config_class: type) -> set[str]:
    """What the config class takes with a default: other values are derived (defaults of None, attributes set
    in ``__init__``)."""
    parameters = inspect.signature(config_class.__init__).parameters
    return {
        name for name, parameter in parameters.items() if parameter.default not in (None, parameter.empty)
    }


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_layer_count(key: str, value: Any) -> bool:
    return _is_size(value) and (EXACT.get(key) == LAYERS or "layers" in key)


def _kept_layers(count: int, values: Iterable[Any]) -> list[int]:
    """The layers a stack of ``count`` keeps: the first, the last and, where a per-layer list names attention
    layers but none of those, the first attention layer (a hybrid stack's cache needs one)."""
    kept = {*range(LAYERS - 1), count - 1}
    for per_layer in (value for value in values if isinstance(value, list) and len(value) == count):
        attention = [index for index, kind in enumerate(per_layer) if _is_attention(kind)]
        if attention and not kept & set(attention):
            kept.add(attention[0])
    return sorted(kept)


def _is_attention(kind: Any) -> bool:
    kind = str(kind)
    return ("attention" in kind or kind == "hybrid") and "linear" not in kind


def _size(key: str, value: int) -> int:
    named = _named_size(key)
    if named is None:
        return value
    size, only_shrink = named
    return min(value, size) if only_shrink else size


def _named_size(key: str) -> tuple[int, bool] | None:
    """The size ``EXACT`` or ``PARTS`` name for ``key``, and whether it only shrinks."""
    if key in EXACT:
        return EXACT[key], False
    return next(((size, only) for part, size, only in PARTS if part in key), None)


def _first_and_last_layers(per_layer: dict[Any, Any], token_ids: dict[int, int]) -> dict[Any, Any]:
    """Settings keyed by layer index (an int or a string of digits): those of the first layers and of the last,
    as for per-layer lists."""
    last = max(per_layer, key=int)
    kept = {index: per_layer[index] for index in per_layer if int(index) < LAYERS - 1}
    kept[type(last)(LAYERS - 1)] = per_layer[last]
    return {index: _shrink(v, token_ids) if isinstance(v, dict) else v for index, v in kept.items()}


def _token_id(value: int, token_ids: dict[int, int]) -> int:
    """Ids beyond the tiny vocabulary move to its top, the same old id to the same new one."""
    if 0 <= value < VOCAB - 16:
        return value
    return token_ids.setdefault(value, VOCAB - 1 - len(token_ids))


def _mrope_section(sections: list[int], config: dict[str, Any]) -> list[int]:
    """Multimodal RoPE sections must add up to half the rotary dim: kept in proportion."""
    rotary = config.get("qk_rope_head_dim") or config.get("head_dim") or HEAD_DIM
    half = int(rotary * config.get("partial_rotary_factor", 1.0)) // 2
    fitted = [max(1, round(section * half / sum(sections))) for section in sections]
    fitted[0] += half - sum(fitted)
    return fitted


def build_tiny(entry: Entry) -> nn.Module:
    if entry.config is None or entry.model_class is None:
        raise ValueError(entry.reason or f"{entry.id} has no config")
    torch.manual_seed(0)
    config = entry.config.__class__.from_dict(entry.config.to_dict())
    model = entry.model_class(config)
    return model.float()


# --- inputs and what the first block receives ---------------------------------------------------------------


def _config_token_ids(config: Any) -> set[int]:
    """Every id a config (or a nested one) names: special tokens and media placeholders."""
    ids: set[int] = set()
    for key, value in vars(config).items():
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):
            ids |= _config_token_ids(value)
        elif key.endswith(TOKEN_ID_SUFFIXES) or "token" in key:
            for one in value if isinstance(value, list | tuple) else [value]:
                if isinstance(one, int) and not isinstance(one, bool):
                    ids.add(one)
    return ids


def _accepts(model: nn.Module, name: str) -> bool:
    parameters = inspect.signature(model.forward).parameters
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def text_batch(model: nn.Module) -> dict[str, torch.Tensor]:
    config = model.config
    rows = getattr(model.get_input_embeddings(), "num_embeddings", VOCAB)
    vocab = min(rows, getattr(text_config(config), "vocab_size", rows) or rows)  # Mllama embeds 8 more
    avoid = _config_token_ids(config) | {0, 1, 2, 3}
    allowed = torch.tensor([i for i in range(vocab) if i not in avoid])
    generator = torch.Generator().manual_seed(1)
    length = max(LENGTHS)
    pad = getattr(text_config(config), "pad_token_id", None)
    pad = pad if isinstance(pad, int) and 0 <= pad < vocab else 0
    input_ids = torch.full((len(LENGTHS), length), pad)
    attention_mask = torch.zeros((len(LENGTHS), length), dtype=torch.long)
    for row, real in enumerate(LENGTHS):
        input_ids[row, :real] = allowed[torch.randint(len(allowed), (real,), generator=generator)]
        attention_mask[row, :real] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if getattr(config, "is_encoder_decoder", False):
        decoder = allowed[torch.randint(len(allowed), (len(LENGTHS), DECODER_LENGTH), generator=generator)]
        batch["decoder_input_ids"] = decoder
        if _accepts(model, "labels"):
            batch["labels"] = decoder.clone()
    elif _accepts(model, "labels"):
        batch["labels"] = input_ids.masked_fill(attention_mask == 0, -100)
    return {key: value for key, value in batch.items() if _accepts(model, key)}


def text_embeddings(model: nn.Module) -> list[nn.Module]:
    """The token embedding modules the text stack may run: ``get_input_embeddings()`` and, for an
    encoder-decoder, the encoder's own (T5 on transformers 5 runs it, not the shared one; mBART on 4.46 its
    ``embed_tokens``, a copy sharing the weight)."""
    candidates = [model.get_input_embeddings()]
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        encoder = model.get_encoder()
        candidates.append(getattr(encoder, "embed_tokens", None))
        with contextlib.suppress(NotImplementedError, AttributeError):
            candidates.append(encoder.get_input_embeddings())
    return [module for module in dict.fromkeys(candidates) if isinstance(module, nn.Module)]


def _blocks(model: nn.Module) -> Iterator[nn.Module]:
    """Every element with parameters (not GraniteSWA's per-layer-type rotary embeddings) of every ModuleList
    outside media towers."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and not any(word in name.lower() for word in MEDIA):
            yield from (block for block in module if next(block.parameters(), None) is not None)


def _hidden_key(args: tuple, kwargs: dict[str, Any]) -> int | str | None:
    if args and isinstance(args[0], torch.Tensor):
        return 0
    if isinstance(kwargs.get("hidden_states"), torch.Tensor):
        return "hidden_states"
    return next(
        (key for key, value in [*enumerate(args), *kwargs.items()] if isinstance(value, torch.Tensor)), None
    )


@dataclass(frozen=True)
class BlockRun:
    """One run of a block after the token embeddings: every tensor input, by position or keyword, as received."""

    block: str
    inputs: dict[int | str, torch.Tensor]
    hidden: int | str | None  # the hidden-states input's key

    @property
    def hidden_states(self) -> torch.Tensor:
        return self.inputs[self.hidden]


def block_runs(model: nn.Module, batch: dict[str, torch.Tensor], seed: int = 0) -> list[BlockRun]:
    """Every run of every block (ModuleList element outside media towers) after the token embedding module, in
    one training-mode forward, with the tensor inputs each received."""
    runs: list[BlockRun] = []
    embedded = False
    names = {module: name for name, module in model.named_modules()}

    def after_embedding(module: nn.Module, args: tuple, output: Any) -> None:
        nonlocal embedded
        embedded = True

    def before_block(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        key = _hidden_key(args, kwargs)
        if embedded and (runs or key is not None):
            tensors = {
                key: value.detach().clone()
                for key, value in [*enumerate(args), *kwargs.items()]
                if isinstance(value, torch.Tensor)
            }
            runs.append(BlockRun(names[module], tensors, key))

    embeddings = text_embeddings(model)
    hooks = [module.register_forward_hook(after_embedding) for module in embeddings]
    hooks += [block.register_forward_pre_hook(before_block, with_kwargs=True) for block in _blocks(model)]
    try:
        torch.manual_seed(seed)
        with torch.enable_grad():
            model(**{key: value.clone() for key, value in batch.items()})  # CPM-Ant edits its inputs
    finally:
        for hook in hooks:
            hook.remove()
    if not embedded:
        names_run = ", ".join(type(module).__name__ for module in embeddings)
        raise RuntimeError(f"the token embeddings ({names_run}) did not run")
    if not runs:
        raise RuntimeError("no block ran after the token embeddings")
    return runs


def first_block_inputs(model: nn.Module, batch: dict[str, torch.Tensor], seed: int = 0) -> torch.Tensor:
    """The hidden states the first block of the text stack receives in one training-mode forward, as it
    receives them: the input of the first ModuleList element that runs after the token embedding module."""
    return block_runs(model, batch, seed)[0].hidden_states


# --- measuring ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """How a block input lines up with the batch: ``rows`` is it batch-major (``[B, L', d]``) or None where
    the layout cannot be told; ``extra`` positions beyond the batch's L (prepended or inserted tokens)."""

    name: str
    rows: torch.Tensor | None
    extra: int = 0

    @property
    def differs(self) -> bool:
        return self.name != "[B, L, d]"


def sequence_layout(hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> Layout:
    batch_size, length = batch["input_ids"].shape
    if hidden.dim() != 3:
        return Layout(f"{list(hidden.shape)}", None)
    if hidden.shape[:2] == (batch_size, length):
        return Layout("[B, L, d]", hidden)
    if hidden.shape[:2] == (length, batch_size):
        return Layout("[L, B, d]", hidden.transpose(0, 1))
    if hidden.shape[0] == batch_size and hidden.shape[1] > length:
        return Layout(f"[B, L+{hidden.shape[1] - length}, d]", hidden, hidden.shape[1] - length)
    return Layout(f"{list(hidden.shape)}", None)


def split_copies(value: torch.Tensor, like: torch.Tensor) -> list[torch.Tensor] | None:
    """``value`` cut into pieces shaped like ``like`` (``[X, Y, d]``): itself, its width in ``d``-wide chunks, or
    its slices along an extra axis; None when its shape cannot hold copies of ``like``."""
    if value.shape == like.shape:
        return [value]
    if value.dim() == 3 and value.shape[:2] == like.shape[:2] and value.shape[-1] % like.shape[-1] == 0:
        return list(value.split(like.shape[-1], dim=-1))
    for axis in range(value.dim() - 1) if value.dim() == like.dim() + 1 else ():
        if value.shape[:axis] + value.shape[axis + 1 :] == like.shape:
            return list(value.unbind(axis))
    return None


def one_copy(
    hidden: torch.Tensor, batch: dict[str, torch.Tensor], width: int | None
) -> tuple[torch.Tensor, str]:
    """The embeddings the first block's hidden states hold, once: a 4-D input's slice along its extra axis, a
    3-D input's first ``width`` channels (the text config's hidden size) where it repeats them; and how the
    copies are laid out."""
    batch_size, length = batch["input_ids"].shape
    if hidden.dim() == 4:
        for axis in range(3):
            rest = hidden.shape[:axis] + hidden.shape[axis + 1 : 3]
            if rest in ((batch_size, length), (length, batch_size)):
                return hidden.select(axis, 0), f"{hidden.shape[axis]} streams along axis {axis}"
    if hidden.dim() == 3 and width and hidden.shape[-1] != width and hidden.shape[-1] % width == 0:
        pieces = split_copies(hidden, hidden[..., :width])
        if all(torch.equal(piece, pieces[0]) for piece in pieces):
            return pieces[0], f"{len(pieces)} copies along the width"
    return hidden, ""


@dataclass
class Result:
    id: str
    status: str  # "right", "wrong", "refused", "cannot build", "error"
    detail: str = ""
    layout: str = ""
    ratios: list[float] = field(default_factory=list)
    padding_exact: bool = True
    noise_norm: float = math.nan  # measured: mean per-sequence norm of what one copy of the embeddings got
    embed_norm: float = math.nan  # measured: mean per-sequence norm of one clean copy of the embeddings
    logs: dict[str, float] = field(default_factory=dict)
    carriers: list[str] = field(default_factory=list)  # block inputs that carry the embeddings, with copies
    seconds: float = 0.0


def refusal_errors() -> tuple[type[BaseException], ...]:
    import neft_plugins

    names = ("NEFTuneError", "NEFTuneAttachError", "NEFTuneInputError", "NEFTuneConfigError")
    return tuple(getattr(neft_plugins, name) for name in names if hasattr(neft_plugins, name))


def measure(entry: Entry, model: nn.Module) -> Result:
    """A clean and a noised training forward of ``model`` (built from ``entry``), compared at every block
    input that carries the embeddings. Raises what building inputs or the clean forward raises."""
    import neft_plugins

    model.train()
    batch = text_batch(model)
    clean = block_runs(model, batch)
    try:
        handle = neft_plugins.attach(model, neftune_alpha=ALPHA)
    except refusal_errors() as error:
        return Result(entry.id, "refused", str(error))
    try:
        noised = block_runs(model, batch)
        logs = handle.read_logs()
    except refusal_errors() as error:
        return Result(entry.id, "refused", str(error))
    finally:
        handle.detach()
    width = getattr(text_config(model.config), "hidden_size", None)
    return compare(entry.id, clean, noised, batch, logs, width if isinstance(width, int) else None)


def compare(
    entry_id: str,
    clean: list[BlockRun],
    noised: list[BlockRun],
    batch: dict[str, torch.Tensor],
    logs: dict,
    width: int | None = None,
) -> Result:
    """Every input of every block run that holds (copies of) the clean embeddings must hold them plus one noise,
    the same in every copy and every input; that noise's norm per sequence is alpha/sqrt(3), padding gets 0."""
    embeddings, copies = one_copy(clean[0].hidden_states, batch, width)
    result = Result(entry_id, "wrong", logs=logs)
    if len(noised) != len(clean):
        result.detail = f"{len(clean)} block runs clean, {len(noised)} noised"
        return result
    noise: torch.Tensor | None = None
    problems: list[str] = []
    for clean_run, noised_run in zip(clean, noised, strict=True):
        for key, value in clean_run.inputs.items():
            pieces = split_copies(value, embeddings)
            if pieces is None or not all(torch.equal(piece, embeddings) for piece in pieces):
                continue
            name = f"{clean_run.block}[{key!r}]" + (f" x{len(pieces)}" if len(pieces) > 1 else "")
            result.carriers.append(name)
            received = noised_run.inputs.get(key)
            if received is None or received.shape != value.shape:
                problems.append(f"{name} not received alike")
                continue
            diffs = split_copies(received - value, embeddings)
            noise = diffs[0] if noise is None else noise
            if not all(torch.equal(diff, noise) for diff in diffs):
                problems.append(f"{name} does not get the same noise as {result.carriers[0]}")
    result.layout = copies or sequence_layout(embeddings, batch).name
    if noise is None:
        result.detail = "no block input holds the clean embeddings"
        return result
    clean_layout, noise_layout = sequence_layout(embeddings, batch), sequence_layout(noise, batch)
    if clean_layout.rows is None or noise_layout.rows is None:
        result.detail = f"layout differs: the first block receives {clean_layout.name}"
        return result
    expected = ALPHA / math.sqrt(3)
    real = batch["attention_mask"].bool()
    diff = noise_layout.rows.double()
    noise_norms, embed_norms = [], []
    for row in range(len(LENGTHS)):
        if clean_layout.extra:
            # Where the inserted positions are is not known: count the noised positions instead.
            noised_positions = diff[row].ne(0).any(-1)
            result.padding_exact &= int(noised_positions.sum()) == int(real[row].sum())
            noise_norms.append(float(diff[row].norm()))
            embed_norms.append(float(clean_layout.rows[row][noised_positions].double().norm()))
        else:
            result.padding_exact &= bool(diff[row][~real[row]].eq(0).all())
            noise_norms.append(float(diff[row][real[row]].norm()))
            embed_norms.append(float(clean_layout.rows[row][real[row]].double().norm()))
    result.ratios = [norm / expected for norm in noise_norms]
    result.noise_norm = sum(noise_norms) / len(noise_norms)
    result.embed_norm = sum(embed_norms) / len(embed_norms)
    low, high = RATIO_RANGE
    problems += [] if result.padding_exact else ["padding noised"]
    if not all(low <= ratio <= high for ratio in result.ratios):
        problems.append("ratios " + ", ".join(f"{ratio:.3g}" for ratio in result.ratios))
    problems += telemetry_problems(result)
    result.status = "wrong" if problems else "right"
    result.detail = "; ".join(problems)
    return result


def telemetry_problems(result: Result) -> list[str]:
    problems = []
    for key, measured in (("neft/noise_norm", result.noise_norm), ("neft/embed_norm", result.embed_norm)):
        logged = result.logs.get(key)
        if logged is None:
            problems.append(f"{key} not logged")
        elif not math.isclose(logged, measured, rel_tol=TELEMETRY_REL):
            problems.append(f"{key} {logged:.4g} vs {measured:.4g} received")
    return problems


def evaluate(entry: Entry) -> Result:
    """Build and measure one entry, whatever happens: for the table."""
    try:
        model = build_tiny(entry)
        model.train()
        batch = text_batch(model)
        first_block_inputs(model, batch)
    except Exception as error:
        return Result(entry.id, "cannot build", _describe(error))
    try:
        return measure(entry, model)
    except Exception as error:
        return Result(entry.id, "error", _describe(error))


def _describe(error: BaseException) -> str:
    message = " ".join(line.strip() for line in str(error).splitlines())
    return f"{type(error).__name__}: {message}"[:300]


# --- the table ---------------------------------------------------------------------------------------------


def _progress(entries: list[Entry]) -> Iterable[Entry]:
    try:
        from tqdm import tqdm
    except ImportError:
        return entries
    return tqdm(entries, file=sys.stderr, leave=False)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models run ~50x faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sweep(entries: list[Entry]) -> list[Result]:
    with one_thread():
        return [_timed(entry) for entry in _progress(entries)]


def _timed(entry: Entry) -> Result:
    start = time.perf_counter()
    result = evaluate(entry)
    result.seconds = time.perf_counter() - start
    return result


def table(results: list[Result]) -> str:
    lines = []
    for result in results:
        detail = result.detail
        if result.status in ("right", "wrong") and result.ratios:
            carried = f"; carriers {', '.join(result.carriers)}" if len(result.carriers) > 1 else ""
            detail = f"ratios {'/'.join(f'{r:.2f}' for r in result.ratios)}{carried}; {detail}".rstrip("; ")
        layout = f" [{result.layout}]" if result.layout and result.layout != "[B, L, d]" else ""
        lines.append(f"{result.status:<13} {result.id}{layout}  {detail[:160]}")
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    lines.append(", ".join(f"{status}: {count}" for status, count in sorted(counts.items())))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    import logging

    import transformers

    logging.getLogger("neft_plugins").setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    entries = [entry for entry in catalogue_entries() if not argv or any(word in entry.id for word in argv)]
    start = time.perf_counter()
    results = sweep(entries)
    print(table(results))
    print(
        f"transformers {transformers.__version__}: {len(results)} entries in {time.perf_counter() - start:.0f}s"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
