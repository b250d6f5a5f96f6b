"""Unsloth's GPU code path on a CPU, as far as it runs there: started by ``test_gpu_path.py`` with
``UNSLOTH_ALLOW_CPU=1`` (Unsloth's test-only mode that keeps its CUDA code path on a CPU) in a temporary working
directory (Unsloth writes its generated trainer to ``unsloth_compiled_cache/`` there).

``python gpu_path_sft.py MODEL_DIR OUTPUT_DIR``:
1. ``FastLanguageModel.from_pretrained`` on the folder: it fails here; the error is printed.
2. TRL's SFTTrainer rewritten as Unsloth rewrites it on a GPU (``unsloth.models.rl``, which ``UNSLOTH_ALLOW_CPU``
   skips at import): the class names are printed.
3. That trainer with ``NEFTuneCallback(neftune_alpha=5)`` and Unsloth's ``neftune_noise_alpha=5`` in the config:
   the refusal is printed.
4. Two LoRA runs of the tiny Llama (stock transformers + PEFT: Unsloth's loader does not run here) with that trainer
   and padding-free batches (one row, ``position_ids`` restarting per sequence), as Unsloth turns them on for SFT
   on a GPU: ``ours`` (our callback) and ``builtin`` (``neftune_noise_alpha=5`` alone). What the first decoder layer
   got on each training pass is written to ``OUTPUT_DIR/<run>.jsonl`` (``support.spy.Pass``), the logs to
   ``OUTPUT_DIR/<run>-logs.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import unsloth  # noqa: F401  # first, as Unsloth asks
from datasets import Dataset
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from unsloth import FastLanguageModel
from unsloth.models import rl
from unsloth_runs import MAX_LENGTH, sft_records

from neft_plugins import NEFTuneCallback, NEFTuneConflictError
from support.tiny import make_lora, short_run_args
from support.trainer_spy import SpyCallback

ALPHA = 5.0


def main(model_dir: str, output_dir: Path) -> None:
    try:
        FastLanguageModel.from_pretrained(model_dir, max_seq_length=MAX_LENGTH, load_in_4bit=False)
    except AssertionError as error:  # its GPU loader asks torch.cuda for the device's properties
        print(f"FastLanguageModel.from_pretrained: {type(error).__name__}: {error}")
    rl._patch_trl_rl_trainers("sft_trainer")
    import trl

    print(f"rewritten: {trl.SFTTrainer.__name__} ({trl.SFTTrainer.__module__})")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = Dataset.from_list(sft_records())

    def trainer(callbacks: list, **settings: object) -> trl.SFTTrainer:
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), make_lora())
        defaults = {"max_steps": 2, "per_device_train_batch_size": 4, "max_length": MAX_LENGTH, "seed": 0}
        args = short_run_args(trl.SFTConfig, output_dir / "out", use_cpu=True, **{**defaults, **settings})
        return trl.SFTTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks
        )

    try:
        trainer([NEFTuneCallback(neftune_alpha=ALPHA)], neftune_noise_alpha=ALPHA)
    except NEFTuneConflictError as error:
        print(f"refused: {error}")
    neftune = NEFTuneCallback(neftune_alpha=ALPHA)
    runs = {
        "ours": (SpyCallback(neftune), [neftune], {}),
        "builtin": (SpyCallback(), [], {"neftune_noise_alpha": ALPHA}),
    }
    for name, (spy, callbacks, settings) in runs.items():
        run = trainer([*callbacks, spy], padding_free=True, **settings)
        run.train()
        lines = [each.to_json() for each in spy.training_passes()]
        (output_dir / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
        logs = [entry for entry in run.state.log_history if "loss" in entry]
        (output_dir / f"{name}-logs.json").write_text(json.dumps(logs))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
