"""DeepSpeed ZeRO-3 through SFTTrainer. DeepSpeed's ZeRO-3 needs a GPU: skipped on CPU machines (CI).
The unwrapping through the engine's structure is tested on CPU in test_attach.py."""

import pytest
import torch
from datasets import Dataset

from support.noise import assert_near_paper_norm
from support.tiny import make_llama, make_tokenizer, short_run_args, text_records

deepspeed = pytest.importorskip("deepspeed")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="DeepSpeed ZeRO-3 needs a GPU")

ZERO3 = {
    "zero_optimization": {"stage": 3},
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
}


def test_zero3_engine_is_noised_per_sequence(tmp_path, monkeypatch, recorder, assert_noise_norms):
    from trl import SFTConfig, SFTTrainer

    from neft_plugins import NEFTuneCallback

    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29517",
        "RANK": "0",
        "LOCAL_RANK": "0",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WORLD_SIZE", "1")
    trainer = SFTTrainer(
        model=make_llama(),
        args=short_run_args(
            SFTConfig, tmp_path, max_steps=2, per_device_train_batch_size=4, deepspeed=ZERO3, max_length=64
        ),
        train_dataset=Dataset.from_list(text_records(16, lengths=(3, 30))),
        processing_class=make_tokenizer(),
        callbacks=[NEFTuneCallback(neftune_alpha=5)],
    )
    trainer.train()
    assert type(trainer.model_wrapped).__name__ == "DeepSpeedEngine"
    assert len(recorder.records) == 2
    assert_noise_norms(recorder.sequence_noise_norms().cpu(), 5.0, 3 * 64)
    logged = [e["neft/noise_norm"] for e in trainer.state.log_history if "loss" in e]
    assert_near_paper_norm(logged, 5.0, rel=0.1)
