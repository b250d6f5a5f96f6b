"""Attaching NEFTune to a model: find the token embeddings, read each call's batch, add the noise."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from neft_plugins.config import (
    NEFTuneConfig,
    NEFTuneConfigError,
    NEFTuneConflictError,
    as_config,
    check_no_double_noise,
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

logger = logging.getLogger("neft_plugins")

SEED_STRIDE = 0x9E3779B97F4A7C15  # keeps the per-rank seeds of one run far apart

# Families whose forward multiplies the embedding module's output by sqrt(hidden_size) outside the module:
# Gemma, Gemma 2 and VaultGemma before transformers 5 (from 5 the scale is inside, `embed_scale`), and
# RecurrentGemma on every version.
SCALED_AFTER_EMBEDDING = ("gemma", "gemma2", "vaultgemma", "recurrent_gemma")

# Config attributes that hold a multimodal model's placeholder token ids (transformers 4.x used "_index").
PLACEHOLDER_KEYS = tuple(
    f"{kind}_token_{suffix}" for kind in ("image", "video", "audio") for suffix in ("id", "index")
)
# Sub-configs whose presence makes a model multimodal.
MEDIA_CONFIGS = ("vision_config", "audio_config", "video_config")

_attached: weakref.WeakKeyDictionary[nn.Module, NEFTuneHandle] = weakref.WeakKeyDictionary()


class NEFTuneAttachError(RuntimeError):
    """The model offers nothing NEFTune can attach to."""


class NEFTuneInputError(RuntimeError):
    """A training forward pass brought something NEFTune cannot noise correctly."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip torch.compile and distributed wrappers down to the model that owns the embeddings."""
    while True:
        compiled = getattr(model, "_orig_mod", None)
        wrapped = getattr(model, "module", None) if not hasattr(model, "get_input_embeddings") else None
        inner = compiled if isinstance(compiled, nn.Module) else wrapped
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def find_input_embeddings(model: nn.Module) -> tuple[nn.Module, str]:
    """The token embedding module (text tokens only for multimodal models) and its path, through
    DDP/FSDP/DeepSpeed/torch.compile wrappers and PEFT models."""
    inner = unwrap_model(model)
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    get_embeddings = getattr(base, "get_input_embeddings", None)
    embeddings = None
    if callable(get_embeddings):
        with contextlib.suppress(NotImplementedError):
            embeddings = get_embeddings()
    if not isinstance(embeddings, nn.Module):
        raise NEFTuneAttachError(
            f"{type(base).__name__} has no input embeddings: get_input_embeddings() "
            f"{'is missing' if get_embeddings is None else f'returned {embeddings!r}'}. NEFTune noises the "
            "output of the token embedding module; pass the language model itself, or implement "
            "get_input_embeddings() on it."
        )
    path = next((name for name, module in base.named_modules() if module is embeddings), "")
    return embeddings, f"{type(base).__name__}.{path}" if path else type(base).__name__


def scale_after_embeddings(model: nn.Module, embeddings: nn.Module) -> float:
    """The factor the model applies to the embedding module's output before its first layer (usually 1).

    Noise is divided by it, so that the first layer receives ``alpha / sqrt(L * d)`` noise on every
    transformers version, wherever the model puts its embedding scale.
    """
    if hasattr(embeddings, "embed_scale"):
        return 1.0
    config = getattr(unwrap_model(model), "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text_config, "model_type", None) in SCALED_AFTER_EMBEDDING:
        return math.sqrt(text_config.hidden_size)
    return 1.0


def model_config(model: nn.Module) -> Any:
    inner = unwrap_model(model)
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    return getattr(base, "config", None)


def placeholder_token_ids(model: nn.Module) -> tuple[int, ...]:
    """The image/video/audio placeholder ids of a multimodal model (their embeddings are replaced by the media
    features, so noise there never reaches the model); () for a text-only model.

    Raises ``NEFTuneAttachError`` for a multimodal model whose placeholder ids cannot be read, rather than
    guess and let the placeholders dilute every sequence's noise.
    """
    config = model_config(model)
    ids = {getattr(config, key) for key in PLACEHOLDER_KEYS if isinstance(getattr(config, key, None), int)}
    media = [key for key in MEDIA_CONFIGS if getattr(config, key, None) is not None]
    if media and not ids:
        raise NEFTuneAttachError(
            f"{type(config).__name__} is multimodal ({', '.join(media)}) but names no placeholder token id "
            f"({', '.join(PLACEHOLDER_KEYS)}): NEFTune cannot tell text from media positions, whose noise the "
            "media features overwrite. Set the id on the config, or attach to the language model alone."
        )
    return tuple(sorted(ids))


def find_encoder(model: nn.Module) -> nn.Module | None:
    """The encoder of an encoder-decoder model (T5, BART, ...); None for a decoder-only model."""
    inner = unwrap_model(model)
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    if not getattr(model_config(model), "is_encoder_decoder", False) or not hasattr(base, "get_encoder"):
        return None
    return base.get_encoder()


def distributed_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class NEFTuneHandle:
    """One attachment of NEFTune to one model. ``detach()`` removes every trace of it."""

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
        # Encoder-decoders: the embedding module the encoder really runs (T5 on transformers 5 runs its own
        # `embed_tokens`, not the `shared` module get_input_embeddings() returns).
        self.embeddings, self.embeddings_path = find_input_embeddings(self.encoder or model)
        self.placeholder_ids = placeholder_token_ids(model)
        # The padded length reproduces the built-in, which adds its noise at the module's output, as is.
        padded = config.neftune_length == "padded"
        self.scale_after = 1.0 if padded else scale_after_embeddings(model, self.embeddings)
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
        self.alpha = config.neftune_alpha
        self.stats = NoiseStats(self)
        self._sample = distributions()[config.neftune_distribution]
        self._schedule = schedules()[config.neftune_schedule]
        # Each model call in progress: its inputs by name, and the embedding runs counted when it began.
        self._calls: list[tuple[dict[str, Any], int]] = []
        self._encoder_depth = 0
        self._embedding_runs = 0  # training passes of the embedding module, to tell when a call bypassed it
        self._warned_bypass = False
        self._runs_at_last_read = 0
        self._warned_nothing_noised = False
        self._positional = _positional_names(unwrap_model(model))
        self._generator: torch.Generator | None = None
        self._pending_rng_state: torch.Tensor | None = None
        self._plugins = plugin_manager()
        self._plugins.register(self.stats)
        self._hooks = [
            model.register_forward_pre_hook(self._enter_call, with_kwargs=True),
            model.register_forward_hook(self._leave_call, always_call=True),
            # Eager even inside torch.compile: observers and schedules must not become graph guards.
            self.embeddings.register_forward_hook(torch.compiler.disable(self._noise_hook)),
        ]
        if self.encoder is not None:
            # Only the encoder's pass is noised: on transformers 4.x the decoder runs the same (shared) module.
            self._hooks += [
                self.encoder.register_forward_pre_hook(self._enter_encoder),
                self.encoder.register_forward_hook(self._leave_encoder, always_call=True),
            ]
        _attached[self.embeddings] = self
        settings = ", ".join(
            f"{key.removeprefix('neftune_')}={value}" for key, value in config.as_dict().items()
        )
        logger.warning("neft_plugins: attached NEFTune to %s (%s)", self.embeddings_path, settings)

    def detach(self) -> None:
        if not self._hooks:
            return
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._calls.clear()
        self._plugins.unregister(self.stats)
        _attached.pop(self.embeddings, None)
        logger.warning("neft_plugins: detached NEFTune from %s", self.embeddings_path)

    def set_step(self, step: int, total_steps: int) -> float:
        """Move the alpha schedule to optimizer step ``step`` of ``total_steps``; returns the alpha in force."""
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
        self._calls.append((call, self._embedding_runs))

    def _leave_call(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not self._calls:
            return
        _, runs_before = self._calls.pop()
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

    def _enter_encoder(self, module: nn.Module, args: tuple) -> None:
        self._encoder_depth += 1

    def _leave_encoder(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._encoder_depth -= 1

    def _noise_hook(self, module: nn.Module, args: tuple, output: Any) -> torch.Tensor | None:
        if self.alpha <= 0 or not (module.training and torch.is_grad_enabled()):
            return None
        if self.encoder is not None and self._encoder_depth == 0:
            return None  # the decoder's teacher-forced input: not the instruction
        self._embedding_runs += 1
        if not isinstance(output, torch.Tensor) or output.dim() != 3:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise NEFTuneInputError(
                f"{self.embeddings_path} returned {shape}; NEFTune needs a [batch, sequence, dim] tensor. "
                "Attach to a model whose get_input_embeddings() is the token embedding module."
            )
        call = self._calls[-1][0] if self._calls else {}
        batch_shape = (output.shape[0], output.shape[1])
        segments = self._plugins.hook.neft_read_segments(inputs=call, batch_shape=batch_shape).to(
            output.device
        )
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
        generator = self._generator_for(output.device)
        if self.config.neftune_length == "padded":
            magnitude = padded_magnitude(self.alpha, output.shape[1], output.shape[2])
            noise = self._sample(torch.empty_like(output), magnitude, generator)
            measured, tokens = segments > 0, segments.new_tensor(segments.numel())
        else:
            scale = per_token_scale(
                segments, noised, self.alpha, output.shape[2], self._token_counts(segments, noised)
            )
            buffer = torch.empty(output.shape, dtype=noise_dtype(output), device=output.device)
            noise = self._sample(buffer, 1.0, generator)
            noise.mul_(scale.to(noise.dtype).unsqueeze(-1))
            measured, tokens = noised, noised.sum()
        # Measured as the first layer receives them; the noise is added before the model's own scale.
        clean = output if self.scale_after == 1.0 else output * self.scale_after
        record = NoiseRecord.measure(self, self.alpha, clean, noise, segments, measured, tokens)
        self._plugins.hook.neft_observe(record=record)
        if self.scale_after != 1.0:
            noise.div_(self.scale_after)
        return output + noise.to(output.dtype)

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
