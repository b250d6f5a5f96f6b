"""Run under torchrun (2 CPU processes, gloo): SFT with NEFTuneCallback; each rank writes what it noised."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.distributed as dist
from datasets import Dataset
from tiny import make_llama, make_tokenizer
from trl import SFTConfig, SFTTrainer

from neft_plugins import NEFTuneCallback, hookimpl
from neft_plugins.plugins import plugin_manager

output, seed = Path(sys.argv[1]), (None if sys.argv[2] == "none" else int(sys.argv[2]))


class Collect:
    def __init__(self):
        self.norms = []

    @hookimpl
    def neft_observe(self, record):
        self.norms += record.sequence_noise_norms().tolist()


collect = Collect()
plugin_manager().register(collect)
# Every rank gets identical batches, so any difference in noise comes from the noise streams alone.
dataset = Dataset.from_list([{"text": "the quick cat and the slow dog " * 3}] * 16)
model = make_llama()
trainer = SFTTrainer(
    model=model,
    args=SFTConfig(
        output_dir=str(output / "out"),
        max_steps=2,
        per_device_train_batch_size=2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        ddp_backend="gloo",
        max_length=64,
    ),
    train_dataset=dataset,
    processing_class=make_tokenizer(),
    callbacks=[NEFTuneCallback(neftune_alpha=5, neftune_seed=seed)],
)
trainer.train()
rank = dist.get_rank()
assert dist.get_world_size() == 2
(output / f"rank{rank}.json").write_text(
    json.dumps({"norms": collect.norms, "torch_seed": torch.initial_seed()})
)
