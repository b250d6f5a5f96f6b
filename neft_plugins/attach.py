"""Attaching NEFTune to a model: read each training pass's batch at the token embeddings, and add the noise
where the model's first block receives them."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from neft_plugins.config import NEFTuneConfig, as_config, check_no_double_noise
from neft_plugins.errors import (
    NEFTuneAttachError,
    NEFTuneConfigError,
    NEFTuneConflictError,
    NEFTuneInputError,
)
from neft_plugins.noise import (
    noise_dtype,
    padded_magnitude,
    per_token_scale,
    scope_mask,
    segment_token_counts,
    without_unsupervised,
)
from neft_plugins.plugins import distributions, plugin_manager, schedules
from neft_plugins.record import NoiseRecord
from neft_plugins.stats import NoiseStats
from neft_plugins.structure import (
    base_model,
    check_no_layer_drop,
    find_decoder,
    find_encoder,
    find_first_block,
    find_input_embeddings,
    model_config,
    module_path,
    placeholder_token_ids,
    unwrap_model,
)

logger = logging.getLogger("neft_plugins")

SEED_STRIDE = 0x9E3779B97F4A7C15  # keeps the per-rank seeds of one run far apart
# Noised first-block inputs kept for activation checkpointing's recompute; more means no backward came.
MAX_REPLAYS = 64

_attached: weakref.WeakKeyDictionary[nn.Module, NEFTuneHandle] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class NoisePlan:
    """What the embedding hook read from a training pass's batch, for the first block to apply."""

    segments: torch.Tensor  # [B, L] sequence ids, 0 = no sequence
    noised: torch.Tensor  # [B, L] positions that get noise
    counts: torch.Tensor  # L_s per segment, as segment_token_counts gives it
    transposed: bool  # the model runs its sequence layout as [L, B] (XLNet)


@dataclass(frozen=True)
class Replay:
    """The noise one first-block pass received, for activation checkpointing to recompute it exactly."""

    data_ptr: int
    shape: torch.Size
    dtype: torch.dtype
    noise: torch.Tensor


def distributed_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class NEFTuneHandle:
    """One attachment of NEFTune to one model. ``detach()`` removes every trace of it.

    The embedding hook reads, on a training pass, which positions get noise and how much (a ``NoisePlan``);
    the first block's pre-hook adds it to the hidden states that block receives, after whatever the model does
    between the two. A model with no stack of blocks, and ``neftune_length: padded`` (transformers' built-in,
    placement included), get the noise at the embedding module's output instead.
    """

    def __init__(
        self,
        model: nn.Module,
        config: NEFTuneConfig,
        sequence_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        self.config = config
        self.sequence_group = sequence_group
        self.encoder = find_encoder(model)
        if self.encoder is not None and config.neftune_scope != "all":
            raise NEFTuneConfigError(
                f"neftune_scope: got {config.neftune_scope!r} for an encoder-decoder model; NEFTune noises the "
                "encoder's input, which is all prompt: use neftune_scope: 'all'"
            )
        self.decoder = find_decoder(model)
        # Encoder-decoders: the embedding module the encoder really runs (T5 on transformers 5 runs its own
        # `embed_tokens`, not the `shared` module get_input_embeddings() returns)...
        self.embeddings, self.embeddings_path = find_input_embeddings(self.encoder or model)
        # ... and the model's own, which a multimodal one (Florence-2) runs before it hands the encoder
        # inputs_embeds: a plan is read from either, outside the decoder's pass.
        watched = [self.embeddings, *([find_input_embeddings(model)[0]] if self.encoder is not None else [])]
        if isinstance(self.embeddings, (nn.ModuleList, nn.ModuleDict)):
            raise NEFTuneAttachError(
                f"{self.embeddings_path} is a {type(self.embeddings).__name__} of several embeddings (one per "
                "codebook), not one token embedding: NEFTune cannot tell which of them carries the text."
            )
        self.placeholder_ids = placeholder_token_ids(model)
        check_no_double_noise(
            {
                "neftune_alpha": config.neftune_alpha,
                "neftune_noise_alpha": getattr(self.embeddings, "neftune_noise_alpha", None),
            }
        )
        if self.embeddings in _attached:
            raise NEFTuneConflictError(
                f"NEFTune is already attached to {self.embeddings_path}; detach it before attaching again"
            )
        stack_root = self.encoder or base_model(model)
        self.first_block = (
            None if config.neftune_length == "padded" else find_first_block(stack_root, self.embeddings)
        )
        if self.first_block is not None:
            check_no_layer_drop(model)
        elif config.neftune_length == "sequence" and model_config(model) is not None:
            raise NEFTuneAttachError(
                f"{type(base_model(model)).__name__}: found no stack of blocks (an nn.ModuleList) that its token "
                f"embeddings {self.embeddings_path} enter, so NEFTune cannot tell where its first block is. Not "
                "supported; report the model to neft-plugins."
            )
        self.noise_site = (
            f"the input of {module_path(stack_root, self.first_block)}"
            if self.first_block is not None
            else f"the output of {self.embeddings_path}"
        )
        self.alpha = config.neftune_alpha
        self.stats = NoiseStats(self)
        self._sample = distributions()[config.neftune_distribution]
        self._schedule = schedules()[config.neftune_schedule]
        # Each model call in progress: its inputs by name, and the embedding runs counted when it began.
        self._calls: list[tuple[dict[str, Any], int]] = []
        self._plan: NoisePlan | None = None  # read at the embeddings, not yet applied at the first block
        self._replays: list[Replay] = []
        self._stack_depth = 0  # inside the encoder (or, where the model names one, the decoder) pass
        self._applied_in_call = False
        self._embedding_runs = 0  # training passes of the embedding module, to tell when a call bypassed it
        self._warned_bypass = False
        self._runs_at_last_read = 0
        self._warned_nothing_noised = False
        self._positional = _positional_names(unwrap_model(model))
        self._generator: torch.Generator | None = None
        self._pending_rng_state: torch.Tensor | None = None
        self._plugins = plugin_manager()
        self._plugins.register(self.stats)
        # Eager even inside torch.compile: observers and schedules must not become graph guards.
        self._hooks = [
            model.register_forward_pre_hook(self._enter_call, with_kwargs=True),
            model.register_forward_hook(self._leave_call, always_call=True),
            *(
                module.register_forward_hook(torch.compiler.disable(self._embedding_hook))
                for module in dict.fromkeys(watched)
            ),
        ]
        if self.first_block is not None:
            self._hooks.append(
                self.first_block.register_forward_pre_hook(
                    torch.compiler.disable(self._first_block_hook), with_kwargs=True
                )
            )
        # Only the encoder's input is noised: on transformers 4.x the decoder runs the same (shared) module.
        stack = self.decoder if self.decoder is not None else self.encoder
        if stack is not None:
            self._hooks += [
                stack.register_forward_pre_hook(self._enter_stack),
                stack.register_forward_hook(self._leave_stack, always_call=True),
            ]
        _attached[self.embeddings] = self
        settings = ", ".join(
            f"{key.removeprefix('neftune_')}={value}" for key, value in config.as_dict().items()
        )
        logger.warning("neft_plugins: attached NEFTune at %s (%s)", self.noise_site, settings)

    def detach(self) -> None:
        if not self._hooks:
            return
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._calls.clear()
        self._plan = None
        self._replays.clear()
        self._plugins.unregister(self.stats)
        _attached.pop(self.embeddings, None)
        logger.warning("neft_plugins: detached NEFTune from %s", self.noise_site)

    def set_step(self, step: int, total_steps: int) -> float:
        """Move the alpha schedule to optimizer step ``step`` of ``total_steps``; returns the alpha in force."""
        self._replays.clear()  # the last step's backward passes are done
        self.alpha = float(self._schedule(self.config.neftune_alpha, step, total_steps))
        return self.alpha

    def read_logs(self) -> dict[str, float]:
        """The ``neft/*`` log entries since the last read; warns once if training passes ran but no token got
        noise (the case a log line alone would not make obvious)."""
        logs = self.stats.read_and_reset(self.alpha)
        ran = self._embedding_runs > self._runs_at_last_read
        self._runs_at_last_read = self._embedding_runs
        if ran and logs["neft/tokens_noised"] == 0 and not self._warned_nothing_noised:
            self._warned_nothing_noised = True
            logger.warning(
                "neft_plugins: no token got noise since the last log although %s ran in training passes: every "
                "sequence had all labels -100 (nothing supervised)%s, or was padding.",
                self.embeddings_path,
                ""
                if self.config.neftune_scope == "all"
                else f", or neftune_scope {self.config.neftune_scope!r} left none",
            )
        return logs

    def rng_state(self) -> torch.Tensor | None:
        """The noise generator's state (None while noise comes from torch's global RNG)."""
        if self._generator is not None:
            return self._generator.get_state()
        return self._pending_rng_state

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        self._pending_rng_state = state
        if self._generator is not None and state is not None:
            self._generator.set_state(state)

    def _enter_call(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        # Every input, by name: segment readers (plugins included) pick what they understand.
        call = dict(kwargs)
        call.update(zip(self._positional, args, strict=False))
        if not self._calls:
            self._plan, self._applied_in_call = None, False
        self._calls.append((call, self._embedding_runs))

    def _leave_call(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not self._calls:
            return
        _, runs_before = self._calls.pop()
        if self._calls:
            return
        plan, self._plan = self._plan, None
        if plan is not None and output is not None and not self._applied_in_call:
            raise NEFTuneInputError(
                f"{type(module).__name__}: a training pass ran {self.embeddings_path} but not "
                f"{self.noise_site.removeprefix('the input of ')}, where NEFTune adds its noise, so it got none. "
                "The model routes its embeddings around its first block; attach to a model whose blocks run in "
                "order, or report the model to neft-plugins."
            )
        trained = module.training and torch.is_grad_enabled() and self.alpha > 0
        if trained and self._embedding_runs == runs_before and not self._warned_bypass:
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

    def _in_decoder(self) -> bool:
        if self.decoder is not None:
            return self._stack_depth > 0
        return self.encoder is not None and self._stack_depth == 0

    def _embedding_hook(self, module: nn.Module, args: tuple, output: Any) -> torch.Tensor | None:
        if self.alpha <= 0 or not (module.training and torch.is_grad_enabled()):
            return None
        if self._in_decoder():
            return None  # the decoder's teacher-forced input: not the instruction
        self._embedding_runs += 1
        if not isinstance(output, torch.Tensor) or output.dim() != 3:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise NEFTuneInputError(
                f"{self.embeddings_path} returned {shape}; NEFTune needs a [batch, sequence, dim] tensor. "
                "Attach to a model whose get_input_embeddings() is the token embedding module."
            )
        call = self._calls[-1][0] if self._calls else {}
        transposed = self._transposed(call, args)
        embedded = output.transpose(0, 1) if transposed else output
        plan = self._read_plan(call, (embedded.shape[0], embedded.shape[1]), embedded.device, transposed)
        if self.config.neftune_length == "padded":
            return output + self._padded_noise(output, embedded, plan)
        if self.first_block is None:
            return self._add_noise(output, plan)
        self._plan = plan
        return None

    def _first_block_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        hidden, rebuild = _hidden_states(args, kwargs)
        if self._plan is not None:
            plan, self._plan = self._plan, None
            self._applied_in_call = True
            if hidden is None:
                raise NEFTuneInputError(
                    f"{self.noise_site.removeprefix('the input of ')} was called without a hidden-states "
                    "tensor, so NEFTune has nothing to add its noise to."
                )
            noised = self._add_noise(hidden, plan)
            if _may_recompute(module):
                self._keep_for_recompute(hidden, noised - hidden)
            return rebuild(noised)
        if hidden is not None and self._replays and torch._C._current_graph_task_id() != -1:
            noise = self._replay_for(hidden)
            if noise is not None:
                return rebuild(hidden + noise)
        return None

    def _transposed(self, call: Mapping[str, Any], args: tuple) -> bool:
        """Whether the model embeds its ids as ``[L, B]`` (XLNet); refuses ids the model re-laid otherwise."""
        input_ids, embedded_ids = call.get("input_ids"), args[0] if args else None
        if not isinstance(input_ids, torch.Tensor) or not isinstance(embedded_ids, torch.Tensor):
            return False
        if input_ids.dim() != 2 or embedded_ids is input_ids:
            return False
        rows, length = input_ids.shape
        if embedded_ids.shape == input_ids.shape:
            # A square batch cannot tell a transposed layout by shape (the only case that syncs).
            return (
                rows == length
                and torch.equal(embedded_ids, input_ids.T)
                and not torch.equal(embedded_ids, input_ids)
            )
        if embedded_ids.shape == (length, rows):
            return True
        raise NEFTuneInputError(
            f"{self.embeddings_path} embedded token ids of shape {tuple(embedded_ids.shape)} for input_ids of "
            f"shape {tuple(input_ids.shape)}: the model adds or removes tokens before its embeddings (CPM-Ant "
            "prepends prompt tokens), so NEFTune cannot line the batch's masks up with them. Refusing rather than "
            "noise the wrong positions."
        )

    def _read_plan(
        self, call: Mapping[str, Any], batch_shape: tuple[int, int], device: torch.device, transposed: bool
    ) -> NoisePlan:
        segments = self._plugins.hook.neft_read_segments(inputs=call, batch_shape=batch_shape).to(device)
        segments = segments * self._text_positions(call, batch_shape, segments.device)
        labels = call.get("labels")
        # An encoder-decoder's labels are the decoder's: they say nothing about the encoder's positions.
        aligned = self.encoder is None and isinstance(labels, torch.Tensor) and labels.shape == batch_shape
        labels = labels if aligned else None
        if labels is not None:
            segments = without_unsupervised(segments, labels)
        try:
            noised = scope_mask(segments, labels, self.config.neftune_scope)
        except ValueError as error:
            raise NEFTuneInputError(str(error)) from error
        counts = self._token_counts(segments, noised) if self.config.neftune_length == "sequence" else None
        return NoisePlan(segments, noised, counts, transposed)

    def _add_noise(self, hidden: torch.Tensor, plan: NoisePlan) -> torch.Tensor:
        """``hidden`` plus ``alpha / sqrt(L_s * d)`` noise per sequence (d: ``hidden``'s width), recorded."""
        received = hidden.transpose(0, 1) if plan.transposed else hidden
        if received.dim() != 3 or tuple(received.shape[:2]) != tuple(plan.segments.shape):
            raise NEFTuneInputError(
                f"{self.noise_site.removeprefix('the input of ')} received hidden states of shape "
                f"{tuple(hidden.shape)} for a batch of {tuple(plan.segments.shape)} tokens: the model inserts, "
                "removes or re-lays positions between its embeddings and its first block, so NEFTune cannot line "
                "the batch's masks up with them. Refusing rather than noise the wrong positions."
            )
        scale = per_token_scale(plan.segments, plan.noised, self.alpha, received.shape[2], plan.counts)
        buffer = torch.empty(received.shape, dtype=noise_dtype(received), device=received.device)
        noise = self._sample(buffer, 1.0, self._generator_for(received.device))
        noise.mul_(scale.to(noise.dtype).unsqueeze(-1))
        self._observe(received, noise, plan.segments, plan.noised, plan.noised.sum())
        noise = noise.to(hidden.dtype)
        return hidden + (noise.transpose(0, 1) if plan.transposed else noise)

    def _padded_noise(self, output: torch.Tensor, embedded: torch.Tensor, plan: NoisePlan) -> torch.Tensor:
        """transformers' built-in noise, bit for bit: padded length, every position, at the module's output."""
        magnitude = padded_magnitude(self.alpha, output.shape[1], output.shape[2])
        noise = self._sample(torch.empty_like(output), magnitude, self._generator_for(output.device))
        received = noise.transpose(0, 1) if plan.transposed else noise
        tokens = plan.segments.new_tensor(plan.segments.numel())
        self._observe(embedded, received, plan.segments, plan.segments > 0, tokens)
        return noise

    def _observe(
        self,
        clean: torch.Tensor,
        noise: torch.Tensor,
        segments: torch.Tensor,
        measured: torch.Tensor,
        tokens: torch.Tensor,
    ) -> None:
        record = NoiseRecord.measure(self, self.alpha, clean, noise, segments, measured, tokens)
        self._plugins.hook.neft_observe(record=record)

    def _keep_for_recompute(self, hidden: torch.Tensor, noise: torch.Tensor) -> None:
        self._replays.append(Replay(hidden.data_ptr(), hidden.shape, hidden.dtype, noise))
        del self._replays[:-MAX_REPLAYS]

    def _replay_for(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """The noise a checkpointed first block got in its forward pass, now that backward recomputes it."""
        same = [each for each in self._replays if each.shape == hidden.shape and each.dtype == hidden.dtype]
        exact = [each for each in same if each.data_ptr == hidden.data_ptr()]
        if not exact and len(same) > 1:
            raise NEFTuneInputError(
                f"activation checkpointing recomputes {self.noise_site.removeprefix('the input of ')} for one of "
                f"{len(same)} noised passes of the same shape whose inputs were moved (offloaded), and NEFTune "
                "cannot tell which: run backward after each forward pass, or turn activation offloading off."
            )
        chosen = (exact or same or [None])[-1]
        if chosen is not None:
            self._replays.remove(chosen)
            return chosen.noise
        return None

    def _text_positions(
        self, call: Mapping[str, Any], batch_shape: tuple[int, int], device: torch.device
    ) -> Any:
        """False at media placeholders (their embeddings are replaced by image/video/audio features): they get
        no noise and do not count in L. 1 when the model has none."""
        input_ids = call.get("input_ids")
        if (
            not self.placeholder_ids
            or not isinstance(input_ids, torch.Tensor)
            or input_ids.shape != batch_shape
        ):
            return 1
        placeholders = torch.tensor(self.placeholder_ids, device=input_ids.device)
        return ~torch.isin(input_ids, placeholders).to(device)

    def _token_counts(self, segments: torch.Tensor, noised: torch.Tensor) -> torch.Tensor:
        """L_s per segment; under context parallelism, summed over the ranks that hold the sequence's slices."""
        counts = segment_token_counts(segments, noised)
        if self.sequence_group is None:
            return counts
        if bool((segments > 1).any()):
            raise NEFTuneInputError(
                "packed rows under context parallelism: each rank holds a slice of the row, so its sequences "
                "cannot be told apart locally. Turn packing off, or context parallelism off, with NEFTune."
            )
        torch.distributed.all_reduce(counts, group=self.sequence_group)
        return counts

    def _generator_for(self, device: torch.device) -> torch.Generator | None:
        rank, world_size = distributed_rank()
        if self.config.neftune_seed is None and world_size == 1:
            return None  # torch's global RNG, as transformers' built-in
        if self._generator is None or self._generator.device != device:
            base_seed = torch.initial_seed() if self.config.neftune_seed is None else self.config.neftune_seed
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed((base_seed + rank * SEED_STRIDE) % 2**64)
            if self._pending_rng_state is not None:
                self._generator.set_state(self._pending_rng_state)
        return self._generator


def _hidden_states(
    args: tuple, kwargs: dict[str, Any]
) -> tuple[torch.Tensor | None, Callable[[torch.Tensor], tuple[tuple, dict]]]:
    """A block's hidden-states input (``hidden_states=`` or its first tensor argument), and how to call the
    block with a replacement for it."""
    if isinstance(kwargs.get("hidden_states"), torch.Tensor):
        return kwargs["hidden_states"], lambda new: (args, {**kwargs, "hidden_states": new})
    index = next((i for i, arg in enumerate(args) if isinstance(arg, torch.Tensor)), None)
    if index is None:
        return None, lambda new: (args, kwargs)
    return args[index], lambda new: ((*args[:index], new, *args[index + 1 :]), kwargs)


def _may_recompute(block: nn.Module) -> bool:
    """Whether activation checkpointing may run ``block`` again in backward: its forward runs without autograd
    (reentrant checkpointing, DeepSpeed's, offloading functions) or under saved-tensor hooks (non-reentrant)."""
    return (
        not torch.is_grad_enabled()
        or torch._C._autograd._top_saved_tensors_default_hooks(False) is not None
        or bool(getattr(block, "gradient_checkpointing", False))
    )


def _positional_names(model: nn.Module) -> tuple[str, ...]:
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def attach(
    model: nn.Module,
    config: NEFTuneConfig | None = None,
    *,
    sequence_group: torch.distributed.ProcessGroup | None = None,
    **keys: Any,
) -> NEFTuneHandle:
    """Attach NEFTune to ``model``: ``attach(model, neftune_alpha=5)`` or ``attach(model, config)``.

    ``sequence_group``: the context-parallel group whose ranks each hold a slice of every sequence; L is
    then counted over the whole sequence, across the group.
    """
    return NEFTuneHandle(model, as_config(config, keys), sequence_group)


@contextlib.contextmanager
def neftune(
    model: nn.Module,
    config: NEFTuneConfig | None = None,
    *,
    sequence_group: torch.distributed.ProcessGroup | None = None,
    **keys: Any,
) -> Iterator[NEFTuneHandle]:
    """``with neftune(model, neftune_alpha=5): ...`` noises training forward passes inside the block only."""
    handle = attach(model, config, sequence_group=sequence_group, **keys)
    try:
        yield handle
    finally:
        handle.detach()
