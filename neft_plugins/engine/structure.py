"""What a model looks like to NEFTune: its token embeddings, the block they first enter, its media placeholders.

Read from the module tree, not from a list of model families, so that a new architecture is handled the day
it ships: the noise goes in at the input of the first block of the stack that holds the token embeddings,
after whatever the model does to its embeddings (a multiplier, a norm, a projection, added positions).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn

from neft_plugins.errors import NEFTuneAttachError

# Config attributes that hold a multimodal model's placeholder token ids (transformers 4.x used "_index").
PLACEHOLDER_KEYS = tuple(
    f"{kind}_token_{suffix}" for kind in ("image", "video", "audio") for suffix in ("id", "index")
)
# Sub-configs whose presence makes a model multimodal.
MEDIA_CONFIGS = ("vision_config", "audio_config", "video_config")
# Submodule names of media (and protein) towers: their blocks never receive the token embeddings.
MEDIA_TOWER_WORDS = ("vision", "visual", "image", "audio", "video", "speech", "vq", "perceiver", "protein")
# Where blocks are kept, most telling first: a Sequential is often a small projection, so it counts only
# where a model has no ModuleList.
BLOCK_STACKS = (nn.ModuleList, nn.Sequential)


def _wrapper_chain(model: nn.Module) -> Iterator[nn.Module]:
    """``model``, then each module it wraps (torch.compile, DDP/FSDP/DeepSpeed), down to the one that owns the
    embeddings."""
    while True:
        yield model
        compiled = getattr(model, "_orig_mod", None)
        wrapped = getattr(model, "module", None) if not hasattr(model, "get_input_embeddings") else None
        inner = compiled if isinstance(compiled, nn.Module) else wrapped
        if not isinstance(inner, nn.Module):
            return
        model = inner


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip torch.compile and distributed wrappers down to the model that owns the embeddings."""
    *_, inner = _wrapper_chain(model)
    return inner


def compiled_wrapper(model: nn.Module) -> nn.Module | None:
    """The ``torch.compile`` wrapper (an ``OptimizedModule``) among ``model``'s wrappers, or None: its own hooks
    run outside the compiled code."""
    return next(
        (each for each in _wrapper_chain(model) if isinstance(getattr(each, "_orig_mod", None), nn.Module)),
        None,
    )


def base_model(model: nn.Module) -> nn.Module:
    """The model under its wrappers and, for a PEFT model, under the adapters."""
    inner = unwrap_model(model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def model_config(model: nn.Module) -> Any:
    return getattr(base_model(model), "config", None)


def find_input_embeddings(model: nn.Module) -> tuple[nn.Module, str]:
    """The token embedding module (text tokens only for multimodal models) and its path, through
    DDP/FSDP/DeepSpeed/torch.compile wrappers and PEFT models."""
    base = base_model(model)
    get_embeddings = getattr(base, "get_input_embeddings", None)
    embeddings = None
    if callable(get_embeddings):
        with contextlib.suppress(NotImplementedError):
            embeddings = get_embeddings()
    if not isinstance(embeddings, nn.Module):
        raise NEFTuneAttachError(
            f"{type(base).__name__} has no input embeddings: get_input_embeddings() "
            f"{'is missing' if get_embeddings is None else f'returned {embeddings!r}'}. NEFTune noises the "
            "token embeddings; pass the language model itself, or implement get_input_embeddings() on it."
        )
    return embeddings, module_path(base, embeddings)


def encoder_embeddings(encoder: nn.Module, model: nn.Module) -> tuple[nn.Module, str]:
    """For an encoder that does not name its embeddings: its module that shares the weight of the model's
    input embeddings (the one it runs), else the model's input embeddings themselves."""
    embeddings, path = find_input_embeddings(model)
    weight = getattr(embeddings, "weight", None)
    for name, module in encoder.named_modules():
        if module is embeddings or (weight is not None and getattr(module, "weight", None) is weight):
            return module, f"{type(encoder).__name__}.{name}"
    return embeddings, path


def module_path(root: nn.Module, module: nn.Module) -> str:
    path = next((name for name, each in root.named_modules() if each is module), "")
    return f"{type(root).__name__}.{path}" if path else type(root).__name__


def find_encoder(model: nn.Module) -> nn.Module | None:
    """The encoder of an encoder-decoder model (T5, BART, ...); None for a decoder-only model."""
    base = base_model(model)
    if not getattr(model_config(model), "is_encoder_decoder", False) or not hasattr(base, "get_encoder"):
        return None
    return base.get_encoder()


def find_decoder(model: nn.Module) -> nn.Module | None:
    """The decoder of an encoder-decoder model; None for a decoder-only model or one that does not say."""
    base = base_model(model)
    if find_encoder(model) is None or not hasattr(base, "get_decoder"):
        return None
    decoder = base.get_decoder()
    return decoder if isinstance(decoder, nn.Module) else None


def find_first_block(root: nn.Module, embeddings: nn.Module) -> nn.Module | None:
    """The first block of the stack the token embeddings enter, or None for a model with no stack of blocks."""
    blocks = find_blocks(root, embeddings)
    return None if blocks is None else blocks[0]


def find_blocks(root: nn.Module, embeddings: nn.Module) -> nn.Module | None:
    """The stack of blocks the token embeddings enter, or None for a model with no stack of blocks.

    From the embedding module up through its parents, the first parent that holds a stack (an
    ``nn.ModuleList``, else an ``nn.Sequential``, outside the embeddings and outside media towers) is the
    text model; its largest outermost stack is its blocks, and element 0 the block the embeddings enter first.
    """
    # Every path to a shared module (ProphetNet's wrapper and its decoder hold one embedding): deepest first.
    paths = [name for name, module in root.named_modules(remove_duplicate=False) if module is embeddings]
    parents = sorted(
        {
            ".".join(path.split(".")[:depth])
            for path in paths
            for depth in range(path.count(".") + 1 if path else 0)
        },
        key=lambda parent: -(parent.count(".") + 1 if parent else 0),
    )
    for kind in BLOCK_STACKS:
        for parent in parents:
            stacks = _outermost_stacks(root.get_submodule(parent), embeddings, kind)
            if stacks:
                return _the_blocks(stacks, root)
    return None


def _the_blocks(stacks: list[nn.Module], root: nn.Module) -> nn.Module:
    """The largest stack; refused when another stack as long holds other modules, because then the layers are
    split over parallel stacks (XLM's ``attentions``/``ffns``) or interleaved with another kind (IDEFICS' gated
    cross-attention), and no element of one stack is the block the embeddings first enter."""
    blocks = max(stacks, key=lambda stack: sum(1 for _ in stack.modules()))
    parallel = [
        stack
        for stack in stacks
        if stack is not blocks
        and len(stack) == len(blocks)
        and not all(_contains(blocks, each) for each in stack)
    ]
    if parallel:
        names = {module: name for name, module in root.named_modules()}
        raise NEFTuneAttachError(
            f"{type(root).__name__} keeps its layers in parallel stacks ({', '.join(names[each] for each in [blocks, *parallel])}, "
            f"{len(blocks)} each): no single module is the block its embeddings first enter, so NEFTune cannot add "
            "the paper's noise there. Not supported."
        )
    return blocks


def _outermost_stacks(parent: nn.Module, embeddings: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for name, child in module.named_children():
            if _contains(child, embeddings) or any(word in name.lower() for word in MEDIA_TOWER_WORDS):
                continue
            if isinstance(child, kind) and len(child) > 0:
                found.append(child)
            else:
                visit(child)

    visit(parent)
    return found


def _contains(module: nn.Module, target: nn.Module) -> bool:
    return any(each is target for each in module.modules())


def check_no_layer_drop(model: nn.Module) -> None:
    """Refuse LayerDrop: a training pass may skip the first block, and its noise with it."""
    config = model_config(model)
    configs = [config, *(getattr(config, key, None) for key in ("text_config", "encoder", "decoder"))]
    for each in configs:
        for key, value in (vars(each) if each is not None and hasattr(each, "__dict__") else {}).items():
            if "layerdrop" in key and isinstance(value, (int, float)) and value > 0:
                raise NEFTuneAttachError(
                    f"{type(each).__name__}.{key} = {value}: LayerDrop skips blocks at random in training, "
                    "the first one included, and NEFTune's noise enters at the first block. Set "
                    f"{key} to 0 to train with NEFTune."
                )


def placeholder_token_ids(model: nn.Module) -> tuple[int, ...]:
    """The image/video/audio placeholder ids of a multimodal model (their embeddings are replaced by the media
    features, so noise there never reaches the model); () for a text-only model.

    Raises ``NEFTuneAttachError`` for a multimodal model whose placeholder ids cannot be read, rather than
    guess and let the placeholders dilute every sequence's noise.
    """
    config = model_config(model)
    ids = {getattr(config, key) for key in PLACEHOLDER_KEYS if isinstance(getattr(config, key, None), int)}
    media = [key for key in MEDIA_CONFIGS if getattr(config, key, None) is not None]
    if media and not ids:
        raise NEFTuneAttachError(
            f"{type(config).__name__} is multimodal ({', '.join(media)}) but names no placeholder token id "
            f"({', '.join(PLACEHOLDER_KEYS)}): NEFTune cannot tell text from media positions, whose noise the "
            "media features overwrite. Set the id on the config, or attach to the language model alone."
        )
    return tuple(sorted(ids))
