"""Attaching NEFTune to a model: read each training pass's batch at the token embeddings, and add the noise
where the model's first block receives them."""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from neft_plugins import opaque
from neft_plugins.calls import CallTracker, NoisePlan
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
from neft_plugins.record import NoiseRecord, measure
from neft_plugins.stats import NoiseStats
from neft_plugins.stream import NoiseStream, Replays, may_recompute
from neft_plugins.structure import (
    base_model,
    check_no_layer_drop,
    encoder_embeddings,
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

_attached: weakref.WeakKeyDictionary[nn.Module, NEFTuneHandle] = weakref.WeakKeyDictionary()


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
        try:
            self.embeddings, self.embeddings_path = find_input_embeddings(self.encoder or model)
        except NEFTuneAttachError:
            if self.encoder is None:
                raise
            # An encoder that does not name its embeddings (Pegasus, Blenderbot, SeamlessM4T on 4.x; FSMT) runs
            # the model's, or a module that shares their weight.
            self.embeddings, self.embeddings_path = encoder_embeddings(self.encoder, model)
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
        block_path = module_path(stack_root, self.first_block) if self.first_block is not None else None
        self.noise_site = (
            f"the input of {block_path}" if block_path else f"the output of {self.embeddings_path}"
        )
        self.alpha = config.neftune_alpha
        self._noising = self.alpha > 0  # a bool, not alpha: a compiled graph guards on it, and alpha changes
        self.stats = NoiseStats(self)
        self._sample = distributions()[config.neftune_distribution]
        self._schedule = schedules()[config.neftune_schedule]
        self.calls = CallTracker(
            unwrap_model(model), self.encoder, self.decoder, self.embeddings_path, block_path
        )
        self.stream = NoiseStream(config.neftune_seed)
        self.replays = Replays(block_path or self.embeddings_path)
        self._runs_at_last_read = 0
        self._ids_transposed = (
            False  # learnt from each batch's ids, kept for a compiled graph's square batches
        )
        self._block_transposed = False  # learnt from the first non-square batch
        self._warned_nothing_noised = False
        self._plugins = plugin_manager()
        self._plugins.register(self.stats)
        opaque.register(id(self), self._draw, self._observe_measured)
        self._hooks = [
            *self.calls.register(model),
            *(module.register_forward_hook(self._embedding_hook) for module in dict.fromkeys(watched)),
        ]
        if self.first_block is not None:
            self._hooks.append(
                self.first_block.register_forward_pre_hook(self._first_block_hook, with_kwargs=True)
            )
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
        self.calls.clear()
        self.replays.clear()
        self._plugins.unregister(self.stats)
        opaque.unregister(id(self))
        _attached.pop(self.embeddings, None)
        logger.warning("neft_plugins: detached NEFTune from %s", self.noise_site)

    def set_step(self, step: int, total_steps: int) -> float:
        """Move the alpha schedule to optimizer step ``step`` of ``total_steps``; returns the alpha in force."""
        self.replays.clear()  # the last step's backward passes are done
        self.alpha = float(self._schedule(self.config.neftune_alpha, step, total_steps))
        self._noising = self.alpha > 0
        return self.alpha

    def read_logs(self) -> dict[str, float]:
        """The ``neft/*`` log entries since the last read; warns once if training passes ran but no token got
        noise (the case a log line alone would not make obvious)."""
        observed = self.stats.records
        logs = self.stats.read_and_reset(self.alpha)
        # Inside a compiled graph the runs are not counted (a counter would be a guard): its records tell.
        ran = self.calls.embedding_runs > self._runs_at_last_read or observed > 0
        self._runs_at_last_read = self.calls.embedding_runs
        if ran and self.alpha > 0 and logs["neft/tokens_noised"] == 0 and not self._warned_nothing_noised:
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
        return self.stream.state()

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        self.stream.set_state(state)

    def _embedding_hook(self, module: nn.Module, args: tuple, output: Any) -> torch.Tensor | None:
        if not (module.training and torch.is_grad_enabled()) or self.calls.in_decoder():
            return None  # not a training pass, or the decoder's teacher-forced input: not the instruction
        if not torch.compiler.is_compiling():
            self.calls.embedding_runs += 1
        if not self._noising:
            return None
        if not isinstance(output, torch.Tensor) or output.dim() != 3:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise NEFTuneInputError(
                f"{self.embeddings_path} returned {shape}; NEFTune needs a [batch, sequence, dim] tensor. "
                "Attach to a model whose get_input_embeddings() is the token embedding module."
            )
        call = self.calls.inputs
        transposed = self._transposed(call, args)
        embedded = output.transpose(0, 1) if transposed else output
        plan = self._read_plan(call, (embedded.shape[0], embedded.shape[1]), embedded.device, transposed)
        if self.config.neftune_length == "padded":
            return output + self._padded_noise(output, embedded, plan)
        if self.first_block is None:
            return output + self._noise_for(output, plan)
        self.calls.plan = plan
        return None

    def _first_block_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        hidden, rebuild = _hidden_states(args, kwargs)
        plan = self.calls.take_plan()
        if plan is not None:
            if hidden is None:
                raise NEFTuneInputError(
                    f"{self.noise_site.removeprefix('the input of ')} was called without a hidden-states "
                    "tensor, so NEFTune has nothing to add its noise to."
                )
            noise = self._noise_for(hidden, plan)
            # A compiled graph's checkpointing recomputes inside the graph, without running this hook again.
            if not torch.compiler.is_compiling() and may_recompute(module):
                self.replays.keep(hidden, noise)
            return rebuild(hidden + noise)
        if hidden is None or torch.compiler.is_compiling():
            return None
        noise = self.replays.replay_for(hidden)
        return rebuild(hidden + noise) if noise is not None else None

    def _transposed(self, call: Mapping[str, Any], args: tuple) -> bool:
        """Whether the model embeds its ids as ``[L, B]`` (XLNet); refuses ids the model re-laid otherwise."""
        input_ids, embedded_ids = call.get("input_ids"), args[0] if args else None
        if not isinstance(input_ids, torch.Tensor) or not isinstance(embedded_ids, torch.Tensor):
            return False
        if input_ids.dim() != 2 or embedded_ids is input_ids:
            return False
        rows, length = input_ids.shape
        if embedded_ids.shape == input_ids.shape:
            if rows != length:
                self._ids_transposed = False
            elif not torch.compiler.is_compiling():
                # A square batch cannot tell a transposed layout by shape (the only case that syncs, so the
                # compiled graph reads it as the last non-square batch was).
                self._ids_transposed = torch.equal(embedded_ids, input_ids.T) and not torch.equal(
                    embedded_ids, input_ids
                )
            return self._ids_transposed
        if embedded_ids.shape == (length, rows):
            self._ids_transposed = True
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
        text = self._text_positions(call, batch_shape, segments.device)
        if text is not None:
            segments = segments * text
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
        if self.config.neftune_length == "padded":
            return NoisePlan(segments, noised, None, transposed)
        if self.config.neftune_scope != "all":  # "all" noises every position of a segment already
            segments = segments * noised
        return NoisePlan(segments, noised, self._token_counts(segments, noised), transposed)

    def _noise_for(self, hidden: torch.Tensor, plan: NoisePlan) -> torch.Tensor:
        """``alpha / sqrt(L_s * d)`` noise per sequence for ``hidden`` (d: its width), in its dtype and layout,
        recorded."""
        transposed = plan.transposed or self._transposed_at_block(hidden, plan)
        received = hidden.transpose(0, 1) if transposed else hidden
        if received.dim() != 3 or tuple(received.shape[:2]) != tuple(plan.segments.shape):
            raise NEFTuneInputError(
                f"{self.noise_site.removeprefix('the input of ')} received hidden states of shape "
                f"{tuple(hidden.shape)} for a batch of {tuple(plan.segments.shape)} tokens: the model inserts, "
                "removes or re-lays positions between its embeddings and its first block, so NEFTune cannot line "
                "the batch's masks up with them. Refusing rather than noise the wrong positions."
            )
        scale = per_token_scale(plan.segments, plan.noised, received.shape[2], plan.counts)
        noise = opaque.draw_noise(id(self), received.shape, noise_dtype(received), received.device)
        noise.mul_(scale.unsqueeze(-1))
        self._observe(received, noise, plan.segments, plan.counts > 0, plan.noised.sum())
        noise = noise.to(hidden.dtype)
        return noise.transpose(0, 1) if transposed else noise

    def _transposed_at_block(self, hidden: torch.Tensor, plan: NoisePlan) -> bool:
        """Whether the model turned its embeddings to ``[L, B, d]`` before the block (FSMT, Mega), told by the
        shape; a square batch is read as the last non-square one was (batch-major before any)."""
        rows, length = plan.segments.shape
        if rows != length and hidden.dim() == 3:
            self._block_transposed = tuple(hidden.shape[:2]) == (length, rows)
        return self._block_transposed

    def _padded_noise(self, output: torch.Tensor, embedded: torch.Tensor, plan: NoisePlan) -> torch.Tensor:
        """transformers' built-in noise, bit for bit: padded length, every position, at the module's output."""
        noise = opaque.draw_noise(id(self), output.shape, output.dtype, output.device, padded=True)
        received = noise.transpose(0, 1) if plan.transposed else noise
        tokens = plan.segments.new_tensor(plan.segments.numel())
        is_sequence = segment_token_counts(plan.segments, plan.noised) > 0
        self._observe(embedded, received, plan.segments, is_sequence, tokens)
        return noise

    def _draw(self, out: torch.Tensor, padded: bool) -> torch.Tensor:
        """Fill ``out`` ([B, L, d]) from the noise stream: magnitude alpha, or the built-in's padded-length bound."""
        magnitude = padded_magnitude(self.alpha, out.shape[1], out.shape[2]) if padded else self.alpha
        return self._sample(out, magnitude, self.stream.generator_for(out.device))

    def _observe(
        self,
        clean: torch.Tensor,
        noise: torch.Tensor,
        segments: torch.Tensor,
        is_sequence: torch.Tensor,
        tokens: torch.Tensor,
    ) -> None:
        """Hand the observers what this pass applied, measured over ``segments`` (0 outside every sequence)."""
        opaque.observe(id(self), *measure(clean, noise, segments), is_sequence, tokens)

    def _observe_measured(
        self,
        noise_norms: torch.Tensor,
        embed_norms: torch.Tensor,
        is_sequence: torch.Tensor,
        tokens: torch.Tensor,
    ) -> None:
        record = NoiseRecord(self, self.alpha, noise_norms, embed_norms, is_sequence, tokens)
        self._plugins.hook.neft_observe(record=record)

    def _text_positions(
        self, call: Mapping[str, Any], batch_shape: tuple[int, int], device: torch.device
    ) -> torch.Tensor | None:
        """False at media placeholders (their embeddings are replaced by image/video/audio features): they get
        no noise and do not count in L. None when the model has none."""
        input_ids = call.get("input_ids")
        if (
            not self.placeholder_ids
            or not isinstance(input_ids, torch.Tensor)
            or input_ids.shape != batch_shape
        ):
            return None
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
