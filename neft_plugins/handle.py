"""Attaching NEFTune to a model: the hooks that connect a model to the plan reader (at the token embeddings) and
to the carriers of the embeddings (the inputs of its blocks), and the handle that removes them."""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from neft_plugins import telemetry
from neft_plugins.config import NEFTuneConfig, as_config
from neft_plugins.engine.block_noise import BlockNoise
from neft_plugins.engine.calls import CallTracker
from neft_plugins.engine.compile_stance import EagerUntilLearnt
from neft_plugins.engine.embedding_hook import EmbeddingHook
from neft_plugins.engine.layout import Layout
from neft_plugins.engine.learning import CarrierLearning
from neft_plugins.engine.noise_source import NoiseSource
from neft_plugins.engine.once_warnings import OnceWarnings
from neft_plugins.engine.plan import PlanReader
from neft_plugins.engine.sites import NoiseSites
from neft_plugins.engine.structure import compiled_wrapper, unwrap_model
from neft_plugins.plugins import plugin_manager, schedules

logger = logging.getLogger("neft_plugins")

_attached: weakref.WeakKeyDictionary[nn.Module, NEFTuneHandle] = weakref.WeakKeyDictionary()


class NEFTuneHandle:
    """One attachment of NEFTune to one model. ``detach()`` removes every trace of it.

    On a training pass the embedding hook reads the batch into a plan (``PlanReader``); the first block's
    pre-hook draws, for the embeddings as that block receives them, ``alpha / sqrt(L_s * d)`` noise per sequence;
    every block input that carries the embeddings (learnt on the first noised pass: ``carriers``) gets that same
    noise, in every copy. ``neftune_length: padded`` (transformers' built-in, placement included) and a model with
    no stack of blocks get it at the embedding module's output instead. The work is the engine's
    (``neft_plugins.engine``): this facade wires its units together and holds the public methods.
    """

    def __init__(
        self,
        model: nn.Module,
        config: NEFTuneConfig,
        sequence_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        self.config = config
        self.sites = sites = NoiseSites(model, config, _attached)
        self._plugins = plugin_manager()
        self.noise = NoiseSource(self, config, self._plugins)
        self._schedule = schedules()[config.neftune_schedule]
        self.reader = PlanReader(
            self._plugins.hook.neft_read_segments,
            config.neftune_scope,
            config.neftune_length == "padded",
            sites.placeholder_ids,
            # An encoder-decoder's labels are the decoder's: they say nothing about the encoder's positions.
            labels_are_inputs=sites.encoder is None,
            sequence_group=sequence_group,
        )
        self.calls = CallTracker(
            unwrap_model(model),
            sites.encoder,
            sites.decoder,
            sites.embeddings_path,
            self._start_call,
            self._end_call,
        )
        self.layout = Layout(sites, self.noise)
        # Learnt on the first noised training pass (or the probe): how the first block's input holds the
        # embeddings, and which inputs of which blocks carry them.
        self.learning = CarrierLearning(sites, self.layout)
        self.warnings = OnceWarnings(config, sites.embeddings_path)
        self.block_noise = BlockNoise(sites, self.layout, self.learning)  # its hooks: on the blocks
        hook = EmbeddingHook(self.reader, self.calls, self.layout, self.warnings, self.block_noise)
        self._hooks = [
            *self.calls.register(model),
            *(module.register_forward_hook(hook.hook) for module in sites.watched),
        ]
        self.stance = EagerUntilLearnt(self.learning, self.noise)
        wrapper = compiled_wrapper(model)
        if wrapper is not None and self.blocks:
            # Its hooks run outside the compiled code: the passes until the carriers are learnt run eagerly.
            self._hooks += self.stance.register(wrapper)
        _attached[self.embeddings] = self
        logger.warning(
            "neft_plugins: attached NEFTune at %s (%s)", self.noise_site, telemetry.settings(config)
        )
        if self.blocks and self.noise.noising and wrapper is None:
            self.learning.probe(model, after=self._after_probe)

    # What the model looks like, and what was learnt of it (tests, benchmarks and integrations read these).
    embeddings = property(lambda self: self.sites.embeddings)
    embeddings_path = property(lambda self: self.sites.embeddings_path)
    encoder = property(lambda self: self.sites.encoder)
    decoder = property(lambda self: self.sites.decoder)
    placeholder_ids = property(lambda self: self.sites.placeholder_ids)
    blocks = property(lambda self: self.sites.blocks)
    first_block = property(lambda self: self.sites.first_block)
    block_paths = property(lambda self: self.sites.block_paths)
    noise_site = property(lambda self: self.sites.noise_site)
    first_copies = property(lambda self: self.learning.first_copies)  # Copies | None, until learnt
    carriers = property(lambda self: self.learning.carriers)  # {block index: Carriers} | None, until learnt

    def detach(self) -> None:
        if not self._hooks:
            return
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self.block_noise.remove()
        self.stance.leave()
        self.calls.clear()
        self.learning.current = None
        self.noise.close()
        _attached.pop(self.embeddings, None)
        logger.warning(
            "neft_plugins: detached NEFTune from %s: %s", self.noise_site, self.noise.stats.summary()
        )

    @property
    def alpha(self) -> float:
        """The alpha in force (after the schedule)."""
        return self.noise.alpha

    def set_step(self, step: int, total_steps: int) -> float:
        """Move the alpha schedule to optimizer step ``step`` of ``total_steps``; returns the alpha in force."""
        self.block_noise.replays.clear()  # the last step's backward passes are done
        self.warnings.step_set = True
        self.noise.set_alpha(float(self._schedule(self.config.neftune_alpha, step, total_steps)))
        return self.alpha

    def read_logs(self) -> dict[str, float]:
        """The ``neft/*`` log entries since the last read; warns once if training passes ran but no token got
        noise (the case a log line alone would not make obvious)."""
        observed = self.noise.stats.records
        logs = self.noise.stats.read_and_reset(self.alpha)
        # Inside a compiled graph the runs are not counted (a counter would be a guard): its records tell.
        ran = self.calls.ran_since_last_read() or observed > 0
        self.warnings.check_noised(ran, self.alpha, logs)
        return logs

    def rng_state(self) -> torch.Tensor | None:
        """The noise generator's state (None while noise comes from torch's global RNG)."""
        return self.noise.stream.state()

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        self.noise.stream.set_state(state)

    def save_noise_state(self, checkpoint: str) -> None:
        """Save this rank's noise stream into the training checkpoint folder ``checkpoint``."""
        self.noise.stream.save(checkpoint)

    def load_noise_state(self, checkpoint: str) -> None:
        """Continue the noise stream saved in ``checkpoint`` (said once when that cannot be exact)."""
        self.noise.stream.load(checkpoint)

    # --- the hooks -----------------------------------------------------------------------------------------

    def _start_call(self) -> None:
        self.block_noise.start_call()
        self.warnings.eval_mode_pass = False

    def _end_call(self, module: nn.Module, output: Any) -> None:
        self.warnings.end_call(module, output, self.noise.noising)
        self.block_noise.end_call(module, output)

    def _after_probe(self) -> None:
        self.calls.clear()
        self.calls.reset_runs()
        self._start_call()


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
