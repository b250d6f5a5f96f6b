"""Tiny random vision-language models, their processors and image+text batches for tests: nothing comes from the
model hub. Each model's media placeholder tokens sit in ``input_ids``; the model replaces their embeddings with
the image features."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from support.tiny import WORDS, make_tokenizer, sentence, vocabulary

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image
    from transformers import PreTrainedModel, PreTrainedTokenizerFast, ProcessorMixin

# Qwen2-VL's special tokens (ChatML plus the vision markers) after make_tokenizer's pad, eos, bos, unk.
QWEN2_VL_SPECIALS = (
    "<pad>",
    "<|endoftext|>",
    "<s>",
    "<unk>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# LLaVA's and Gemma 3's image tokens: only the ids matter for a direct forward.
LLAVA_SPECIALS = ("<pad>", "</s>", "<s>", "<unk>", "<|im_start|>", "<|im_end|>", "<image>")
GEMMA3_SPECIALS = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)
CHAT_WORDS = ("system", "user", "assistant")
# The media each model's one image (IMAGE_SIDE x IMAGE_SIDE pixels) becomes: 4 placeholder tokens in every model.
IMAGE_SIDE = 56
PLACEHOLDERS_PER_IMAGE = 4
TEXT_HIDDEN = 64


def token_id(specials: tuple[str, ...], token: str) -> int:
    return vocabulary(specials, CHAT_WORDS).index(token)


def _text_config(**overrides: Any) -> dict[str, Any]:
    """A tiny decoder (2 layers, width 64, head dim 16) over ``vocabulary(specials, CHAT_WORDS)``."""
    return {
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": 2 * TEXT_HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": TEXT_HIDDEN // 4,
        "max_position_embeddings": 512,
        "pad_token_id": 0,
        **overrides,
    }


@dataclass(frozen=True)
class TinyVLM:
    """A tiny vision-language model and how to build its inputs for ``rows`` of (image, text words)."""

    name: str
    model: PreTrainedModel
    specials: tuple[str, ...]
    image_token: str
    # The tokens one image stands for in input_ids (markers around PLACEHOLDERS_PER_IMAGE placeholders).
    image_tokens: tuple[str, ...]
    # pixel tensors (and e.g. image_grid_thw) for ``count`` images
    pixels: Callable[[int], dict[str, torch.Tensor]]
    # extra inputs the forward needs, from input_ids
    extra: Callable[[torch.Tensor], dict[str, torch.Tensor]]

    @property
    def placeholder_id(self) -> int:
        return token_id(self.specials, self.image_token)

    def batch(self, text_lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
        """One image then ``n`` random words per row, right-padded; labels on every real token."""
        import torch

        rng = random.Random(seed)
        vocab = vocabulary(self.specials, CHAT_WORDS)
        image = [vocab.index(token) for token in self.image_tokens]
        rows = [image + [vocab.index(rng.choice(WORDS)) for _ in range(n)] for n in text_lengths]
        width = max(map(len, rows))
        input_ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
        attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        return {**inputs, **self.pixels(len(rows)), **self.extra(input_ids)}


def _accepts(model: Any, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def make_qwen2_vl(seed: int = 0) -> TinyVLM:
    """Qwen2-VL: a 56x56 image is a 4x4 grid of 14-pixel patches, merged 2x2 into 4 ``<|image_pad|>`` tokens."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    specials = QWEN2_VL_SPECIALS
    ids = {
        "image_token_id": token_id(specials, "<|image_pad|>"),
        "video_token_id": token_id(specials, "<|video_pad|>"),
        "vision_start_token_id": token_id(specials, "<|vision_start|>"),
        "vision_end_token_id": token_id(specials, "<|vision_end|>"),
    }
    text = _text_config(
        vocab_size=len(vocabulary(specials, CHAT_WORDS)),
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        eos_token_id=token_id(specials, "<|im_end|>"),
        bos_token_id=2,
    )
    vision = {
        "depth": 1,
        "embed_dim": 32,
        "hidden_size": TEXT_HIDDEN,
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_chans": 3,
    }
    # transformers 4.46 keeps the text fields on the top-level config; later versions in text_config.
    if "text_config" in inspect.signature(Qwen2VLConfig.__init__).parameters:
        config = Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
    else:
        config = Qwen2VLConfig(**text, vision_config=vision, **ids)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    grid = IMAGE_SIDE // 14
    patch = 3 * 2 * 14 * 14

    def pixels(count: int) -> dict[str, torch.Tensor]:
        return {
            "pixel_values": torch.randn(count * grid * grid, patch),
            "image_grid_thw": torch.tensor([[1, grid, grid]] * count),
        }

    def extra(input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        # transformers 5.x's Qwen2-VL reads the media positions from mm_token_type_ids (1 = image).
        if _accepts(model, "mm_token_type_ids"):
            return {"mm_token_type_ids": (input_ids == ids["image_token_id"]).long()}
        return {}

    image_tokens = ("<|vision_start|>", *["<|image_pad|>"] * PLACEHOLDERS_PER_IMAGE, "<|vision_end|>")
    return TinyVLM("qwen2-vl", model, specials, "<|image_pad|>", image_tokens, pixels, extra)


def make_llava(seed: int = 0) -> TinyVLM:
    """LLaVA: a tiny CLIP tower (56x56 image, 28-pixel patches: 4 patch features after dropping CLS) and a tiny
    Llama."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    specials = LLAVA_SPECIALS
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIDE,
        patch_size=IMAGE_SIDE // 2,
        projection_dim=32,
    )
    text = LlamaConfig(**_text_config(vocab_size=len(vocabulary(specials, CHAT_WORDS)), eos_token_id=1))
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=token_id(specials, "<image>"),
        # transformers 4.46 expands input_ids itself ("legacy processing") when a row has fewer placeholders
        image_seq_length=PLACEHOLDERS_PER_IMAGE,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)

    image_tokens = ("<image>",) * PLACEHOLDERS_PER_IMAGE
    return TinyVLM("llava", model, specials, "<image>", image_tokens, square_images, lambda _: {})


def square_images(count: int) -> dict[str, Any]:
    """Random pixels for ``count`` RGB images of IMAGE_SIDE x IMAGE_SIDE (LLaVA's and Gemma 3's input)."""
    import torch

    return {"pixel_values": torch.randn(count, 3, IMAGE_SIDE, IMAGE_SIDE)}


def make_gemma3(seed: int = 0) -> TinyVLM:
    """Gemma 3: a tiny SigLIP tower (56x56 image, 14-pixel patches: 4x4 features, pooled 2x2 into 4 soft tokens)
    and a tiny Gemma 3 text model (its sqrt(d) embedding scale inside the embedding module)."""
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    specials = GEMMA3_SPECIALS
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_SIDE,
        patch_size=14,
    )
    text = Gemma3TextConfig(
        **_text_config(vocab_size=len(vocabulary(specials, CHAT_WORDS)), eos_token_id=1, bos_token_id=2),
        sliding_window=64,
    )
    image_id = token_id(specials, "<image_soft_token>")
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=PLACEHOLDERS_PER_IMAGE,
        boi_token_index=token_id(specials, "<start_of_image>"),
        eoi_token_index=token_id(specials, "<end_of_image>"),
        image_token_index=image_id,
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)

    def extra(input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        # 1 at image tokens: Gemma 3's training forward needs it for the bidirectional attention over an image.
        return {"token_type_ids": (input_ids == image_id).long()}

    image_tokens = ("<start_of_image>", *["<image_soft_token>"] * PLACEHOLDERS_PER_IMAGE, "<end_of_image>")
    return TinyVLM("gemma3", model, specials, "<image_soft_token>", image_tokens, square_images, extra)


def without_placeholder_ids(config: Any) -> Any:
    """``config`` with every image/video/audio placeholder id set to None, as a config that names none reads.

    Set past the config's own ``__setattr__`` (transformers 5 validates the type); aliases such as Gemma 3's
    ``image_token_id`` (for ``image_token_index``) are resolved first.
    """
    aliases = getattr(config, "attribute_map", {})
    for kind in ("image", "video", "audio"):
        for suffix in ("id", "index"):
            name = f"{kind}_token_{suffix}"
            if hasattr(config, name):
                object.__setattr__(config, aliases.get(name, name), None)
    return config


def chat_template(image_markup: str) -> str:
    """A ChatML chat template for image and text parts; an image part becomes ``image_markup``."""
    return (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}" + image_markup + "{% elif "
        "part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def _tokenizer(specials: tuple[str, ...], eos: str) -> PreTrainedTokenizerFast:
    """The word-level tokenizer as a Qwen2 tokenizer: processors check their tokenizer's class."""
    from transformers import Qwen2TokenizerFast

    pad, _, _, unk, *additional = specials
    words = make_tokenizer(specials, CHAT_WORDS)
    return Qwen2TokenizerFast(
        tokenizer_object=words.backend_tokenizer,
        pad_token=pad,
        eos_token=eos,
        unk_token=unk,
        bos_token=None,
        additional_special_tokens=additional,
    )


def qwen2_vl_processor() -> ProcessorMixin:
    """Qwen2-VL's processor over the tiny word-level tokenizer: an IMAGE_SIDE-pixel image becomes 4 tokens."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor

    side = IMAGE_SIDE * IMAGE_SIDE
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=side, max_pixels=side),
        tokenizer=_tokenizer(QWEN2_VL_SPECIALS, "<|im_end|>"),
        chat_template=chat_template("<|vision_start|><|image_pad|><|vision_end|>"),
    )


def llava_processor() -> ProcessorMixin:
    """LLaVA's processor: a CLIP image processor at IMAGE_SIDE pixels, ``<image>`` expanded to 4 tokens."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    size = {"height": IMAGE_SIDE, "width": IMAGE_SIDE}
    return LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": IMAGE_SIDE}, crop_size=size),
        tokenizer=_tokenizer(LLAVA_SPECIALS, "<|im_end|>"),
        patch_size=IMAGE_SIDE // 2,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS feature, which "default" drops
        image_token="<image>",
        chat_template=chat_template("<image>"),
    )


def tiny_images(count: int, seed: int = 0) -> list[Image]:
    """Random RGB images of IMAGE_SIDE x IMAGE_SIDE pixels."""
    from PIL import Image

    rng = random.Random(seed)
    return [
        Image.frombytes("RGB", (IMAGE_SIDE, IMAGE_SIDE), rng.randbytes(3 * IMAGE_SIDE * IMAGE_SIDE))
        for _ in range(count)
    ]


def image_text_records(count: int, seed: int = 0) -> list[dict[str, str]]:
    """Texts of very different lengths to go with one image each."""
    rng = random.Random(seed)
    return [
        {"question": sentence(rng, (3, 8, 20)), "answer": sentence(rng, (3, 10, 30))} for _ in range(count)
    ]
