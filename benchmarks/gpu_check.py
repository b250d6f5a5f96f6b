"""What only a CUDA device can show about NEFTune, in one run of at most 5 minutes on one GPU.

Eight checks, each a function returning its measured numbers and a pass/fail with a reason; one failing
check does not stop the others, and the exit code is 1 if any failed (2: no CUDA device). It installs
nothing: a check whose package is missing (bitsandbytes) fails with the ImportError.

1. ``noise_norms``: bf16 and fp16, the noise each sequence of a padded batch gets at the first decoder
   layer's input has norm alpha/sqrt(3) within 10%, and padding gets exactly none.
2. ``qlora``: the same through a 4-bit (nf4) bitsandbytes model with LoRA, forward and backward.
3. ``noise_op_time``: an embedding-only forward with our noise, transformers' built-in, or none
   (padded, packed and varlen, B=8, L=2048, d=4096). Informational.
4. ``sft_step_time``: one SFT step of a ~0.4B Llama (batch 4 x 1024, AdamW), ours vs none vs built-in.
   Informational.
5. ``peak_memory``: the peak memory one forward+backward gains from NEFTune. Informational.
6. ``sync_free``: no host synchronisation in neft-plugins' hooks (padded, packed, varlen).
7. ``compile``: ``torch.compile(fullgraph=True)`` and ``mode="reduce-overhead"`` train with the right norms.
8. ``unsloth``: Unsloth's GPU path (QLoRA 4-bit, ``use_gradient_checkpointing="unsloth"``, its SFTTrainer with
   its default padding-free batches): with ``NEFTuneCallback`` each sequence's noise within 10% of alpha/sqrt(3),
   padding 0; Unsloth's built-in ``neftune_noise_alpha`` measured beside it. In a child process
   (``unsloth_sft.py``); not run where unsloth is not installed (it pins its own stack: run
   ``--only unsloth`` from the unsloth environment, docs/unsloth.md).

Reproduce (writes benchmarks/results/gpu_check/gpu_check.json and gpu_check.md):

    python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --only noise_norms compile --rounds 10
    python benchmarks/gpu_check.py --device cpu --small     # the CPU-runnable checks, tiny sizes

On a remote machine, pass ``--output DIR`` to a folder that is copied back (or copy
benchmarks/results/gpu_check/ back), and commit the two files into benchmarks/results/gpu_check/.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parents[1] / "tests"))  # support.layouts
from noise_op import EmbeddingOnly, median_interval
from overhead import ALPHA, ARMS, Arm, rotated

from support.layouts import packed_row, padded_batch, padded_rows, random_lengths, varlen_row

EXPECTED_NORM = ALPHA / math.sqrt(3)  # the paper's: alpha / sqrt(L*d) * sqrt(L*d / 3)
TOLERANCE = 0.10
NORM_LENGTHS = (64, 48, 32, 16)  # real lengths of the padded rows the norm checks use
TINY_LLAMA = {
    "vocab_size": 1000,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
SFT_LLAMA = {
    "vocab_size": 32000,
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "max_position_embeddings": 1024,
}
NOISE_OP_SIZE = {"rows": 8, "length": 2048, "dim": 4096, "vocab": 32000}
SMALL_NOISE_OP_SIZE = {"rows": 2, "length": 64, "dim": 64, "vocab": 1000}
SFT_BATCH, SMALL_SFT_BATCH = (4, 1024), (2, 64)
COMPILE_STEPS = 3
COMPILE_VARIANTS: dict[str, dict[str, Any]] = {
    "fullgraph": {"fullgraph": True},
    "reduce-overhead": {"mode": "reduce-overhead"},
}
SYNC_STEPS = 3
UNSLOTH_SFT = Path(__file__).with_name("unsloth_sft.py")
UNSLOTH_TIMEOUT = 240  # seconds: importing unsloth, two 2-step runs of a tiny 4-bit Llama
DEFAULT_OUTPUT = Path(__file__).parent / "results" / "gpu_check"


@dataclass(frozen=True)
class Options:
    device: torch.device
    small: bool  # tiny sizes for the timing checks (CPU tests)
    rounds: int  # interleaved timing rounds


def outcome(passed: bool | None, reason: str, headline: str = "", **measured: Any) -> dict[str, Any]:
    """A check's result: ``passed`` (None: not run), why, its key numbers in a line, and what it measured."""
    return {"passed": passed, "reason": reason, "headline": headline, "measured": measured}


def needs_cuda(options: Options, what: str) -> dict[str, Any] | None:
    """The not-run result of a check that means nothing off a GPU, on a non-CUDA device; else None."""
    return None if options.device.type == "cuda" else outcome(None, f"needs CUDA ({what})")


def build_llama(device: torch.device, dtype: torch.dtype, **config: Any) -> nn.Module:
    """A random Llama from a config (nothing from the hub), built on ``device`` in train mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with device:
        model = LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **config}))
    return model.to(dtype).train()


def on(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()
    }


class VarlenEmbeddingOnly(EmbeddingOnly):
    """``EmbeddingOnly`` that also takes the varlen keywords a padding-free flash-attention trainer passes."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cu_seq_lens_q: torch.Tensor | None = None,
        cu_seq_lens_k: torch.Tensor | None = None,
        max_length_q: int | None = None,
        max_length_k: int | None = None,
    ) -> torch.Tensor:
        return self.embed_tokens(input_ids)


def _hidden_states(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]


@contextlib.contextmanager
def layer_input_noise(layer: nn.Module) -> Iterator[Callable[[], torch.Tensor]]:
    """Yields a function giving what NEFTune added to ``layer``'s input in its latest call: the input after
    NEFTune's pre-hook minus the input before it (float32, ``[B, L, d]``), kept by hooks on either side of
    ours. They only store under fixed keys, so a compiled model traces them without guards that change per
    step."""
    inputs: dict[str, torch.Tensor | None] = {"clean": None, "noised": None}

    def keeper(key: str) -> Callable[[nn.Module, tuple, dict[str, Any]], None]:
        def keep(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            inputs[key] = _hidden_states(args, kwargs).detach().to(torch.float32, copy=True)

        return keep

    hooks = [
        layer.register_forward_pre_hook(keeper("clean"), prepend=True, with_kwargs=True),
        layer.register_forward_pre_hook(keeper("noised"), with_kwargs=True),
    ]
    try:
        yield lambda: inputs["noised"] - inputs["clean"]
    finally:
        for hook in hooks:
            hook.remove()


def noise_report(noise: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    """Each row's noise norm over its real tokens, and the largest noise at a padding position."""
    real = mask.to(torch.bool).unsqueeze(-1)
    norms = torch.linalg.vector_norm(noise * real, dim=(1, 2))
    return {
        "sequence_norms": norms.tolist(),
        "padding_max_abs": float(noise.masked_fill(real, 0).abs().max()),
    }


def norm_failures(label: str, report: dict[str, Any]) -> list[str]:
    """What is wrong with a ``noise_report``: norms off alpha/sqrt(3) by TOLERANCE or more, noised padding."""
    misses = [norm for norm in report["sequence_norms"] if not abs(norm / EXPECTED_NORM - 1) < TOLERANCE]
    failures = (
        [f"{label}: norms {misses} not within {TOLERANCE:.0%} of {EXPECTED_NORM:.3f}"] if misses else []
    )
    if report["padding_max_abs"] != 0:
        failures.append(f"{label}: padding got noise (max |noise| {report['padding_max_abs']:.3g})")
    return failures


def norms_line(label: str, report: dict[str, Any]) -> str:
    norms = report["sequence_norms"]
    return f"{label} norms {min(norms):.3f}-{max(norms):.3f}"


def neftune_attached(model: nn.Module, **keys: Any) -> contextlib.AbstractContextManager:
    from neft_plugins import neftune

    return neftune(model, neftune_alpha=ALPHA, **keys)


def check_noise_norms(options: Options) -> dict[str, Any]:
    """bf16 and fp16 tiny Llamas, a padded batch of rows of different real lengths, NEFTune alpha 5: the
    noise each sequence gets at the first decoder layer's input has norm alpha/sqrt(3) = 2.887 (within 10%)
    over its real tokens, and every padding position gets exactly 0."""
    batch = on(padded_rows(NORM_LENGTHS, TINY_LLAMA["vocab_size"]), options.device)
    reports, failures = {}, []
    for label, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        model = build_llama(options.device, dtype)
        with (
            neftune_attached(model, neftune_seed=0),
            layer_input_noise(model.model.layers[0]) as added_noise,
        ):
            model(**batch)
        reports[label] = noise_report(added_noise(), batch["attention_mask"])
        failures += norm_failures(label, reports[label])
    headline = ", ".join(norms_line(label, report) for label, report in reports.items())
    return outcome(
        not failures,
        "; ".join(failures) or f"every sequence within {TOLERANCE:.0%} of {EXPECTED_NORM:.3f}, padding 0",
        f"{headline} (expect {EXPECTED_NORM:.3f})",
        lengths=list(NORM_LENGTHS),
        **reports,
    )


def check_qlora(options: Options) -> dict[str, Any]:
    """A tiny Llama loaded in 4 bits (nf4, bf16 compute) with the CUDA bitsandbytes, prepared for k-bit
    training, LoRA on q/v, NEFTune: one forward+backward; per-sequence noise norms as in ``noise_norms``,
    a finite loss, and a gradient on every LoRA weight."""
    not_run = needs_cuda(options, "bitsandbytes' 4-bit kernels")
    if not_run:
        return not_run
    import bitsandbytes  # noqa: F401  # a missing package fails here, with its ImportError
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )
    with tempfile.TemporaryDirectory() as folder:
        build_llama(torch.device("cpu"), torch.float32).save_pretrained(folder)
        llama = AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=quantization, device_map={"": str(options.device)}
        )
    model = get_peft_model(
        prepare_model_for_kbit_training(llama), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    ).train()
    batch = on(padded_rows(NORM_LENGTHS, TINY_LLAMA["vocab_size"]), options.device)
    with neftune_attached(model, neftune_seed=0), layer_input_noise(llama.model.layers[0]) as added_noise:
        loss = model(**batch).loss
        report = noise_report(added_noise(), batch["attention_mask"])  # before a checkpointed recompute
        loss.backward()
    lora = {name: weight.grad for name, weight in model.named_parameters() if "lora_" in name}
    failures = norm_failures("nf4", report)
    if not math.isfinite(loss.item()):
        failures.append(f"loss {loss.item()}")
    failures += [f"{name}: no finite gradient" for name, grad in lora.items() if not _finite(grad)]
    if not lora:
        failures.append("no LoRA weights in the model")
    return outcome(
        not failures,
        "; ".join(failures)
        or f"norms within {TOLERANCE:.0%}, padding 0, {len(lora)} LoRA weights got gradients",
        f"{norms_line('nf4', report)} (expect {EXPECTED_NORM:.3f}), loss {loss.item():.3f}",
        loss=loss.item(),
        lora_weights=len(lora),
        bitsandbytes=importlib.metadata.version("bitsandbytes"),
        **report,
    )


def _finite(grad: torch.Tensor | None) -> bool:
    return grad is not None and bool(torch.isfinite(grad).all())


def elapsed_ms(run: Callable[[], object], device: torch.device, repeats: int = 1) -> float:
    """Milliseconds per call of ``run``: CUDA events on a GPU, the host clock elsewhere."""
    if device.type != "cuda":
        started = time.perf_counter()
        for _ in range(repeats):
            run()
        return (time.perf_counter() - started) * 1000 / repeats
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def interleaved_ms(
    model: nn.Module, run: Callable[[], object], options: Options, repeats: int
) -> dict[str, list[float]]:
    """Per arm (none, ours, built-in), ms per ``run`` in each round; each round times every arm once, in an
    order rotating by round, so drift hits every arm alike. One warm-up call per arm first."""
    for arm in ARMS:
        with Arm(arm, model):
            run()
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for round_index in range(options.rounds):
        for arm in rotated(round_index):
            with Arm(arm, model):
                times[arm].append(elapsed_ms(run, options.device, repeats))
    return times


def ratio_summary(times: dict[str, list[float]]) -> dict[str, Any]:
    """Median ms per arm, and ours/built-in, ours/none: the median of the per-round ratios with a bootstrap
    95% interval of that median."""
    summary: dict[str, Any] = {"median_ms": {arm: statistics.median(values) for arm, values in times.items()}}
    for other in ("builtin", "none"):
        ratios = [ours / base for ours, base in zip(times["ours"], times[other], strict=True)]
        summary[f"ours_over_{other}"] = statistics.median(ratios)
        summary[f"ours_over_{other}_95ci"] = median_interval(ratios)
    summary["per_round_ms"] = times
    return summary


def ratio_line(label: str, summary: dict[str, Any]) -> str:
    low, high = summary["ours_over_builtin_95ci"]
    return f"{label} ours/builtin {summary['ours_over_builtin']:.2f} [{low:.2f}, {high:.2f}]"


def check_noise_op_time(options: Options) -> dict[str, Any]:
    """Time of an embedding-only forward (train mode, autograd on) with our noise, transformers' built-in,
    or none, by CUDA events in interleaved rounds, for a padded batch, one packed row (restarting position
    ids) and the same row with flash-attention's varlen keywords, B x L tokens of width d. Informational."""
    size = SMALL_NOISE_OP_SIZE if options.small else NOISE_OP_SIZE
    dtype = torch.bfloat16 if options.device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = VarlenEmbeddingOnly(size["vocab"], size["dim"]).to(options.device, dtype).train()
    generator = torch.Generator().manual_seed(0)
    tokens = size["rows"] * size["length"]
    layouts = {
        "padded": padded_batch(size["rows"], size["length"], size["vocab"], generator),
        "packed": packed_row(random_lengths(size["rows"], tokens, generator), size["vocab"], generator),
        "varlen": varlen_row(random_lengths(size["rows"], tokens, generator), size["vocab"], generator),
    }
    summaries = {}
    for name, batch in layouts.items():
        batch = on(batch, options.device)
        summaries[name] = ratio_summary(interleaved_ms(model, lambda batch=batch: model(**batch), options, 5))
    return outcome(
        True,
        "informational: ran",
        ", ".join(ratio_line(name, summary) for name, summary in summaries.items()),
        size=size,
        dtype=str(dtype),
        **summaries,
    )


def check_sft_step_time(options: Options) -> dict[str, Any]:
    """Time of one SFT step (forward, backward, AdamW step) of a bf16 Llama of ~0.4B parameters on a padded
    batch, ours vs none vs built-in, by CUDA events in interleaved rounds. Informational."""
    model = build_llama(options.device, torch.bfloat16, **({} if options.small else SFT_LLAMA))
    rows, length = SMALL_SFT_BATCH if options.small else SFT_BATCH
    vocab = model.config.vocab_size
    batch = on(padded_batch(rows, length, vocab, torch.Generator().manual_seed(0)), options.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    summary = ratio_summary(interleaved_ms(model, step, options, 1))
    low, high = summary["ours_over_none_95ci"]
    return outcome(
        True,
        "informational: ran",
        f"{ratio_line('step', summary)}, ours/none {summary['ours_over_none']:.3f} [{low:.3f}, {high:.3f}]",
        parameters=sum(weight.numel() for weight in model.parameters()),
        batch=[rows, length],
        **summary,
    )


def check_peak_memory(options: Options) -> dict[str, Any]:
    """``torch.cuda.max_memory_allocated`` over one forward+backward of the SFT model and batch, without and
    with NEFTune (each after a warm-up, gradients freed before each): the difference in MB and as a fraction.
    Informational."""
    not_run = needs_cuda(options, "torch.cuda.max_memory_allocated")
    if not_run:
        return not_run
    model = build_llama(options.device, torch.bfloat16, **({} if options.small else SFT_LLAMA))
    rows, length = SMALL_SFT_BATCH if options.small else SFT_BATCH
    batch = on(
        padded_batch(rows, length, model.config.vocab_size, torch.Generator().manual_seed(0)), options.device
    )

    def peak_mb() -> float:
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        model(**batch).loss.backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20

    peak_mb()
    with neftune_attached(model):
        peak_mb()
    without = peak_mb()
    with neftune_attached(model):
        with_neftune = peak_mb()
    added = with_neftune - without
    return outcome(
        True,
        "informational: ran",
        f"+{added:.1f} MB ({added / without:+.2%}) over {without:.0f} MB",
        peak_mb_without=without,
        peak_mb_with=with_neftune,
        added_mb=added,
        added_fraction=added / without,
    )


def sync_guards(model: nn.Module, embeddings: nn.Module, first_layer: nn.Module) -> list[Any]:
    """Hooks that set sync debug mode to "error" just before neft-plugins' hooks on each module and back to
    0 just after them, so only our code runs strict (transformers' own mask building syncs)."""

    def strict(*_: object) -> None:
        torch.cuda.set_sync_debug_mode("error")

    def lenient(*_: object) -> None:
        torch.cuda.set_sync_debug_mode(0)

    return [
        model.register_forward_pre_hook(strict, prepend=True),
        model.register_forward_pre_hook(lenient),
        model.register_forward_hook(strict, prepend=True, always_call=True),
        model.register_forward_hook(lenient, always_call=True),
        embeddings.register_forward_hook(strict, prepend=True),
        embeddings.register_forward_hook(lenient),
        first_layer.register_forward_pre_hook(strict, prepend=True),
        first_layer.register_forward_pre_hook(lenient),
    ]


def check_sync_free(options: Options) -> dict[str, Any]:
    """``torch.cuda.set_sync_debug_mode("error")`` while neft-plugins' hooks run (model call, embeddings,
    first layer), over several noised training forward+backward steps of a tiny Llama after one warm-up,
    for a padded batch, a packed row with position_ids, and a varlen row: a host sync raises."""
    not_run = needs_cuda(options, "torch.cuda.set_sync_debug_mode")
    if not_run:
        return not_run
    model = build_llama(options.device, torch.bfloat16)
    vocab = TINY_LLAMA["vocab_size"]
    generator = torch.Generator().manual_seed(0)
    layouts = {
        "padded": padded_rows(NORM_LENGTHS, vocab),
        "packed": packed_row(random_lengths(4, 192, generator), vocab, generator),
        "varlen": varlen_row(random_lengths(4, 192, generator), vocab, generator),
    }
    errors: dict[str, str | None] = {}
    with neftune_attached(model):
        for name, batch in layouts.items():
            batch = on(batch, options.device)
            model(**batch).loss.backward()  # warm-up: one-time setup may sync
            guards = sync_guards(model, model.model.embed_tokens, model.model.layers[0])
            try:
                for _ in range(SYNC_STEPS):
                    model(**batch).loss.backward()
                errors[name] = None
            except RuntimeError as error:  # what a host sync raises in "error" mode
                errors[name] = f"{type(error).__name__}: {error}"
            finally:
                torch.cuda.set_sync_debug_mode(0)
                for guard in guards:
                    guard.remove()
    synced = {name: error for name, error in errors.items() if error}
    return outcome(
        not synced,
        "; ".join(f"{name}: {error}" for name, error in synced.items())
        or f"no sync in {SYNC_STEPS} steps of each layout",
        ", ".join(f"{name} {'synced' if error else 'ok'}" for name, error in errors.items()),
        **errors,
    )


def compiled_run(options: Options, compile_options: dict[str, Any]) -> dict[str, Any]:
    """COMPILE_STEPS training steps (SGD) of a tiny fp32 Llama with NEFTune attached, then compiled with
    ``compile_options``: whether it worked, why not (the exception, or the norms that were off), the graphs
    dynamo compiled, and each step's noise report."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = build_llama(options.device, torch.float32)
    batch = on(padded_rows(NORM_LENGTHS, TINY_LLAMA["vocab_size"]), options.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    reports: list[dict[str, Any]] = []
    try:
        with neftune_attached(model, neftune_seed=0), layer_input_noise(model.model.layers[0]) as added_noise:
            compiled = torch.compile(model, **compile_options)
            for _ in range(COMPILE_STEPS):
                loss = compiled(**batch).loss
                reports.append(noise_report(added_noise(), batch["attention_mask"]))
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        failures = [
            failure
            for step, report in enumerate(reports)
            for failure in norm_failures(f"step {step}", report)
        ]
    except Exception as error:  # whatever compiling or running compiled raised is the result
        failures = [f"{type(error).__name__}: {error}"]
    graphs = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    return {"worked": not failures, "error": "; ".join(failures) or None, "graphs": graphs, "steps": reports}


def check_compile(options: Options) -> dict[str, Any]:
    """A tiny Llama with NEFTune attached, compiled with each of COMPILE_VARIANTS (``fullgraph=True``,
    ``mode="reduce-overhead"``), trains a few steps each with the right per-sequence norms and no noise on
    padding; each reported as worked, or with the exception text."""
    runs = {
        name: compiled_run(options, compile_options) for name, compile_options in COMPILE_VARIANTS.items()
    }
    broken = {name: run["error"] for name, run in runs.items() if not run["worked"]}
    return outcome(
        not broken,
        "; ".join(f"{name}: {error}" for name, error in broken.items())
        or f"both trained {COMPILE_STEPS} steps, norms right",
        ", ".join(
            f"{name} {'worked' if run['worked'] else 'FAILED'} ({run['graphs']} graphs)"
            for name, run in runs.items()
        ),
        **runs,
    )


def check_unsloth(options: Options) -> dict[str, Any]:
    """``unsloth_sft.py`` in a child process on the device: Unsloth's built-in against ours, each sequence's noise
    norm at the first decoder layer under Unsloth's padding-free SFT. Passes when ours gives every sequence
    alpha/sqrt(3) within 10% and padding none; the built-in's ratios (sqrt(L_s / L_row)) are informational."""
    not_run = needs_cuda(options, "Unsloth's GPU path: its loader and kernels")
    if not_run:
        return not_run
    if importlib.util.find_spec("unsloth") is None:  # it pins its own stack: an environment of its own
        return outcome(
            None, "needs unsloth: run `--only unsloth` from the unsloth environment (docs/unsloth.md)"
        )
    with tempfile.TemporaryDirectory() as folder:
        child = subprocess.run(
            [sys.executable, str(UNSLOTH_SFT), folder],
            cwd=folder,  # Unsloth writes its compiled trainers to unsloth_compiled_cache/ in the working folder
            env={**os.environ, "CUDA_VISIBLE_DEVICES": str(options.device.index), "HF_HUB_OFFLINE": "1"},
            capture_output=True,
            text=True,
            timeout=UNSLOTH_TIMEOUT,
            check=False,
        )
        if child.returncode != 0:
            raise RuntimeError(f"unsloth_sft.py exited {child.returncode}: {child.stderr[-2000:]}")
        runs = json.loads((Path(folder) / "unsloth_sft.json").read_text())
    reports = {
        name: {
            "sequence_norms": [norm for sequences in run["sequences"] for _, norm in sequences],
            "padding_max_abs": run["padding_max"],
        }
        for name, run in runs.items()
    }
    failures = norm_failures("ours", reports["ours"])
    builtin = [norm / EXPECTED_NORM for norm in reports["builtin"]["sequence_norms"]]
    return outcome(
        not failures,
        "; ".join(failures)
        or f"ours: every sequence within {TOLERANCE:.0%} of {EXPECTED_NORM:.3f}, padding 0",
        f"{norms_line('ours', reports['ours'])}; built-in ratios {min(builtin):.2f}-{max(builtin):.2f} "
        f"(expect {EXPECTED_NORM:.3f}; rows of {runs['ours']['row_lengths']} tokens)",
        unsloth=importlib.metadata.version("unsloth"),
        **runs,
    )


CHECKS: dict[str, Callable[[Options], dict[str, Any]]] = {
    "noise_norms": check_noise_norms,
    "qlora": check_qlora,
    "noise_op_time": check_noise_op_time,
    "sft_step_time": check_sft_step_time,
    "peak_memory": check_peak_memory,
    "sync_free": check_sync_free,
    "compile": check_compile,
    "unsloth": check_unsloth,
}


def run_checks(names: list[str], options: Options) -> dict[str, dict[str, Any]]:
    """Each named check, in order; an exception fails that check (with its text) and not the rest."""
    from tqdm import tqdm

    results = {}
    for name in tqdm(names, desc="gpu checks"):
        started = time.perf_counter()
        try:
            results[name] = CHECKS[name](options)
        except Exception as error:  # one failing check must not stop the others
            results[name] = outcome(False, f"{type(error).__name__}: {error}")
        results[name]["seconds"] = round(time.perf_counter() - started, 2)
        gc.collect()
        if options.device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def environment(options: Options, argv: list[str]) -> dict[str, Any]:
    """Versions, the device, the command line and the UTC time the run started."""
    import transformers

    import neft_plugins

    try:
        bitsandbytes: str | None = importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        bitsandbytes = None
    cuda = options.device.type == "cuda"
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bitsandbytes": bitsandbytes,
        "neft_plugins": neft_plugins.__version__,
        "device": torch.cuda.get_device_name(options.device) if cuda else str(options.device),
        "cuda": torch.version.cuda,
        "command": shlex.join(["python", "benchmarks/gpu_check.py", *argv]),
        "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def status(result: dict[str, Any]) -> str:
    return {True: "passed", False: "FAILED", None: "not run"}[result["passed"]]


def _cell(text: str) -> str:
    """One markdown table cell: the first line of ``text``, its pipes escaped."""
    return (text.strip().splitlines() or [""])[0].replace("|", "\\|")


def write_results(results: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """``gpu_check.json`` (everything) and ``gpu_check.md`` (one table row per check) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = folder / "gpu_check.json", folder / "gpu_check.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    env = results["environment"]
    lines = [
        "# GPU check",
        "",
        f"{env['device']}; torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']}, "
        f"bitsandbytes {env['bitsandbytes']}, neft_plugins {env['neft_plugins']}; {env['utc']}",
        "",
        f"`{env['command']}`",
        "",
        "| check | result | key numbers | reason |",
        "|---|---|---|---|",
        *(
            f"| {name} | {status(result)} | {_cell(result['headline'])} | {_cell(result['reason'])} |"
            for name, result in results["checks"].items()
        ),
    ]
    markdown_path.write_text("\n".join(lines) + "\n")
    return json_path, markdown_path


def device_arg(text: str) -> torch.device:
    try:
        return torch.device(text)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


@contextlib.contextmanager
def attach_logs_quiet() -> Iterator[None]:
    """neft-plugins' attach/detach warnings off (the timing checks attach every round), restored after."""
    logger = logging.getLogger("neft_plugins")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="folder for the JSON and markdown"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(CHECKS),
        default=list(CHECKS),
        metavar="NAME",
        help=f"checks to run, of: {', '.join(CHECKS)}",
    )
    parser.add_argument("--rounds", type=positive_int, default=20, help="interleaved timing rounds")
    parser.add_argument("--device", type=device_arg, default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny sizes for the timing checks (CPU)")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    device = args.device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print(
                "gpu_check: no CUDA device (torch.cuda.is_available() is False); try --device cpu --small",
                file=sys.stderr,
            )
            return 2
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
    options = Options(device, args.small, args.rounds)
    run_environment = environment(options, argv)
    with attach_logs_quiet():
        checks = run_checks(args.only, options)
    results = {
        "environment": run_environment,
        "settings": {"device": str(options.device), "small": options.small, "rounds": options.rounds},
        "passed": all(result["passed"] is not False for result in checks.values()),
        "checks": checks,
    }
    for path in write_results(results, args.output):
        print(f"wrote {path}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
