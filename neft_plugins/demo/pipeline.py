"""Data, training and evaluation shared by ``neft demo`` and ``benchmarks/reproduce.py``.

Heavy libraries (transformers, trl, peft, datasets) are imported inside the functions.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neft_plugins.demo import measures

PLAIN_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"
QUANTUM_PROMPT = "Can you explain the basics of quantum computing?"
DATA_SEED = 1234
EVAL_MAX_LENGTH = 256  # the data split does not move with the training seed


def quiet_libraries() -> None:
    """Offline, and only errors from the training libraries: the demo prints its own progress."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("transformers", "trl", "peft", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass


@dataclass(frozen=True)
class Example:
    instruction: str
    answer: str


def load_records(path: str | Path) -> list[Example]:
    """Alpaca-style records from JSON (a list) or JSONL: ``instruction`` [+ ``input``] -> ``output``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = json.loads(text)
        if isinstance(rows, dict):
            rows = next((v for v in rows.values() if isinstance(v, list)), [])
    out = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or "instruction" not in row or "output" not in row:
            raise ValueError(f"{path}: record {index} is not Alpaca-style (needs 'instruction' and 'output')")
        instruction = str(row["instruction"]).strip()
        extra = str(row.get("input") or "").strip()
        if extra:
            instruction = f"{instruction}\n\n{extra}"
        out.append(Example(instruction, str(row["output"]).strip()))
    return out


@dataclass
class Splits:
    train: list[Example]
    heldback: list[Example]
    heldout: list[Example]  # AlpacaEval (or held-back records when no AlpacaEval file is given)


class Formatter:
    """Prompts as the model will see them: its chat template, or a plain Alpaca prompt without one."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.chat = bool(getattr(tokenizer, "chat_template", None))

    def trl_row(self, ex: Example) -> dict:
        if self.chat:
            return {
                "prompt": [{"role": "user", "content": ex.instruction}],
                "completion": [{"role": "assistant", "content": ex.answer}],
            }
        return {"prompt": PLAIN_PROMPT.format(instruction=ex.instruction), "completion": ex.answer}

    def prompt_ids(self, instruction: str) -> list[int]:
        if self.chat:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
            )
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer(PLAIN_PROMPT.format(instruction=instruction))["input_ids"]

    def example_ids(self, ex: Example) -> tuple[list[int], int]:
        """Token ids of prompt + answer (+ end of turn) and where the answer starts."""
        prompt = self.prompt_ids(ex.instruction)
        if self.chat:
            text = self.tokenizer.apply_chat_template(
                [
                    {"role": "user", "content": ex.instruction},
                    {"role": "assistant", "content": ex.answer},
                ],
                tokenize=False,
            )
            full = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            text = (
                PLAIN_PROMPT.format(instruction=ex.instruction) + ex.answer + (self.tokenizer.eos_token or "")
            )
            full = self.tokenizer(text)["input_ids"]
        start = 0
        while start < min(len(prompt), len(full)) and prompt[start] == full[start]:
            start += 1
        return full, start


def select_splits(
    records: list[Example],
    heldout_records: list[Example] | None,
    formatter: Formatter,
    train_size: int,
    heldback_size: int,
    heldout_size: int,
    max_length: int,
    min_words: int = 15,
    max_words: int = 80,
) -> Splits:
    """A fixed, seeded split: training records whose prompt + answer fit in `max_length` tokens, a
    held-back set of records never trained on, and held-out instructions from another source."""
    rng = random.Random(DATA_SEED)
    order = list(records)
    rng.shuffle(order)
    fitting, rest = [], []
    for ex in order:
        words = len(ex.answer.split())
        if (
            len(fitting) < train_size + heldback_size
            and min_words <= words <= max_words
            and len(formatter.example_ids(ex)[0]) <= max_length
        ):
            fitting.append(ex)
            continue
        rest.append(ex)
    if len(fitting) < min(train_size + heldback_size, 2):
        # nothing fits the length filter (unusual user data): take the records as they come
        fitting = order[: max(train_size + heldback_size, 1)]
        rest = order[len(fitting) :]
    train = fitting[:train_size]
    heldback = fitting[train_size : train_size + heldback_size]
    if heldout_records:
        pool = list(heldout_records)
        random.Random(DATA_SEED).shuffle(pool)
        heldout = pool[:heldout_size]
    else:
        heldout = (heldback + rest)[:heldout_size]
    return Splits(train, heldback, heldout)


@dataclass
class Arm:
    name: str
    alpha: float = 0.0
    distribution: str = "uniform"
    builtin: bool = False  # transformers' own neftune_noise_alpha instead of NEFTuneCallback
    packing: bool = False
    seed: int = 0


@dataclass
class TrainSettings:
    steps: int = 24
    batch_size: int = 4
    max_length: int = 128
    learning_rate: float | None = None  # default: 1e-4 full, 5e-4 LoRA
    full: bool = False
    lora_r: int = 16
    device: str = "cpu"
    logging_steps: int = 5
    clean_loss: bool = False  # our arm also logs neft/clean_loss: one no-noise forward per logged micro-batch
    progress: bool = True

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-4 if self.full else 5e-4


@dataclass
class ArmResult:
    arm: Arm
    train_seconds: float
    log_history: list[dict]
    losses: dict[str, list[float]] = field(default_factory=dict)  # split -> per-example loss
    generations: dict[str, list[str]] = field(default_factory=dict)  # split -> answers

    def summary(self) -> dict:
        out: dict[str, Any] = {"arm": asdict(self.arm), "train_seconds": round(self.train_seconds, 1)}
        for split, values in self.losses.items():
            out[f"loss/{split}"] = measures.nanmean(values)
        for key in ("neft/noise_norm", "neft/embed_norm", "neft/clean_loss"):
            values = [h[key] for h in self.log_history if key in h]
            if values:
                out[key] = measures.mean(values)
        return out


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    return device


def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def load_model(model_dir: str | Path, device: str = "cpu"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.to(device), tokenizer


def train_arm(
    model_dir: str | Path, splits: Splits, arm: Arm, settings: TrainSettings, output_dir: str | Path
) -> tuple[Any, Any, float, list[dict]]:
    """Fine-tune a fresh copy of the model with TRL's SFTTrainer; returns (model, tokenizer, seconds, logs)."""
    import transformers
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from neft_plugins import NEFTuneCallback

    transformers.set_seed(arm.seed)
    device = resolve_device(settings.device)
    model, tokenizer = load_model(model_dir, "cpu")
    formatter = Formatter(tokenizer)
    dataset = Dataset.from_list([formatter.trl_row(ex) for ex in splits.train])
    peft_config = None
    if not settings.full:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=settings.lora_r,
            lora_alpha=2 * settings.lora_r,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    callbacks = []
    if arm.alpha > 0 and not arm.builtin:
        callbacks.append(
            NEFTuneCallback(
                neftune_alpha=arm.alpha,
                neftune_distribution=arm.distribution,
                neftune_clean_loss=settings.clean_loss,
            )
        )
    config = SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=settings.batch_size,
        max_steps=settings.steps,
        learning_rate=settings.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        logging_steps=settings.logging_steps,
        save_strategy="no",
        report_to=[],
        max_length=settings.max_length,
        seed=arm.seed,
        data_seed=arm.seed,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        neftune_noise_alpha=arm.alpha if (arm.builtin and arm.alpha > 0) else None,
        packing=arm.packing,
        disable_tqdm=not settings.progress,
        gradient_checkpointing=False,
        # TRL defaults to bf16 autocast, which is many times slower on CPUs without native bf16.
        bf16=device == "cuda" and _cuda_bf16(),
        fp16=False,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    logs = [dict(h) for h in trainer.state.log_history]
    model = trainer.model
    if peft_config is not None:
        model = model.merge_and_unload()
    model.eval()
    return model.to(device), tokenizer, seconds, logs


def per_example_losses(
    model: Any,
    formatter: Formatter,
    examples: list[Example],
    max_length: int,
    batch_size: int = 8,
    desc: str = "loss",
    progress: bool = True,
) -> list[float]:
    """Mean next-token cross-entropy over each example's answer tokens, model in eval mode (no noise)."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    pad = formatter.tokenizer.pad_token_id
    out: list[float] = []
    batches = range(0, len(examples), batch_size)
    for begin in tqdm(batches, desc=desc, disable=not progress, leave=False):
        rows = [formatter.example_ids(ex) for ex in examples[begin : begin + batch_size]]
        rows = [(ids[:max_length], start) for ids, start in rows]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, start) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
            labels[i, start : len(ids)] = torch.tensor(ids[start:])
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.float()
        shifted = labels[:, 1:].to(device)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), shifted, ignore_index=-100, reduction="none"
        )
        counts = (shifted != -100).sum(dim=1)
        for i in range(len(rows)):
            out.append(float(nll[i].sum() / counts[i]) if counts[i] > 0 else float("nan"))
    return out


def generate(
    model: Any,
    formatter: Formatter,
    instructions: list[str],
    max_new_tokens: int,
    batch_size: int = 8,
    desc: str = "generate",
    progress: bool = True,
) -> list[str]:
    """Greedy answers (no sampling), model in eval mode."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    tokenizer = formatter.tokenizer
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    out: list[str] = []
    batches = range(0, len(instructions), batch_size)
    for begin in tqdm(batches, desc=desc, disable=not progress, leave=False):
        prompts = [formatter.prompt_ids(text) for text in instructions[begin : begin + batch_size]]
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, ids in enumerate(prompts):  # left padding
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            mask[i, width - len(ids) :] = 1
        with torch.no_grad():
            generated = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=eos or None,
            )
        for row in generated[:, width:]:
            out.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return out


@dataclass
class EvalSettings:
    gen_train: int = 16
    gen_heldout: int = 16
    max_new_tokens: int = 96
    batch_size: int = 8
    progress: bool = True


def evaluate_arm(
    model: Any, tokenizer: Any, splits: Splits, train: TrainSettings, ev: EvalSettings
) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    formatter = Formatter(tokenizer)
    # Losses see the whole prompt and up to EVAL_MAX_LENGTH tokens in all: long held-out prompts would
    # otherwise leave no answer token inside the training max_length.
    kw = {
        "max_length": max(train.max_length, EVAL_MAX_LENGTH),
        "batch_size": ev.batch_size,
        "progress": ev.progress,
    }
    losses = {
        "train": per_example_losses(model, formatter, splits.train, desc="loss: training set", **kw),
        "heldback": per_example_losses(model, formatter, splits.heldback, desc="loss: held-back", **kw),
        "heldout": per_example_losses(model, formatter, splits.heldout, desc="loss: AlpacaEval", **kw),
    }
    gkw = {"max_new_tokens": ev.max_new_tokens, "batch_size": ev.batch_size, "progress": ev.progress}
    train_prompts = [ex.instruction for ex in splits.train[: ev.gen_train]]
    heldout_prompts = [ex.instruction for ex in splits.heldout[: ev.gen_heldout]]
    generations = {
        "train": generate(model, formatter, train_prompts, desc="answers: training prompts", **gkw),
        "heldout": generate(model, formatter, heldout_prompts, desc="answers: held-out", **gkw),
        "quantum": generate(model, formatter, [QUANTUM_PROMPT], desc="answers: quantum", **gkw),
    }
    return losses, generations


def run_arm(
    model_dir: str | Path,
    splits: Splits,
    arm: Arm,
    train: TrainSettings,
    ev: EvalSettings,
    output_dir: str | Path,
) -> ArmResult:
    model, tokenizer, seconds, logs = train_arm(model_dir, splits, arm, train, output_dir)
    losses, generations = evaluate_arm(model, tokenizer, splits, train, ev)
    del model
    return ArmResult(arm, seconds, logs, losses, generations)


def loss_differences(a: ArmResult, b: ArmResult, n_boot: int = measures.DEFAULT_BOOTSTRAP) -> list:
    labels = {
        "train": "training loss (noise off)",
        "heldback": "held-back alpaca loss",
        "heldout": "AlpacaEval loss",
    }
    out = []
    for split, label in labels.items():
        if split in a.losses and split in b.losses:
            xa, xb = a.losses[split], b.losses[split]
            keep = [i for i in range(len(xa)) if not (math.isnan(xa[i]) or math.isnan(xb[i]))]
            out.append(
                measures.paired_bootstrap(label, [xa[i] for i in keep], [xb[i] for i in keep], n_boot=n_boot)
            )
    return out
