"""transformers' whole catalogue of text models, built tiny: on each, what the first block of the text stack
receives from a noised training forward, against a clean one of the same batch.

Every causal-LM, image-text-to-text (text only) and seq2seq class of the installed transformers, plus config
variants that real checkpoints use (``support.catalogue``). For each: NEFTune is refused at attach or on the
training pass with a NEFTuneError that names the model, or each real sequence's noise at the first block has
norm alpha/sqrt(3) within 15%, padding gets exactly none, and ``neft/noise_norm`` / ``neft/embed_norm`` report
what the block received. The first block is found at run time, from the module tree, not from neft_plugins.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from support.catalogue import (
    ALPHA,
    RATIO_RANGE,
    Entry,
    build_tiny,
    catalogue_entries,
    first_block_inputs,
    measure,
    one_thread,
    text_batch,
    text_config,
)

# Entries that cannot be built tiny, or not run on text alone: entry id -> (the transformers versions, as a
# specifier, "" for every tested one; why). The test checks both ways that the list is true.
CANNOT_BUILD: dict[str, tuple[str, str]] = {
    "apertus1p5:Apertus1p5ForConditionalGeneration": (
        "",
        "config: ValueError: The audio token range ends at",
    ),
    "bailing_hybrid:BailingHybridForCausalLM": (
        "",
        "RuntimeError: shape '[-1, 8, 0]' is invalid for input of size 360",
    ),
    "bamba:BambaForCausalLM": (
        ">=5",
        "ValueError: `get_seq_length` can only be called on Attention layers, and the current Cache seem",
    ),
    "bigbird_pegasus:BigBirdPegasusForConditionalGeneration": (
        "<4.50",
        "RuntimeError: the token embeddings (BigBirdPegasusScaledWordEmbedding) did not run",
    ),
    "blip-2:Blip2ForConditionalGeneration": (
        "",
        "TypeError: Blip2ForConditionalGeneration.forward() missing 1 required positional argument: 'pix",
    ),
    "blip-2:Blip2ForConditionalGeneration+word_embed_proj_dim=32": (
        "",
        "TypeError: Blip2ForConditionalGeneration.forward() missing 1 required positional argument: 'pix",
    ),
    "blip:BlipForConditionalGeneration": (
        "",
        "TypeError: BlipForConditionalGeneration.forward() missing 1 required positional argument: 'pixe",
    ),
    "blt:BltForCausalLM": (">=5", "AttributeError: 'BltConfig' object has no attribute 'num_hidden_layers'"),
    "chameleon:ChameleonForConditionalGeneration": (
        "",
        "AttributeError: 'NoneType' object has no attribute 'get'",
    ),
    "cohere_compass:CohereCompassForConditionalGeneration": (
        "",
        "StrictDataclassFieldValidationError: Validation error for field 'rope_parameters': TypeError: F",
    ),
    "cohere_compass_text:CohereCompassForCausalLM": ("", "KeyError: 'full_attention'"),
    "dbrx:DbrxForCausalLM": (
        "",
        "AttributeError: 'DbrxAttentionConfig' object has no attribute 'rope_theta'",
    ),
    "deepseek_ocr2:DeepseekOcr2ForConditionalGeneration": (
        "",
        "TypeError: 'NoneType' object is not subscriptable",
    ),
    "deepseek_v2:DeepseekV2ForCausalLM": ("", "TypeError: topk(): argument 'k' must be int, not NoneType"),
    "diffusion_gemma:DiffusionGemmaForBlockDiffusion": (
        "",
        "TypeError: empty(): argument 'size' (position 1) must be tuple of ints, but found element of ty",
    ),
    "dots1:Dots1ForCausalLM": ("", "TypeError: empty() takes 1 positional argument but 3 were given"),
    "dots3_note:Dots3NoteForConditionalGeneration": ("", "config: ValueError: adapter_input_size must match"),
    "emu3:Emu3ForCausalLM": (
        ">=4.50,<5",
        "AttributeError: 'Emu3Config' object has no attribute 'vocab_size'",
    ),
    "emu3:Emu3ForConditionalGeneration": ("", "AttributeError: 'NoneType' object has no attribute 'get'"),
    "encoder-decoder:EncoderDecoderModel": (
        "<5",
        "ValueError: config: ValueError: A configuration of type encoder-decoder cannot be instantiated ",
    ),
    "ernie4_5_vl_moe:Ernie4_5_VLMoeForConditionalGeneration": (
        "",
        "RuntimeError: stack expects each tensor to be equal size, but got [3, 30, 2] at entry 0 and [3,",
    ),
    "fast_vlm:FastVlmForConditionalGeneration": (
        "",
        "ImportError: TimmWrapperModel requires the timm library but it was not found in your environmen",
    ),
    "gemma3n:Gemma3nForConditionalGeneration": (
        "",
        "ImportError: TimmWrapperModel requires the timm library but it was not found in your environmen",
    ),
    "gemma3n_text:Gemma3nForCausalLM": (
        "",
        "ValueError: The set of layer types producing a cache is different than the set of layer types u",
    ),
    "gemma4_assistant:Gemma4AssistantForCausalLM": ("", "config: ValueError: hidden_size_per_layer_input m"),
    "gemma4_unified_assistant:Gemma4UnifiedAssistantForCausalLM": (
        "",
        "ValueError: inputs_embeds and shared_kv_states cannot be None.",
    ),
    "git:GitForCausalLM": ("", "ValueError: Expected input batch_size (0) to match target batch_size (87)."),
    "glm4v_moe:Glm4vMoeForConditionalGeneration": (
        ">=5",
        "RuntimeError: split_with_sizes expects split_sizes to sum exactly to 4 (input tensor's size at ",
    ),
    "glm5_next:Glm5NextForConditionalGeneration": (
        "",
        "ValueError: `get_seq_length` can only be called on Attention layers, and the current Cache seem",
    ),
    "gpt_neo:GPTNeoForCausalLM": (
        "<5",
        "ValueError: config: ValueError: Configuration for convolutional module is incorrect. It is requ",
    ),
    "granite4_vision:Granite4VisionForConditionalGeneration": (
        "",
        "TypeError: object of type 'NoneType' has no len()",
    ),
    "granite4_vision:Granite4VisionForConditionalGeneration+embedding_multiplier=12.0": (
        "",
        "TypeError: object of type 'NoneType' has no len()",
    ),
    "granitemoehybrid:GraniteMoeHybridForCausalLM": (
        "",
        "ValueError: `get_seq_length` can only be called on Attention layers, and the current Cache seem",
    ),
    "granitemoehybrid:GraniteMoeHybridForCausalLM+embedding_multiplier=12.0": (
        "",
        "ValueError: `get_seq_length` can only be called on Attention layers, and the current Cache seem",
    ),
    "hrm_text:HrmTextForCausalLM": ("", "IndexError: list index out of range"),
    "hunyuan_v1_dense:HunYuanDenseV1ForCausalLM": (
        "",
        "TypeError: unsupported operand type(s) for ** or pow(): 'NoneType' and 'float'",
    ),
    "hunyuan_v1_moe:HunYuanMoEV1ForCausalLM": (
        "",
        "TypeError: unsupported operand type(s) for ** or pow(): 'NoneType' and 'float'",
    ),
    "hunyuan_vl:HunYuanVLForConditionalGeneration": (
        "",
        "TypeError: unsupported operand type(s) for ** or pow(): 'NoneType' and 'float'",
    ),
    "idefics:IdeficsForVisionText2Text": (
        "",
        "ValueError: Exactly 1 of pixel_values, image_encoder_embeddings or perceiver_embeddings has to ",
    ),
    "inkling_mm_model:InklingForConditionalGeneration": ("", "ModuleNotFoundError: No module named 'scipy'"),
    "instructblip:InstructBlipForConditionalGeneration": (
        "",
        "TypeError: InstructBlipForConditionalGeneration.forward() missing 2 required positional argumen",
    ),
    "instructblip:InstructBlipForConditionalGeneration+word_embed_proj_dim=32": (
        "",
        "TypeError: InstructBlipForConditionalGeneration.forward() missing 2 required positional argumen",
    ),
    "instructblipvideo:InstructBlipVideoForConditionalGeneration": (
        "",
        "TypeError: InstructBlipVideoForConditionalGeneration.forward() missing 2 required positional ar",
    ),
    "instructblipvideo:InstructBlipVideoForConditionalGeneration+word_embed_proj_dim=32": (
        "",
        "TypeError: InstructBlipVideoForConditionalGeneration.forward() missing 2 required positional ar",
    ),
    "jamba:JambaForCausalLM": (
        "",
        "ValueError: `get_seq_length` can only be called on Attention layers, and the current Cache seem",
    ),
    "jetmoe:JetMoeForCausalLM": (
        "<5",
        "RuntimeError: shape '[3, 30, 4, 16]' is invalid for input of size 11520",
    ),
    "kimi_linear:KimiLinearForCausalLM": (
        "",
        "ValueError: `get_seq_length` can only be called on Attention layers, and the current Cache seem",
    ),
    "kosmos-2:Kosmos2ForConditionalGeneration": (
        "",
        "ValueError: You have to specify either `pixel_values` or `image_embeds`.",
    ),
    "led:LEDForConditionalGeneration": ("", "IndexError: index out of range in self"),
    "lfm2_moe:Lfm2MoeForCausalLM": ("", "TypeError: 'NoneType' object is not subscriptable"),
    "lfm3:Lfm3ForCausalLM": (
        "",
        "ValueError: `get_seq_length` can only be called on Attention layers, and the current Cache seem",
    ),
    "lfm3_vl:Lfm3VlForConditionalGeneration": (
        "",
        "ValueError: `get_seq_length` can only be called on Attention layers, and the current Cache seem",
    ),
    "llama4:Llama4ForConditionalGeneration": (
        "",
        "AttributeError: 'MoeCausalLMOutputWithPast' object has no attribute 'image_outputs'",
    ),
    "llava:LlavaForConditionalGeneration": (
        "<4.50",
        "AttributeError: 'NoneType' object has no attribute 'shape'",
    ),
    "llava_next:LlavaNextForConditionalGeneration": (
        "<4.50",
        "AttributeError: 'NoneType' object has no attribute 'dtype'",
    ),
    "m2m_100:M2M100ForConditionalGeneration": (
        "<4.50",
        "RuntimeError: the token embeddings (M2M100ScaledWordEmbedding) did not run",
    ),
    "mbart:MBartForConditionalGeneration": (
        "<4.50",
        "RuntimeError: the token embeddings (MBartScaledWordEmbedding) did not run",
    ),
    "mbart:MBartForConditionalGeneration+scale_embedding=True": (
        "<4.50",
        "RuntimeError: the token embeddings (MBartScaledWordEmbedding) did not run",
    ),
    "ministral:MinistralForCausalLM": (
        "",
        "TypeError: unsupported operand type(s) for ** or pow(): 'NoneType' and 'float'",
    ),
    "molmo2:Molmo2ForConditionalGeneration": (
        "",
        "ValueError: `mm_token_type_ids` is required as a model input when training",
    ),
    "musicgen:MusicgenForCausalLM": ("", "RuntimeError: shape '[-1, 4, 30]' is invalid for input of size 90"),
    "musicgen:MusicgenForCausalLM+scale_embedding=True": (
        "",
        "RuntimeError: shape '[-1, 4, 30]' is invalid for input of size 90",
    ),
    "musicgen_melody:MusicgenMelodyForCausalLM": (
        "",
        "RuntimeError: shape '[-1, 4, 30]' is invalid for input of size 90",
    ),
    "musicgen_melody:MusicgenMelodyForCausalLM+scale_embedding=True": (
        "",
        "RuntimeError: shape '[-1, 4, 30]' is invalid for input of size 90",
    ),
    "nemotron:NemotronForCausalLM": (
        "",
        "TypeError: unsupported operand type(s) for //: 'int' and 'NoneType'",
    ),
    "nllb-moe:NllbMoeForConditionalGeneration": (
        "<4.50",
        "RuntimeError: the token embeddings (NllbMoeScaledWordEmbedding) did not run",
    ),
    "perception_lm:PerceptionLMForConditionalGeneration": (
        "",
        "ImportError: TimmWrapperModel requires the timm library but it was not found in your environmen",
    ),
    "phi4_multimodal:Phi4MultimodalForCausalLM": (
        ">=4.50,<5",
        "AttributeError: 'NoneType' object has no attribute 'items'",
    ),
    "pi0:PI0ForConditionalGeneration": (
        "",
        "TypeError: PI0ForConditionalGeneration.forward() missing 1 required positional argument: 'state",
    ),
    "pix2struct:Pix2StructForConditionalGeneration": (
        "",
        "ValueError: You have to specify flattened_patches",
    ),
    "pp_formulanet:PPFormulaNetForConditionalGeneration": (
        "",
        "NotImplementedError: `get_input_embeddings` not auto‑handled for PPFormulaNetModel; please over",
    ),
    "qdqbert:QDQBertLMHeadModel": (
        "",
        "ImportError: QDQBertModel requires the pytorch-quantization library but it was not found in you",
    ),
    "qwen2_5_omni_thinker:Qwen2_5OmniThinkerForConditionalGeneration": (
        "",
        "AttributeError: 'Qwen2_5OmniThinkerConfig' object has no attribute 'vision_start_token_id'",
    ),
    "qwen2_vl:Qwen2VLForConditionalGeneration": (
        "<4.50",
        "TypeError: 'NoneType' object is not subscriptable",
    ),
    "qwen3_omni_moe_thinker:Qwen3OmniMoeThinkerForConditionalGeneration": (
        "",
        "AttributeError: 'Qwen3OmniMoeThinkerConfig' object has no attribute 'vision_start_token_id'",
    ),
    "qwen4_exp:Qwen4ExpForConditionalGeneration": (
        "",
        "TypeError: unsupported operand type(s) for //: 'NoneType' and 'NoneType'",
    ),
    "qwen4_exp_text:Qwen4ExpForCausalLM": (
        "",
        "TypeError: unsupported operand type(s) for //: 'NoneType' and 'NoneType'",
    ),
    "recurrent_gemma:RecurrentGemmaForCausalLM": (
        ">=5",
        "ValueError: `get_seq_length` can only be called on Attention layers, and the current Cache seem",
    ),
    "reformer:ReformerModelWithLMHead": (
        "",
        "ValueError: If training, make sure that config.axial_pos_shape factors: (8, 16) multiply to seq",
    ),
    "speech_to_text_2:Speech2Text2ForCausalLM": (
        ">=4.50,<5",
        "AttributeError: 'Speech2Text2SinusoidalPositionalEmbedding' object has no attribute 'weight'",
    ),
    "step3p7:Step3p7ForConditionalGeneration": (
        "",
        "ValueError: Could not find a `sliding_window` argument in the config, or it is not set",
    ),
    "transfo-xl:TransfoXLLMHeadModel": (
        "",
        "RuntimeError: Trying to create tensor with negative dimension -199744: [-199744, 1]",
    ),
    "udop:UdopForConditionalGeneration": (
        "",
        "ValueError: Bbox is required for horizontal relative position bias",
    ),
    "vipllava:VipLlavaForConditionalGeneration": (
        "<4.50",
        "AttributeError: 'NoneType' object has no attribute 'shape'",
    ),
    "vision-encoder-decoder:VisionEncoderDecoderModel": ("", "ValueError: You have to specify pixel_values"),
    "voxtral_realtime:VoxtralRealtimeForConditionalGeneration": (
        "",
        "ValueError: You must specify exactly one of input_features or encoder_inputs_embeds",
    ),
    "xlstm:xLSTMForCausalLM": (">=5", "ValueError: matC_old has wrong shape, got torch.Size([3, 4, 16, 16])"),
    "zamba2:Zamba2ForCausalLM": (
        "",
        "ValueError: `get_seq_length` can only be called on Attention layers, and the current Cache seem",
    ),
    "zamba:ZambaForCausalLM": (
        "",
        "ValueError: `get_seq_length` can only be called on Attention layers, and the current Cache seem",
    ),
}


def cannot_build(entry_id: str) -> str | None:
    """Why the entry cannot be built on the installed transformers, or None."""
    versions, reason = CANNOT_BUILD.get(entry_id, ("", None))
    return reason if Version(transformers.__version__) in SpecifierSet(versions) else None


ENTRIES = catalogue_entries()


def built(entry: Entry) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The tiny model in training mode and its batch, after one clean training forward to show it runs."""
    model = build_tiny(entry).train()
    batch = text_batch(model)
    first_block_inputs(model, batch)
    return model, batch


def names_the_model(message: str, model: torch.nn.Module) -> bool:
    names = {type(model).__name__, type(model.config).__name__, type(text_config(model.config)).__name__}
    if hasattr(model, "get_encoder"):
        names.add(type(model.get_encoder()).__name__)
    return any(name in message for name in names)


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry.id for entry in ENTRIES])
def test_noise_reaches_the_first_block_at_the_paper_norm_or_is_refused(entry: Entry) -> None:
    with one_thread():
        reason = cannot_build(entry.id)
        try:
            model, _ = built(entry)
        except Exception as error:
            if reason is not None:
                pytest.skip(f"cannot build: {reason}")
            raise AssertionError(
                f"{entry.id} does not build or run tiny and is not in CANNOT_BUILD"
            ) from error
        assert reason is None, f"{entry.id} builds and runs on this version: correct CANNOT_BUILD"
        result = measure(entry, model)

    if result.status == "refused":
        assert result.detail.strip(), "a refusal says why"
        assert names_the_model(result.detail, model), f"the refusal names the model: {result.detail}"
        return
    low, high = RATIO_RANGE
    ratios = ", ".join(f"{ratio:.3f}" for ratio in result.ratios)
    assert result.ratios, f"no sequence measured: {result.detail}"
    assert all(low <= ratio <= high for ratio in result.ratios), (
        f"noise norm at the first block / (alpha/sqrt(3)) per sequence: {ratios}; layout {result.layout}"
    )
    assert result.padding_exact, "padding positions get exactly no noise"
    logs = result.logs
    assert logs.get("neft/noise_norm") == pytest.approx(result.noise_norm, rel=0.03), (
        f"neft/noise_norm reports the noise the first block received ({result.noise_norm:.4g}): {logs}"
    )
    assert logs.get("neft/embed_norm") == pytest.approx(result.embed_norm, rel=0.03), (
        f"neft/embed_norm reports the clean input of the first block ({result.embed_norm:.4g}): {logs}"
    )
    assert logs.get("neft/alpha") == ALPHA
