"""transformers' whole catalogue of text models, built tiny: on each, what every block of the text stack
receives from a noised training forward, against a clean one of the same batch.

Every causal-LM, image-text-to-text (text only) and seq2seq class of the installed transformers, plus config
variants that real checkpoints use (``support.catalogue``). For each: NEFTune is refused at attach or on the
training pass with a NEFTuneError that names the model, or every block input that holds the clean embeddings
(the first block's hidden states, once or as copies along the width or a new axis, and any later input handed
them again) receives them plus one noise, the same in every copy and every input, whose norm per real sequence is
alpha/sqrt(3) within 15%; padding gets exactly none, and ``neft/noise_norm`` / ``neft/embed_norm`` report one
copy's. The blocks are found at run time, from the module tree, not from neft_plugins.
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
        "ValueError: config: StrictDataclassClassValidationError: Class validation error for validator '",
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
    "dots3_note:Dots3NoteForConditionalGeneration": (
        "",
        "ValueError: config: StrictDataclassClassValidationError: Class validation error for validator '",
    ),
    "emu3:Emu3ForCausalLM": (
        ">=4.50,<5",
        "AttributeError: 'Emu3Config' object has no attribute 'vocab_size'",
    ),
    "encoder-decoder:EncoderDecoderModel": (
        "<5",
        "ValueError: config: ValueError: A configuration of type encoder-decoder cannot be instantiated",
    ),
    "ernie4_5_vl_moe:Ernie4_5_VLMoeForConditionalGeneration": (
        "",
        "RuntimeError: stack expects each tensor to be equal size, but got [3, 30, 2] at entry 0 and [3,",
    ),
    "fast_vlm:FastVlmForConditionalGeneration": (
        "",
        "ImportError:  TimmWrapperModel requires the timm library but it was not found in your environme",
    ),
    "gemma3n:Gemma3nForConditionalGeneration": (
        "",
        "ImportError:  TimmWrapperModel requires the timm library but it was not found in your environme",
    ),
    "gemma4_assistant:Gemma4AssistantForCausalLM": (
        "",
        "ValueError: config: StrictDataclassClassValidationError: Class validation error for validator '",
    ),
    "gemma4_unified_assistant:Gemma4UnifiedAssistantForCausalLM": (
        "",
        "ValueError: inputs_embeds and shared_kv_states cannot be None.",
    ),
    "git:GitForCausalLM": ("", "ValueError: Expected input batch_size (0) to match target batch_size (87)."),
    "glm4v_moe:Glm4vMoeForConditionalGeneration": (
        ">=5",
        "RuntimeError: split_with_sizes expects split_sizes to sum exactly to 4 (input tensor's size at",
    ),
    "granite4_vision:Granite4VisionForConditionalGeneration": (
        "",
        "TypeError: object of type 'NoneType' has no len()",
    ),
    "granite4_vision:Granite4VisionForConditionalGeneration+embedding_multiplier=12.0": (
        "",
        "TypeError: object of type 'NoneType' has no len()",
    ),
    "hrm_text:HrmTextForCausalLM": ("", "IndexError: list index out of range"),
    "idefics:IdeficsForVisionText2Text": (
        "",
        "ValueError: Exactly 1 of pixel_values, image_encoder_embeddings or perceiver_embeddings has to",
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
    "kosmos-2:Kosmos2ForConditionalGeneration": (
        "",
        "ValueError: You have to specify either `pixel_values` or `image_embeds`.",
    ),
    "llama4:Llama4ForConditionalGeneration": (
        "<5.25",
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
    "perception_lm:PerceptionLMForConditionalGeneration": (
        "",
        "ImportError:  TimmWrapperModel requires the timm library but it was not found in your environme",
    ),
    "phi4_multimodal:Phi4MultimodalForCausalLM": (
        ">=4.50,<5",
        "AttributeError: 'NoneType' object has no attribute 'items'",
    ),
    "pi0:PI0ForConditionalGeneration": (
        "",
        "TypeError: PI0ForConditionalGeneration.forward() missing 1 required positional argument: 'state",
    ),
    "pi05:PI05ForConditionalGeneration": (
        "",
        "AttributeError: 'NoneType' object has no attribute 'get_seq_length'",
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
        "ImportError:  QDQBertModel requires the pytorch-quantization library but it was not found in yo",
    ),
    "qwen2_vl:Qwen2VLForConditionalGeneration": (
        "<4.50",
        "TypeError: 'NoneType' object is not subscriptable",
    ),
    "speech_to_text_2:Speech2Text2ForCausalLM": (
        ">=4.50,<5",
        "AttributeError: 'Speech2Text2SinusoidalPositionalEmbedding' object has no attribute 'weight'",
    ),
    "transfo-xl:TransfoXLLMHeadModel": ("", "IndexError: index 3 is out of range"),
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


# Classes NEFTune refuses, with what the refusal must say, on every tested version that ships them (checked
# both ways, so a class that is right cannot slip into a refusal unseen).
REFUSED: dict[str, str] = {
    "blt:BltForCausalLM": "keeps its layers in parallel stacks",
    "cpmant:CpmAntForCausalLM": "embedded token ids of shape",
    "gemma3n_text:Gemma3nForCausalLM": "that are not copies of one another",
    "kosmos-2.5:Kosmos2_5ForConditionalGeneration": "names no placeholder token id",
    "led:LEDForConditionalGeneration": "embedded token ids of shape",
    "minicpm_ocr:MiniCPMOcrForConditionalGeneration": "names no placeholder token id",
    "minicpmv4_6:MiniCPMV4_6ForConditionalGeneration": "names no placeholder token id",
    "minicpmv4_7:MiniCPMV4_7ForConditionalGeneration": "names no placeholder token id",
    "nemotron_h_omni:NemotronH_Omni_Reasoning_V3": "names no placeholder token id",
    "pegasus_x:PegasusXForConditionalGeneration": "received hidden states of shape",
    "phi4_multimodal:Phi4MultimodalForCausalLM": "names no placeholder token id",
    "prophetnet:ProphetNetForCausalLM": "received hidden states of shape",
    "voxtral:VoxtralForConditionalGeneration": "names no placeholder token id",
    "xlm-prophetnet:XLMProphetNetForCausalLM": "received hidden states of shape",
    "xlm:XLMWithLMHeadModel": "keeps its layers in parallel stacks",
}


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

    expected_refusal = REFUSED.get(entry.id)
    if result.status == "refused":
        assert expected_refusal is not None, f"{entry.id} is refused but not in REFUSED: {result.detail}"
        assert expected_refusal in result.detail, (
            f"the refusal says why ({expected_refusal!r}): {result.detail}"
        )
        assert names_the_model(result.detail, model), f"the refusal names the model: {result.detail}"
        return
    assert expected_refusal is None, f"{entry.id} is no longer refused ({result.status}): correct REFUSED"
    low, high = RATIO_RANGE
    ratios = ", ".join(f"{ratio:.3f}" for ratio in result.ratios)
    assert result.ratios, f"no sequence measured: {result.detail}"
    assert all(low <= ratio <= high for ratio in result.ratios), (
        f"noise norm at the first block / (alpha/sqrt(3)) per sequence: {ratios}; layout {result.layout}"
    )
    assert result.padding_exact, "padding positions get exactly no noise"
    assert result.carriers, "some block input holds the clean embeddings"
    assert result.status == "right", (
        f"every copy in every block input that carries the embeddings ({', '.join(result.carriers)}) gets one "
        f"noise: {result.detail}"
    )
    logs = result.logs
    assert logs.get("neft/noise_norm") == pytest.approx(result.noise_norm, rel=0.03), (
        f"neft/noise_norm reports the noise the first block received ({result.noise_norm:.4g}): {logs}"
    )
    assert logs.get("neft/embed_norm") == pytest.approx(result.embed_norm, rel=0.03), (
        f"neft/embed_norm reports the clean input of the first block ({result.embed_norm:.4g}): {logs}"
    )
    assert logs.get("neft/alpha") == ALPHA
