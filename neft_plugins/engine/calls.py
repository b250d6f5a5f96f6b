"""Which model call is running: its inputs by name (what the segment readers read), and whether the decoder of
an encoder-decoder is running. The handle is told when an outermost call starts and ends."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

logger = logging.getLogger("neft_plugins")


class CallTracker:
    """Pre/post hooks on the model (and on the decoder, or the encoder where no decoder is named)."""

    def __init__(
        self,
        model: nn.Module,
        encoder: nn.Module | None,
        decoder: nn.Module | None,
        embeddings_path: str,
        on_start: Callable[[], None],
        on_end: Callable[[nn.Module, Any], None],
    ) -> None:
        self.encoder, self.decoder = encoder, decoder
        self.embeddings_path = embeddings_path
        self.embedding_runs = 0  # training passes of the embedding module, to tell when a call bypassed it
        self._runs_at_last_read = 0
        self._on_start, self._on_end = on_start, on_end
        self._calls: list[tuple[dict[str, Any], int]] = []
        self._stack_depth = 0
        self._warned_bypass = False
        self._positional = _positional_names(model)

    def register(self, model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        hooks = [
            model.register_forward_pre_hook(self._enter_call, with_kwargs=True),
            model.register_forward_hook(self._leave_call, always_call=True),
        ]
        # Only the encoder's input is noised: on transformers 4.x the decoder runs the same (shared) module.
        stack = self.decoder if self.decoder is not None else self.encoder
        if stack is not None:
            hooks += [
                stack.register_forward_pre_hook(self._enter_stack),
                stack.register_forward_hook(self._leave_stack, always_call=True),
            ]
        return hooks

    @property
    def inputs(self) -> dict[str, Any]:
        """The running call's inputs by name (empty outside a call)."""
        return self._calls[-1][0] if self._calls else {}

    def in_decoder(self) -> bool:
        if self.decoder is not None:
            return self._stack_depth > 0
        return self.encoder is not None and self._stack_depth == 0

    def clear(self) -> None:
        self._calls.clear()

    def count_embedding_run(self) -> None:
        """A training pass ran the embedding module (not counted inside a compiled graph: a counter is a guard)."""
        self.embedding_runs += 1

    def reset_runs(self) -> None:
        self.embedding_runs = 0

    def ran_since_last_read(self) -> bool:
        """Whether a training pass ran the embedding module since the last time this was asked."""
        ran = self.embedding_runs > self._runs_at_last_read
        self._runs_at_last_read = self.embedding_runs
        return ran

    def _enter_call(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        # Every input, by name: segment readers (plugins included) pick what they understand.
        call = dict(kwargs)
        call.update(zip(self._positional, args, strict=False))
        if not self._calls:
            self._on_start()
        self._calls.append((call, self.embedding_runs))

    def _leave_call(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not self._calls:
            return
        _, runs_before = self._calls.pop()
        if self._calls:
            return
        self._on_end(module, output)
        # output None: the call raised, and says why itself.
        trained = module.training and torch.is_grad_enabled() and not torch.compiler.is_compiling()
        trained = trained and output is not None
        if trained and self.embedding_runs == runs_before and not self._warned_bypass:
            self._warned_bypass = True
            logger.warning(
                "neft_plugins: a training forward pass of %s did not run %s, so it got no noise: the model was "
                "called with inputs_embeds (or encoder_outputs), or its forward bypasses get_input_embeddings(). "
                "Pass input_ids, or attach to the model whose embeddings run.",
                type(module).__name__,
                self.embeddings_path,
            )

    def _enter_stack(self, module: nn.Module, args: tuple) -> None:
        self._stack_depth += 1

    def _leave_stack(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._stack_depth -= 1


def _positional_names(model: nn.Module) -> tuple[str, ...]:
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return ()
    return tuple(
        p.name for p in parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    )
