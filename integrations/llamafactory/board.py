"""LLaMA Board shows a run's ``running_log.txt``; this puts neft-plugins' lines and metrics there too."""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger("neft_plugins.integrations.llamafactory")


class LlamaBoardLogBridge(TrainerCallback):
    """Copies the ``neft_plugins`` log lines and each logging step's ``neft/*`` metrics to LLaMA Board.

    LLaMA-Factory's ``LogCallback`` adds a handler writing ``running_log.txt`` to its own loggers when
    ``LLAMABOARD_ENABLED`` is set; the same handler is added to the ``neft_plugins`` logger here.
    """

    def __init__(self) -> None:
        self.handlers: list[logging.Handler] = []

    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        ours = logging.getLogger("neft_plugins")
        for handler in logging.getLogger("llamafactory").handlers:
            if type(handler).__name__ == "LoggerHandler" and handler not in ours.handlers:
                ours.addHandler(handler)
                self.handlers.append(handler)
        if self.handlers:
            logger.setLevel(logging.INFO)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any):
        metrics = {key: value for key, value in (logs or {}).items() if key.startswith("neft/")}
        if metrics and self.handlers:
            logger.info(
                "neft_plugins: step %d: %s",
                state.global_step,
                ", ".join(f"{key}={value:.4g}" for key, value in metrics.items()),
            )
