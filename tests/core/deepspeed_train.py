"""Run under torchrun (2 CPU processes, gloo): TRL's SFTTrainer with NEFTuneCallback on a DeepSpeed ZeRO engine.

Arguments: OUTPUT_DIR STAGE MAX_STEPS [CHECKPOINT]
- STAGE: 2, 3, or 3-offload (ZeRO-3 with parameters and optimizer states offloaded to the CPU).
- CHECKPOINT: resume from it (``trainer.train(resume_from_checkpoint=...)``).
A checkpoint is saved every 2 steps. Rank 0 writes ``result.json``: the engine, how the embedding weight is held,
the losses and the trainer's log history.
"""

import json
import os
import sys
from pathlib import Path

from datasets import Dataset
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from neft_plugins import NEFTuneCallback
from support.deepspeed import deepspeed_config
from support.distributed import leave_process_group
from support.tiny import make_llama, make_tokenizer, short_run_args, text_records


class EmbeddingLayout(TrainerCallback):
    """How the embedding weight is held between steps: ZeRO-3 leaves each rank an empty local shard."""

    def __init__(self) -> None:
        self.local_numel: int | None = None
        self.full_shape: list[int] | None = None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        weight = model.get_input_embeddings().weight
        self.local_numel = weight.numel()
        self.full_shape = list(getattr(weight, "ds_shape", weight.shape))


def deepspeed_state_on_gloo() -> None:
    """accelerate starts DeepSpeed's process group with the device's backend, and the CPU has none: it then counts
    1 process of the 2, and TRL's gathers of its metrics fail. A GPU gets nccl here; the CPU is given gloo."""
    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(backend="gloo")
    del os.environ["ACCELERATE_USE_DEEPSPEED"]


def main() -> None:
    deepspeed_state_on_gloo()
    output, stage, max_steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    checkpoint = sys.argv[4] if len(sys.argv) > 4 else None
    layout = EmbeddingLayout()
    trainer = SFTTrainer(
        model=make_llama(),
        args=short_run_args(
            SFTConfig,
            output / "out",
            max_steps=max_steps,
            per_device_train_batch_size=4,
            save_strategy="steps",
            save_steps=2,
            learning_rate=1e-3,
            max_length=64,
            seed=3,
            bf16=False,  # TRL's default; DeepSpeed's CPU accelerator trains in float32
            accelerator_config={"use_configured_state": True},
            deepspeed=deepspeed_config(stage),
        ),
        # Rows of 3 to 30 words, padded to the longest of each batch.
        train_dataset=Dataset.from_list(text_records(64, lengths=(3, 30))),
        processing_class=make_tokenizer(),
        callbacks=[NEFTuneCallback(neftune_alpha=5, neftune_seed=11), layout],
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.is_world_process_zero():
        result = {
            "engine": type(trainer.model_wrapped).__name__,
            "embedding_local_numel": layout.local_numel,
            "embedding_full_shape": layout.full_shape,
            "log_history": trainer.state.log_history,
        }
        (output / "result.json").write_text(json.dumps(result))
    leave_process_group()


if __name__ == "__main__":
    main()
