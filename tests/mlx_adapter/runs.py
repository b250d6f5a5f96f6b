"""`neft-mlx lora` run in this process (its console script's `main`), with the spy on the model MLX-LM loads and
the validation losses it computes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlx_adapter.spy import FirstBlockSpy


@dataclass
class LoraRun:
    status: int
    spy: FirstBlockSpy | None
    val_losses: list[float] = field(default_factory=list)
    reports: list[dict] = field(default_factory=list)  # MLX-LM's training reports, ours added
    adapter_path: Path | None = None


def run_lora(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path, data_dir: Path, adapter_path: Path, *extra: str
) -> LoraRun:
    import mlx_lm.lora as mlx_lora
    from mlx_lm.tuner import trainer

    from neft_plugins.integrations.mlx.cli import main

    run = LoraRun(status=-1, spy=None, adapter_path=adapter_path)
    load, evaluate = mlx_lora.load, trainer.evaluate

    def spied_load(*args, **kwargs):
        model, tokenizer = load(*args, **kwargs)
        run.spy = FirstBlockSpy(model)
        return model, tokenizer

    def recorded_evaluate(*args, **kwargs):
        loss = evaluate(*args, **kwargs)
        run.val_losses.append(loss)
        return loss

    monkeypatch.setattr(mlx_lora, "load", spied_load)

    class ToTheSpy(trainer.TrainingCallback):  # MLX-LM makes its callback before it loads the model
        def on_train_loss_report(self, train_info: dict) -> None:
            run.spy.on_train_loss_report(train_info)
            run.reports.append(train_info)

    monkeypatch.setattr(mlx_lora, "get_reporting_callbacks", lambda *args, **kwargs: ToTheSpy())
    monkeypatch.setattr(trainer, "evaluate", recorded_evaluate)
    argv: Sequence[str] = (
        "lora",
        "--model",
        str(model_dir),
        "--train",
        "--data",
        str(data_dir),
        "--batch-size",
        "4",
        "--num-layers",
        "2",
        "--steps-per-report",
        "1",
        "--val-batches",
        "2",
        "--max-seq-length",
        "64",
        "--adapter-path",
        str(adapter_path),
        *extra,
    )
    try:
        run.status = main(list(argv))
    finally:
        if run.spy is not None:
            run.spy.remove()
    return run
