"""Marks for tests that need a framework feature some tested versions lack; each names the version and why."""

from __future__ import annotations

import importlib.util
import inspect
from importlib import metadata
from pathlib import Path

import pytest
from packaging.version import Version


def version_of(package: str) -> Version:
    return Version(metadata.version(package))


def _trl_packing_keeps_sequences() -> bool:
    try:
        from trl.data_utils import pack_dataset
    except ImportError:  # TRL before 0.16 (what llamafactory 0.9.3 installs) packs elsewhere
        return False
    return "strategy" in inspect.signature(pack_dataset).parameters


transformers_resumes_under_torch_2_13 = pytest.mark.skipif(
    version_of("transformers") < Version("4.47"),
    reason="transformers 4.46's Trainer cannot resume under torch 2.13: its own torch.load of rng_state.pth "
    "fails with weights_only (a transformers limit, fixed in later releases)",
)
transformers_4bit_on_new_bitsandbytes = pytest.mark.skipif(
    version_of("transformers") < Version("4.47"),
    reason="transformers 4.46's bitsandbytes integration fails with bitsandbytes >= 0.50 "
    "(\"'frozenset' object has no attribute 'discard'\"), and older bitsandbytes has no CPU 4-bit",
)
trl_packing_keeps_sequences = pytest.mark.skipif(
    not _trl_packing_keeps_sequences(),
    reason="this TRL's packing (TRL 0.16) concatenates examples into fixed-length chunks and keeps no sequence "
    "boundaries, so a packed row holds no sequences to tell apart",
)
transformers_4bit_on_cpu = pytest.mark.skipif(
    version_of("transformers") < Version("4.57"),
    reason="transformers 4.52 (what llamafactory 0.9.3 installs) refuses bitsandbytes' CPU backend for 4-bit "
    "loading (it asks for intel_extension_for_pytorch); 4.57 and later load it",
)


def _llamafactory_refuses_neat_packing() -> bool:
    """LLaMA-Factory 0.9.4's own argument parser refuses ``neat_packing`` with transformers >= 4.53."""
    if importlib.util.find_spec("llamafactory") is None or version_of("transformers") < Version("4.53"):
        return False
    spec = importlib.util.find_spec("llamafactory.hparams.parser")
    return (
        spec is not None
        and spec.origin is not None
        and "Neat packing is incompatible with transformers>=4.53.0" in Path(spec.origin).read_text()
    )


llamafactory_neat_packing = pytest.mark.skipif(
    _llamafactory_refuses_neat_packing(),
    reason="this LLaMA-Factory (0.9.4) itself refuses neat_packing with transformers >= 4.53 (its own rule, "
    "in llamafactory.hparams.parser), and installs transformers 4.57",
)


def _source_has(module: str, text: str) -> bool:
    """``module``'s source file holds ``text`` (a feature read without importing the module)."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # a parent package is not installed
        return False
    return spec is not None and spec.origin is not None and text in Path(spec.origin).read_text()


transformers_gemma3 = pytest.mark.skipif(
    version_of("transformers") < Version("4.50"),
    reason="transformers 4.46 has no Gemma 3 (Gemma3ForConditionalGeneration came in 4.50)",
)
trl_vision_datasets = pytest.mark.skipif(
    # TRL 0.24's SFTTrainer collates image+text records itself; 0.16's does not
    not _source_has("trl.trainer.sft_trainer", "class DataCollatorForVisionLanguageModeling"),
    reason="TRL 0.16's SFTTrainer has no vision-language data path (an 'images' column and its own vision "
    "collator, DataCollatorForVisionLanguageModeling, came later): its VLM recipe was a hand-written collator",
)
qwen2_vl_processor_builds = pytest.mark.skipif(
    # transformers 4.52+ give Qwen2VLProcessor a video processor, and video processors need torchvision
    _source_has("transformers.models.qwen2_vl.processing_qwen2_vl", "video_processor")
    and importlib.util.find_spec("torchvision") is None,
    reason="this transformers' Qwen2VLProcessor cannot be built without torchvision (4.57 and 5.x): its constructor "
    "checks its video processor's class, and every video processor needs torchvision, which does not install "
    "beside the CPU torch used here",
)
