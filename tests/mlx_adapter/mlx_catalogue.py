"""MLX-LM's catalogue of model families, built tiny, and where NEFTune's noise lands in each (no torch).

``families()`` lists every module of ``mlx_lm.models`` with a ``ModelArgs`` and a ``Model``. ``tiny_args(name)``
fills the family's ``ModelArgs`` with small sizes: generic values by field name (and type, for required fields
the tables do not name), lists sized to the layers, nested ``text_config`` dicts filled the same way, and a small
table of per-family fixes. ``check(name)`` builds the model and reads, with a spy of its own on the class of
``model.layers[0]`` (not neft_plugins), what the first block receives for a right-padded batch of two rows:
clean, and noised through ``MLXNEFTune.loss``. The difference must be NEFTune's noise, per row of norm
alpha/sqrt(3) on its real tokens and exactly 0 on padding; every pass that must not be noised (outside the loss,
in eval mode, after detaching) must give the clean input bit for bit; the probe must leave the weights alone and
detaching must restore the block's class. Each family ends "right", "refused: <NEFTuneAttachError>",
"not built: <why>", or "wrong: <what>" (a test failure).

``PYTHONPATH=tests python -m mlx_adapter.mlx_catalogue [family ...] [--write docs/mlx_models.md]`` prints the
table (and writes the generated docs page).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import inspect
import json
import math
import os
import pkgutil
import subprocess
import sys
import time
import traceback
import types
import typing
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

ALPHA = 5.0
LENGTHS = (5, 8)  # real tokens per row, right-padded to WIDTH
WIDTH = 9
SIGMAS = 6.0  # the noise norm per row: alpha/sqrt(3) within this many standard deviations
NORM_REL_STD = 0.447  # of the norm of L*d Uniform(-1, 1) draws scaled by 1/sqrt(L*d), times sqrt(L*d)

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, FFN, MOE_FFN, VOCAB, POSITIONS, EXPERTS = (
    64,
    2,
    4,
    2,
    16,
    128,
    32,
    256,
    128,
    4,
)

# Field names and their tiny values, whatever the default.
EXACT: dict[str, Any] = {
    "vocab_size": VOCAB,
    **dict.fromkeys(
        (
            "hidden_size",
            "d_model",
            "n_embd",
            "dim",
            "model_dim",
            "block_dim",
            "embed_dim",
            "hidden_dim_model",
        ),
        HIDDEN,
    ),
    **dict.fromkeys(
        (
            "num_attention_heads",
            "n_head",
            "n_heads",
            "num_heads",
            "swa_num_attention_heads",
            "num_query_heads",
        ),
        HEADS,
    ),
    **dict.fromkeys(
        (
            "num_key_value_heads",
            "n_kv_heads",
            "num_kv_heads",
            "swa_num_key_value_heads",
            "num_attention_groups",
            "multi_query_group_num",
        ),
        KV_HEADS,
    ),
    **dict.fromkeys(
        (
            "head_dim",
            "swa_head_dim",
            "swa_v_head_dim",
            "v_head_dim",
            "qk_nope_head_dim",
            "kv_channels",
            "index_head_dim",
            "mamba_head_dim",
            "linear_key_head_dim",
            "linear_value_head_dim",
            "attention_head_dim",
        ),
        HEAD_DIM,
    ),
    **dict.fromkeys(("qk_rope_head_dim", "rotary_dim", "rope_head_dim"), HEAD_DIM // 2),
    **dict.fromkeys(
        ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "num_transformer_layers"), LAYERS
    ),
    **dict.fromkeys(
        (
            "intermediate_size",
            "ffn_hidden_size",
            "n_inner",
            "hidden_dim",
            "ff_intermediate_size",
            "intermediate_size_mlp",
            "ffn_dim",
            "d_ff",
            "dense_intermediate_size",
        ),
        FFN,
    ),
    **dict.fromkeys(
        (
            "moe_intermediate_size",
            "expert_ffn_hidden_size",
            "shared_expert_intermediate_size",
            "shared_intermediate_size",
            "moe_shared_expert_intermediate_size",
            "expert_intermediate_size",
        ),
        MOE_FFN,
    ),
    **dict.fromkeys(
        (
            "num_experts",
            "n_routed_experts",
            "num_local_experts",
            "moe_num_experts",
            "n_experts",
            "num_routed_experts",
        ),
        EXPERTS,
    ),
    **dict.fromkeys(
        ("num_experts_per_tok", "moe_topk", "moe_k", "top_k", "n_activated_experts", "num_experts_per_token"),
        2,
    ),
    **dict.fromkeys(
        ("n_shared_experts", "num_shared_experts", "num_shared_expert", "moe_num_shared_experts"), 1
    ),
    **dict.fromkeys(("n_group", "topk_group", "n_groups", "num_expert_group"), 1),
    **dict.fromkeys(("kv_lora_rank", "q_lora_rank"), 32),
    **dict.fromkeys(
        (
            "rms_norm_eps",
            "norm_eps",
            "layer_norm_eps",
            "layer_norm_epsilon",
            "layernorm_epsilon",
            "norm_epsilon",
        ),
        1e-5,
    ),
    **dict.fromkeys(("rope_theta", "swa_rope_theta", "rotary_emb_base"), 10000.0),
    **dict.fromkeys(("sliding_window", "sliding_window_size", "attention_window_size", "window_size"), 8),
    "sliding_window_pattern": 2,  # of 2 layers: one sliding, one global
    **dict.fromkeys(("num_kv_shared_layers", "num_kv_reuse_layers"), 0),  # no layer reads another's cache
    "full_attention_interval": 2,  # of 2 layers: one linear, one full attention
    "moe_top_k": 2,
    "first_k_dense_replace": 1,  # layer 0 dense, layer 1 MoE
    "num_dense_layers": 1,
    "routed_scaling_factor": 1.0,
    "norm_topk_prob": True,
    "partial_rotary_factor": 0.5,
    "rotary_pct": 0.5,
    # Multipliers between the embeddings and the first block: not 1, so a missed one shows.
    "embedding_multiplier": 12.0,
    "scale_emb": 12.0,
    "attention_multiplier": 0.25,
    "residual_multiplier": 0.5,
    "logits_scaling": 1.0,
    "scale_depth": 1.4,
    "dim_model_base": 32,
    "conv_kernel": 4,
    "conv_L_cache": 3,
    "conv_window": 4,
    "conv1d_width": 4,
    "mamba_d_conv": 4,
    "linear_conv_kernel_dim": 4,
    **dict.fromkeys(("state_size", "ssm_state_size", "mamba_d_state", "d_state"), 16),
    "mamba_expand": 1,
    "expand": 1,
    "mamba_num_heads": 4,  # * mamba_head_dim = expand * hidden_size
    "time_step_rank": 8,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "index_n_heads": 2,
    "index_topk": 4,
    "block_size": 4,
    "max_position_embeddings": POSITIONS,
    "n_positions": POSITIONS,
    "n_ctx": POSITIONS,
    "model_max_length": POSITIONS,
    "group_norm_size": 1,
    "layer_group_size": 1,
    "decoder_sparse_step": 1,
    "moe_layer_freq": 1,
    "zero_expert_num": 0,
    "gegelu_limit": 20.0,
    "logits_soft_cap": 30.0,
    "tie_word_embeddings": False,
}
# Per-layer lists, for list fields (required or defaulting to None): 2 layers of different kinds where the
# family has kinds.
LISTS: dict[str, list[Any]] = {
    "layer_types": ["sliding_attention", "full_attention"],
    "moe_layer_freq": [0, 1],
    "hybrid_layer_pattern": [1, 0],
    "no_rope_layers": [1, 0],
    "block_types": ["recurrent", "attention"],
    "num_query_heads": [HEADS, HEADS],
    "num_kv_heads": [KV_HEADS, KV_HEADS],
    "ffn_multipliers": [2.0, 2.0],
    "time_step_limit": [0.0, float("inf")],
    "is_moe_layer": [False, True],
    "mlp_layer_types": ["dense", "sparse"],
    "activation_sparsity_pattern": [0.0, 0.0],
}
ROPE = {"rope_type": "default", "rope_theta": 10000.0}
# Parts of field names, for the fields EXACT does not name: (part, value, only shrink an int default).
PARTS: tuple[tuple[str, Any, bool], ...] = (
    ("experts_per", 2, True),
    ("experts", EXPERTS, True),
    ("rope_head_dim", HEAD_DIM // 2, False),
    ("head_dim", HEAD_DIM, False),
    ("lora_rank", 32, True),
    ("low_rank_dim", 16, True),
    ("intermediate_size", FFN, True),
    ("hidden_size", HIDDEN, True),
    ("layers", LAYERS, True),
    ("heads", HEADS, True),
    ("max_position", POSITIONS, True),
    ("sliding_window", 8, True),
    ("vocab", VOCAB, True),
)
MAX_PARAMETERS = 16_000_000  # a guard: MLX builds lazily, so a config left big fails here, not out of memory
NOISY = ("dropout", "drop_path")  # float fields containing one -> 0

# Per-family fixes, applied last: only where the generic values cannot be right. A callable gets the filled
# values (a dict) and returns the fixes.
FIXES: dict[str, dict[str, Any]] = {
    "phi3small": {"vocab_size": 100352},  # it writes -inf into the logits of token ids up to 100351
    "baichuan_m1": {"conv_window": 2},  # asserted
    "dbrx": {
        "ffn_config": {"ffn_hidden_size": FFN, "moe_num_experts": EXPERTS, "moe_top_k": 2},
        "attn_config": {"kv_n_heads": KV_HEADS, "clip_qkv": 8.0, "rope_theta": 10000.0},
    },
    "deepseek_v2": {"rope_scaling": {"factor": 1.0, "type": "yarn", "original_max_position_embeddings": 64}},
    "minicpm3": {"rope_scaling": {"type": "longrope", "long_factor": [1.0] * 4, "short_factor": [1.0] * 4}},
    "hunyuan": {"rope_scaling": {"alpha": 1.0, "factor": 1.0, "type": "dynamic"}},
    "exaone4": {"sliding_window_pattern": "LG"},
    "jamba": {
        "attn_layer_period": 2,
        "attn_layer_offset": 1,
        "expert_layer_period": 2,
        "expert_layer_offset": 1,
    },
    "kimi_linear": {"linear_attn_config": {"kda_layers": [1], "num_heads": HEADS, "head_dim": HEAD_DIM}},
    "lfm2": {"layer_types": ["conv", "full_attention"]},
    "lfm2_moe": {"layer_types": ["conv", "full_attention"]},
    "lfm2-vl": {"text_config": {"layer_types": ["conv", "full_attention"]}},
    "olmo_hybrid": {"layer_types": ["linear_attention", "full_attention"]},
    "laguna": {"layer_types": ["sliding_attention", "full_attention"]},
    "mistral4": {
        "rope_parameters": {**ROPE, "llama_4_scaling_beta": 0.1, "original_max_position_embeddings": 64}
    },
    "ministral3": {
        "rope_parameters": {**ROPE, "llama_4_scaling_beta": 0.1, "original_max_position_embeddings": 64}
    },
    "nemotron_h": {"hybrid_override_pattern": ["M", "*"], "mamba_num_heads": 4, "mamba_head_dim": 16},
    "nemotron-nas": {"block_configs": [{"attention": {"n_heads_in_group": 2}, "ffn": {"ffn_mult": 2.0}}] * 2},
    "plamo": {"n_shared_head": 2},
    "spark2_5": {"rope_parameters": {"sliding_attention": ROPE, "full_attention": ROPE}},
    "falcon_h1": {"mamba_d_ssm": HIDDEN, "mamba_n_heads": 4, "mamba_d_head": 16, "mamba_expand": 1},
    "step3p5": {"moe_top_k": 2},
    "glm_moe_dsa": {"rope_parameters": ROPE, "topk_method": "noaux_tc"},
    "kimi_k3": {
        "text_config": {
            "linear_attn_config": {
                "kda_layers": [1],
                "num_heads": HEADS,
                "head_dim": HEAD_DIM,
                "short_conv_kernel_size": 4,
            }
        }
    },
    "longcat_flash": {"mla_scale_q_lora": True, "mla_scale_kv_lora": True, "zero_expert_type": "identity"},
    "longcat_flash_ngram": {
        "mla_scale_q_lora": True,
        "mla_scale_kv_lora": True,
        "zero_expert_type": "identity",
    },
    "mellum": {"rope_parameters": {"sliding_attention": ROPE, "full_attention": ROPE}},
    "muse_spark": {
        "text_config": {
            "mlp_layer_types": ["sparse", "sparse"],
            "num_shared_experts": 0,
            "rope_parameters": ROPE,
            "layer_rope_theta": [10000.0, 10000.0],
        }
    },
    "mimo_v2_flash": {"topk_method": "noaux_tc"},
    "granitemoehybrid": {
        "layer_types": ["mamba", "attention"],
        "mamba_n_heads": 4,
        "mamba_d_head": 16,
        "mamba_d_state": 16,
        "mamba_d_conv": 4,
        "mamba_n_groups": 1,
        "mamba_proj_bias": False,
        "mamba_conv_bias": True,
    },
    "llama4": {  # chunked attention reads the cache of layer 3: 4 layers
        "text_config": {
            "rope_scaling": None,
            "interleave_moe_layer_step": 2,
            "num_experts_per_tok": 1,
            "num_hidden_layers": 4,
            "no_rope_layers": [1, 1, 1, 0],
        }
    },
    "mistral3": {
        "text_config_from": "ministral3",
        "text_config": {
            "rope_parameters": {**ROPE, "llama_4_scaling_beta": 0.1, "original_max_position_embeddings": 64}
        },
    },
    "qwen3_5_moe": {"text_config_from": "qwen3_5:TextModelArgs"},
}


@dataclasses.dataclass
class Result:
    family: str
    status: str  # right | refused | not built | wrong
    reason: str = ""
    seconds: float = 0.0
    detail: str = ""  # for "right": the measured noise norm ratios

    @property
    def line(self) -> str:
        return f"{self.status}: {self.reason}" if self.reason else self.status


def families() -> list[str]:
    """Every module of mlx_lm.models (those that fail to import too: they are recorded as not built)."""
    import mlx_lm.models

    names = []
    for info in pkgutil.iter_modules(mlx_lm.models.__path__):
        if info.name in ("base", "cache", "activations", "rope_utils", "switch_layers", "pipeline"):
            continue
        names.append(info.name)
    return sorted(names)


def load(name: str) -> Any:
    return importlib.import_module(f"mlx_lm.models.{name}")


# --- tiny configurations ----------------------------------------------------------------------------------------


def _field_value(name: str, kind: Any, default: Any, required: bool) -> Any:
    listed = _is_list(kind) or isinstance(default, (list, tuple))
    if name in LISTS and (listed or (default is None and name not in EXACT)):
        return list(LISTS[name])
    if name in EXACT:
        return EXACT[name]
    lower = name.lower()
    if isinstance(default, float) and any(part in lower for part in NOISY):
        return 0.0
    integer = _is_int(kind) or (isinstance(default, int) and not isinstance(default, bool))
    for part, value, shrink in PARTS:
        if integer and part in lower:
            if required or not shrink:
                return value
            return value if isinstance(default, int) and default > value else default
    if not required:
        return default
    return _by_type(kind)


def _is_list(kind: Any) -> bool:
    args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    if typing.get_origin(kind) is typing.Union and len(args) == 1:
        kind = args[0]
    return kind in (list, tuple) or typing.get_origin(kind) in (list, tuple)


def _is_int(kind: Any) -> bool:
    args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    if typing.get_origin(kind) is typing.Union and len(args) == 1:
        kind = args[0]
    return kind is int or kind == "int"


def _by_type(kind: Any) -> Any:
    origin = typing.get_origin(kind)
    args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    if origin is typing.Union and args:
        return _by_type(args[0])
    if kind is bool or kind == "bool":
        return False
    if kind is int or kind == "int":
        return 2
    if kind is float or kind == "float":
        return 1.0
    if kind is str or kind == "str":
        return ""
    if kind is dict or origin is dict:
        return {}
    if kind is list or origin in (list, tuple):
        return []
    return None


def fill(cls: type, family: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tiny values for every field of the dataclass ``cls`` (its defaults shrunk), ``given`` on top."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = None
        if field.name == "model_type":
            values[field.name] = default if isinstance(default, str) and default else family
            continue
        values[field.name] = _field_value(field.name, hints.get(field.name, field.type), default, required)
    values.update(given or {})
    return values


def _per_layer(values: dict[str, Any]) -> int:
    for key in ("num_hidden_layers", "n_layer", "n_layers", "num_layers"):
        if isinstance(values.get(key), int):
            return values[key]
    return LAYERS


def _nested_text_class(module: Any) -> type | None:
    """The dataclass a ``text_config`` dict becomes: the one its annotation names, else the ModelArgs of the one
    family module this one imports, else the module's one text args class besides ModelArgs."""
    hint = typing.get_type_hints(module.ModelArgs).get("text_config")
    named = [arg for arg in typing.get_args(hint) if dataclasses.is_dataclass(arg)]
    if named:
        return named[0]
    siblings = {
        value
        for value in vars(module).values()
        if isinstance(value, types.ModuleType)
        and value.__name__.startswith("mlx_lm.models.")
        and hasattr(value, "ModelArgs")
        and hasattr(value, "Model")
    }
    if len(siblings) == 1:
        return siblings.pop().ModelArgs
    candidates = [
        value
        for key, value in vars(module).items()
        if isinstance(value, type)
        and dataclasses.is_dataclass(value)
        and value is not module.ModelArgs
        and value.__module__ == module.__name__
        and "text" in key.lower()
    ]
    return candidates[0] if len(candidates) == 1 else None


def tiny_args(family: str) -> dict[str, Any]:
    module = load(family)
    values = fill(module.ModelArgs, family)
    fixes = FIXES.get(family, {})
    if "text_config" in values:
        nested = fixes.get("text_config_from")  # "family" or "family:ArgsClass"
        if nested:
            nested_family, _, class_name = nested.partition(":")
            cls = getattr(load(nested_family), class_name or "ModelArgs")
        else:
            nested_family, class_name, cls = family, "", _nested_text_class(module)
        if cls is not None:
            values["text_config"] = fill(cls, nested_family, values.get("text_config") or None)
            if nested and not class_name:
                values["text_config"]["model_type"] = nested_family
    fixes = {key: value for key, value in fixes.items() if key != "text_config_from"}
    for key, value in fixes.items():
        if key == "text_config" and isinstance(value, dict) and isinstance(values.get("text_config"), dict):
            values["text_config"].update(value)
        else:
            values[key] = value
    return values


def build(family: str) -> nn.Module:
    module = load(family)
    values = tiny_args(family)
    args = module.ModelArgs.from_dict(values) if hasattr(module.ModelArgs, "from_dict") else None
    if args is None:
        args = module.ModelArgs(**values)
    mx.random.seed(0)
    model = module.Model(args)
    size = sum(value.size for _, value in tree_flatten(model.parameters()))
    if size > MAX_PARAMETERS:
        raise ValueError(f"not tiny: {size} parameters from {values}")
    model.set_dtype(mx.float32)
    return model


# --- the spy: what the first block receives, independent of neft_plugins -----------------------------------------


class FirstBlockSpy:
    """Patches the class of ``model.layers[0]`` (as it is before NEFTune attaches) to record the first argument of
    each call of that block. NEFTune's subclass calls the base class's ``__call__``, looked up at call time, so the
    spy sees what the block itself receives, noise included."""

    def __init__(self, block: nn.Module) -> None:
        self.block = block
        self.cls = type(block)
        self.saved = self.cls.__dict__.get("__call__")
        self.calls: list[Any] = []

    def __enter__(self) -> FirstBlockSpy:
        original = self.cls.__call__
        first = list(inspect.signature(original).parameters)[1]  # after self: x, inputs, hidden_states, ...
        spy = self

        @functools.wraps(original)  # NEFTune reads the block's signature through it (GPT-J's `inputs=`)
        def __call__(block: Any, *args: Any, **kwargs: Any) -> Any:
            if block is spy.block:
                spy.calls.append(args[0] if args else kwargs.get(first))
            return original(block, *args, **kwargs)

        self.cls.__call__ = __call__
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            del self.cls.__call__
        else:
            self.cls.__call__ = self.saved

    def record(self, run: Callable[[], Any]) -> list[mx.array]:
        self.calls = []
        mx.random.seed(0)  # training-mode randomness: the same draws in every pass
        out = run()
        mx.eval(out)
        calls = [call.astype(mx.float32) if isinstance(call, mx.array) else call for call in self.calls]
        mx.eval([call for call in calls if isinstance(call, mx.array)])
        return calls


def _logits(out: Any) -> mx.array:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return out


def batch() -> tuple[mx.array, mx.array]:
    mx.random.seed(1)
    ids = mx.random.randint(1, VOCAB, (len(LENGTHS), WIDTH))
    real = mx.arange(WIDTH)[None, :] < mx.array(LENGTHS)[:, None]
    lengths = mx.array([[0, length] for length in LENGTHS], dtype=mx.int32)
    return mx.where(real, ids, 0), lengths


def _same(first: list[Any], second: list[Any]) -> bool:
    if len(first) != len(second):
        return False
    return all(
        isinstance(a, mx.array)
        and isinstance(b, mx.array)
        and a.shape == b.shape
        and bool(mx.array_equal(a, b))
        for a, b in zip(first, second, strict=True)
    )


def _weights(model: nn.Module) -> dict[str, mx.array]:
    return {key: mx.array(value) for key, value in tree_flatten(model.parameters())}


def _noise_check(clean: mx.array, noised: mx.array) -> tuple[str | None, str]:
    """None if ``noised - clean`` is NEFTune's noise on this batch, else what is wrong; and the measured ratios."""
    if noised.shape != clean.shape:
        return f"the noised pass gave the first block {noised.shape}, the clean one {clean.shape}", ""
    noise = noised - clean
    d = clean.shape[-1]
    ratios = []
    for row, length in enumerate(LENGTHS):
        pad = noise[row, length:]
        if pad.size and bool(mx.any(pad != 0)):
            return (
                f"row {row}: padding positions {length}..{WIDTH - 1} got noise (max {mx.abs(pad).max()})",
                "",
            )
        norm = float(mx.sqrt(mx.square(noise[row, :length]).sum()))
        expected = ALPHA / math.sqrt(3.0)
        tolerance = SIGMAS * NORM_REL_STD / math.sqrt(length * d)
        ratio = norm / expected
        ratios.append(ratio)
        if abs(ratio - 1.0) > tolerance:
            return (
                f"row {row} (length {length}, width {d}): noise norm {norm:.4g}, expected {expected:.4g} "
                f"within {tolerance:.1%} (ratio {ratio:.4f})"
            ), ""
        zero_tokens = int((mx.abs(noise[row, :length]).sum(axis=-1) == 0).sum())
        if zero_tokens:
            return f"row {row}: {zero_tokens} of its {length} real positions got no noise", ""
    return None, " ".join(f"{ratio:.3f}" for ratio in ratios)


def check(family: str, stage: Callable[[str], None] = lambda step: None) -> Result:
    from neft_plugins.config import NEFTuneConfig
    from neft_plugins.errors import NEFTuneAttachError
    from neft_plugins.mlx.handle import MLXNEFTune

    start = time.perf_counter()

    def result(status: str, reason: str = "", detail: str = "") -> Result:
        return Result(family, status, reason, time.perf_counter() - start, detail)

    def why(error: BaseException) -> str:
        text = " ".join(str(error).split())
        return f"{type(error).__name__}: {text}"[:160]

    try:
        module = load(family)
    except BaseException as error:
        return result("not built", f"import: {why(error)}")
    if not (hasattr(module, "ModelArgs") and hasattr(module, "Model")):
        return result("skipped", "no ModelArgs and Model")
    try:
        model = build(family)
        ids, lengths = batch()
        model.train()
        layers = getattr(model, "layers", None)
        block = layers[0] if isinstance(layers, (list, tuple)) and layers else None
        mx.eval(_logits(model(ids)))
    except BaseException as error:
        if os.environ.get("MLX_CATALOGUE_DEBUG"):
            traceback.print_exc(limit=-2)
        return result("not built", why(error))
    if not isinstance(block, nn.Module):
        # Nothing to spy on: NEFTune must refuse.
        try:
            MLXNEFTune(model, NEFTuneConfig(neftune_alpha=ALPHA), total_steps=4, seed=0)
        except NEFTuneAttachError as error:
            return result("refused", str(error))
        return result("wrong", "attached to a model with no model.layers[0] block")

    base_class = type(block)

    def forward() -> Any:
        return _logits(model(ids))

    with FirstBlockSpy(block) as spy:
        try:
            clean = spy.record(forward)
            model.eval()
            clean_eval = spy.record(forward)
            model.train()
        except BaseException as error:
            return result("not built", f"forward under the spy: {why(error)}")
        weights = _weights(model)
        stage("checking NEFTune")
        try:
            handle = MLXNEFTune(model, NEFTuneConfig(neftune_alpha=ALPHA), total_steps=4, seed=0)
        except NEFTuneAttachError as error:
            if type(model.layers[0]) is not base_class:
                return result("wrong", f"refused, but left layers[0] a {type(model.layers[0]).__name__}")
            return result("refused", str(error))
        except BaseException as error:
            return result("wrong", f"attaching raised {why(error)}")
        try:
            after = _weights(model)
            changed = [
                key for key, value in weights.items() if not bool(mx.array_equal(value, after.get(key)))
            ]
            if changed or set(after) != set(weights):
                return result(
                    "wrong",
                    f"the probe changed the weights: {changed[:3] or sorted(set(after) ^ set(weights))}",
                )
            if not model.training:
                return result("wrong", "the probe left the model in eval mode")

            def loss(model: nn.Module, inputs: mx.array, lengths: mx.array) -> mx.array:
                return _logits(model(inputs)).astype(mx.float32).sum()

            noised_loss = handle.loss(loss)
            try:
                noised = spy.record(lambda: noised_loss(model, ids, lengths))
            except BaseException as error:
                return result("wrong", f"the noised training pass raised {why(error)}")
            if len(noised) != len(clean):
                return result("wrong", f"the first block ran {len(noised)} times noised, {len(clean)} clean")
            if not noised or not isinstance(noised[0], mx.array):
                return result("wrong", f"the first block received {noised[:1]!r}")
            for call, (clean_call, noised_call) in enumerate(zip(clean, noised, strict=True)):
                problem, ratios = _noise_check(clean_call, noised_call)
                if problem:
                    return result("wrong", f"call {call}: {problem}")
            outside = spy.record(forward)
            if not _same(outside, clean):
                return result("wrong", "a training-mode pass outside the loss got noise")
            model.eval()
            in_eval = spy.record(lambda: noised_loss(model, ids, lengths))
            model.train()
            if not _same(in_eval, clean_eval):
                return result("wrong", "an eval-mode pass inside the loss got noise")
        finally:
            handle.detach()
        if type(model.layers[0]) is not base_class:
            return result("wrong", f"detach left layers[0] a {type(model.layers[0]).__name__}")
        detached = spy.record(lambda: noised_loss(model, ids, lengths))
        if not _same(detached, clean):
            return result("wrong", "after detach a training pass through the loss got noise")
    return result("right", detail=f"noise norm / (alpha/sqrt 3) per row: {ratios}")


# --- the sweep and its table -------------------------------------------------------------------------------------


def sweep(names: Iterable[str] | None = None, log: Callable[[str], None] | None = None) -> list[Result]:
    """``check`` each family in a child process (one for all, started again after one that crashes it: some
    families abort MLX natively)."""
    pending = list(names or families())
    results: list[Result] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    while pending:
        child = subprocess.Popen(
            [sys.executable, "-m", "mlx_adapter.mlx_catalogue", "--child", *pending],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if not os.environ.get("MLX_CATALOGUE_DEBUG") else None,
            text=True,
            env=env,
        )
        stage, started = "", 0.0
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith(STAGE):
                stage, started = line[len(STAGE) :].strip(), time.perf_counter()
            elif line.startswith(RESULT):
                res = Result(**json.loads(line[len(RESULT) :]))
                pending.remove(res.family)
                stage = ""
                if res.status != "skipped":
                    results.append(res)
                if log:
                    log(f"{res.family:24s} {res.seconds:6.1f}s  {res.line[:200]}")
        code = child.wait()
        if pending and code != 0 and stage:
            family, step = stage.split(" ", 1)
            status = "wrong" if step == "checking NEFTune" else "not built"
            res = Result(
                family,
                status,
                f"the process died (exit code {code}) while {step}",
                time.perf_counter() - started,
            )
            pending.remove(family)
            results.append(res)
            if log:
                log(f"{res.family:24s} {res.seconds:6.1f}s  {res.line[:200]}")
        elif pending:
            raise RuntimeError(f"the catalogue's child process exited {code} before {pending[0]}")
    return results


STAGE, RESULT = "@@stage ", "@@result "


def _child(names: list[str]) -> None:
    for name in names:
        print(f"{STAGE}{name} building", flush=True)
        res = check(name, stage=lambda step, name=name: print(f"{STAGE}{name} {step}", flush=True))
        print(RESULT + json.dumps(dataclasses.asdict(res)), flush=True)


def reason_group(res: Result) -> str:
    text = res.reason
    if res.status == "refused":
        if "no model.layers" in text:
            return "no model.layers list of blocks"
        if "times in one forward pass" in text:
            return (
                "the first block does not run once per forward pass (its parts are called directly, or loops)"
            )
        if "mixed" in text:
            return "positions mixed before the first block"
        if "first argument is" in text:
            return "the first block's first argument is not [batch, tokens, width] (streams stacked on a new axis)"
        if "missing 1 required positional argument" in text:
            return "the first block is called with its input as a keyword argument (the probe's call fails)"
        return text.split(":")[0]
    if "Metal" in text:
        return "needs the Metal back-end (macOS): a custom Metal kernel in its forward pass"
    if "SystemExit" in text:
        return "its module exits on import without an extra package (olmo: ai2-olmo)"
    if "Hadamard pack" in text:
        return "needs a checkpoint's rotation pack metadata to build"
    if text.startswith("import:"):
        return "does not import: " + text.split(":", 2)[1].strip()
    return text.split(":")[0]


def table(results: list[Result]) -> str:
    counts = Counter(res.status for res in results)
    built = len(results) - counts["not built"]
    lines = [
        "# MLX-LM model families and NEFTune",
        "",
        "Generated by `PYTHONPATH=tests python -m mlx_adapter.mlx_catalogue --write docs/mlx_models.md` "
        "(checked by `tests/mlx_adapter/test_mlx_catalogue.py`); do not edit by hand.",
        "",
        f"Every module of `mlx_lm.models` with `ModelArgs` and `Model`, built tiny from its `ModelArgs` "
        f"(width {HIDDEN}, {LAYERS} layers where the family allows, {EXPERTS} experts), on the CPU. "
        f"A spy on the class of `model.layers[0]`, independent of neft_plugins, compares what the first block "
        f"receives in a training pass through `MLXNEFTune.loss` (alpha {ALPHA:g}, rows of {LENGTHS[0]} and "
        f"{LENGTHS[1]} tokens right-padded to {WIDTH}) with a clean one: **right** means the difference is the "
        f"noise, per row of norm alpha/sqrt(3) within {SIGMAS:g} standard deviations and exactly 0 on padding, "
        "with no noise outside the loss, in eval mode or after detaching, and weights untouched by the attach "
        "probe. **refused** means `MLXNEFTune` raised `NEFTuneAttachError` with the reason shown.",
        "",
        f"- families: {len(results)}",
        f"- built: {built}",
        f"  - right: {counts['right']}",
        f"  - refused: {counts['refused']}",
        f"  - wrong: {counts['wrong']}",
        f"- not built: {counts['not built']}",
    ]
    groups: dict[str, Counter[str]] = {}
    for res in results:
        if res.status in ("refused", "not built", "wrong"):
            groups.setdefault(res.status, Counter())[reason_group(res)] += 1
    for status, counter in groups.items():
        lines += ["", f"{status.capitalize()}, by reason:", ""]
        lines += [f"- {count}: {group}" for group, count in counter.most_common()]
    lines += ["", "| family | status | reason |", "| --- | --- | --- |"]
    for res in sorted(results, key=lambda res: res.family):
        reason = (res.reason or res.detail).replace("|", "\\|")
        lines.append(f"| `{res.family}` | {res.status} | {reason} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", help="families to check (default: all)")
    parser.add_argument("--write", help="write the generated table to this file (docs/mlx_models.md)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        _child(options.families)
        return 0
    start = time.perf_counter()
    results = sweep(options.families or None, log=lambda line: print(line, flush=True))
    counts = Counter(res.status for res in results)
    print(f"{dict(counts)} in {time.perf_counter() - start:.0f}s", flush=True)
    if options.write:
        with open(options.write, "w", encoding="utf-8") as out:
            out.write(table(results))
    return 1 if counts["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
