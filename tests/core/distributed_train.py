"""Run under torchrun (2 CPU processes, gloo); each rank writes the per-sequence noise norms it applied.

Arguments: OUTPUT_DIR SEED|none ddp|fsdp2
- ddp: TRL's SFTTrainer with NEFTuneCallback (the Trainer wraps the model in DistributedDataParallel).
- fsdp2: torch's fully_shard on every decoder layer and the model, in a hand-written loop with
  ``neftune()`` (accelerate does not offer FSDP on CPU: its MULTI_CPU mode excludes it).
Every rank gets identical batches, so any difference in noise comes from the noise streams alone.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from neft_plugins import NEFTuneCallback, hookimpl, neftune
from neft_plugins.plugins import plugin_manager
from support.distributed import leave_process_group
from support.tiny import make_llama, make_tokenizer, short_run_args

TEXT = "the quick cat and the slow dog " * 3


class Collect:
    def __init__(self):
        self.norms = []

    @hookimpl
    def neft_observe(self, record):
        self.norms += record.sequence_noise_norms().tolist()


def train_ddp(output: Path, seed: int | None) -> str:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    trainer = SFTTrainer(
        model=make_llama(),
        args=short_run_args(
            SFTConfig,
            output / "out",
            max_steps=2,
            per_device_train_batch_size=2,
            use_cpu=True,
            ddp_backend="gloo",
            max_length=64,
        ),
        train_dataset=Dataset.from_list([{"text": TEXT}] * 16),
        processing_class=make_tokenizer(),
        callbacks=[NEFTuneCallback(neftune_alpha=5, neftune_seed=seed)],
    )
    trainer.train()
    return type(trainer.model_wrapped).__name__


def train_fsdp2(seed: int | None) -> str:
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    model = make_llama()
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    batch = make_tokenizer()([TEXT, TEXT], return_tensors="pt")
    with neftune(model, neftune_alpha=5, neftune_seed=seed):
        for _ in range(2):
            model(**batch, labels=batch["input_ids"]).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return type(model).__name__


def main() -> None:
    output, seed, strategy = (
        Path(sys.argv[1]),
        None if sys.argv[2] == "none" else int(sys.argv[2]),
        sys.argv[3],
    )
    collect = Collect()
    plugin_manager().register(collect)
    wrapper = train_ddp(output, seed) if strategy == "ddp" else train_fsdp2(seed)
    assert dist.get_world_size() == 2
    record = {"norms": collect.norms, "torch_seed": torch.initial_seed(), "wrapper": wrapper}
    (output / f"rank{dist.get_rank()}.json").write_text(json.dumps(record))
    leave_process_group()


if __name__ == "__main__":
    main()
