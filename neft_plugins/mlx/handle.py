"""Attaching NEFTune to an MLX-LM model.

MLX modules have no hooks: the model's first block (``model.layers[0]``) becomes an instance of a subclass of its
own class whose call adds the noise to what the block receives, then runs the block. Its parameters, their names
and every other layer are untouched. The noise stream and the running sums live in that block's tree under
``_neftune`` (a leading underscore: never a parameter, never saved), so MLX-LM's compiled training step, whose
state is the model's tree, carries them from step to step as arrays. The loss wrapper hands the batch's
``lengths`` to the block while the loss runs; evaluation (``model.eval()``) and any call outside that loss (generation)
get no noise, bit for bit.
"""

from __future__ import annotations

import functools
import inspect
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from neft_plugins import telemetry
from neft_plugins.config import NEFTuneConfig, as_config
from neft_plugins.errors import NEFTuneAttachError, NEFTuneConfigError, NEFTunePluginError
from neft_plugins.mlx.noise import noised_positions, pass_key, per_token_scale, row_norms, unit_noise
from neft_plugins.plugins import plugin_manager, schedules

logger = logging.getLogger("neft_plugins")

STATE = "_neftune"
DISTRIBUTIONS = ("uniform", "gaussian")  # drawn by MLX itself; a plugin's sampler fills torch tensors
PROBE_TOKENS = 8
_noised_classes: dict[type, type] = {}


class MLXNEFTune:
    """One attachment of NEFTune to one MLX-LM model; ``detach()`` restores it.

    ``total_steps``: the optimizer steps of the run, for the schedule; ``accumulation_steps``: training passes per
    optimizer step; ``first_pass``: where the noise stream starts (a resumed run's passes so far); ``seed``: the
    stream's seed (``neftune_seed``, else a resumed run's, else drawn once and shared by the ranks).
    """

    def __init__(
        self,
        model: nn.Module,
        config: NEFTuneConfig,
        *,
        total_steps: int,
        accumulation_steps: int = 1,
        first_pass: int = 0,
        seed: int | None = None,
    ) -> None:
        check_config(config)
        self.config = config
        self.block = _first_block(model)
        self.site = f"{type(model).__name__}.layers[0] ({type(self.block).__name__}) input"
        self.world = mx.distributed.init()
        self.seed = _shared_seed(config.neftune_seed if config.neftune_seed is not None else seed, self.world)
        self._base_key = mx.random.split(mx.random.key(self.seed), self.world.size())[self.world.rank()]
        self.first_pass = first_pass
        self.accumulation_steps = max(1, accumulation_steps)
        schedule = schedules()[config.neftune_schedule]
        steps = max(1, total_steps)
        self._alphas = mx.array(
            [schedule(config.neftune_alpha, step, total_steps) for step in range(steps)], dtype=mx.float32
        )
        self._lengths: mx.array | None = None
        self._probed: list[mx.array] | None = None
        self._warned_outside_loss = False
        self._warned_nothing_noised = False
        self._totals = [0.0, 0.0, 0.0, 0.0]  # passes, noise norm sum, sequences, tokens: read so far
        self._base_class = type(self.block)
        self.block[STATE] = {
            "passes": mx.array(0, dtype=mx.uint32),
            "alpha": mx.array(0.0),
            "sums": mx.zeros((4,)),  # noise norm sum, embedding norm sum, sequences, tokens
        }
        object.__setattr__(self.block, "_neftune_attachment", self)
        self.block.__class__ = _noised_class(self._base_class)
        try:
            self._probe(model)
        except BaseException:
            self._restore()
            raise
        logger.warning("neft_plugins: attached NEFTune at %s (%s)", self.site, telemetry.settings(config))

    # --- what the first block does --------------------------------------------------------------------------

    def noised(self, block: nn.Module, x: mx.array) -> mx.array:
        if self._probed is not None:
            self._probed.append(x)
            return x
        if not block.training:
            return x
        if self._lengths is None:
            if not self._warned_outside_loss:
                self._warned_outside_loss = True
                logger.warning(
                    "neft_plugins: a forward pass in training mode ran outside NEFTune's loss, so it got no noise; "
                    "train through neft_plugins.mlx.train, or pass your loss through handle.loss(loss)"
                )
            return x
        state = block[STATE]
        passes = state["passes"]
        step = mx.minimum(passes // self.accumulation_steps, self._alphas.size - 1)
        alpha = self._alphas[step]
        noised = noised_positions(
            self._lengths, x.shape[1], self.config.neftune_scope, self.config.neftune_length == "padded"
        )
        scale = per_token_scale(noised, x.shape[-1]) * alpha
        key = pass_key(self._base_key, passes + self.first_pass)
        noise = unit_noise(self.config.neftune_distribution, x.shape, key) * scale[..., None]
        sums = mx.stack(
            [
                row_norms(noise, noised).sum(),
                row_norms(x, noised).sum(),
                noised.any(axis=1).sum().astype(mx.float32),
                noised.sum().astype(mx.float32),
            ]
        )
        state["sums"] = state["sums"] + sums
        state["alpha"] = alpha
        state["passes"] = passes + 1
        return x + noise.astype(x.dtype)

    # --- what a training loop uses ---------------------------------------------------------------------------

    def loss(self, loss: Callable[..., Any]) -> Callable[..., Any]:
        """``loss(model, batch, lengths, ...)`` whose model call noises the rows by ``lengths``."""

        @functools.wraps(loss)
        def noised_loss(
            model: nn.Module, batch: mx.array, lengths: mx.array, *args: Any, **kwargs: Any
        ) -> Any:
            self._lengths = lengths
            try:
                return loss(model, batch, lengths, *args, **kwargs)
            finally:
                self._lengths = None

        return noised_loss

    @property
    def passes(self) -> int:
        """Training passes noised since attaching (one host sync)."""
        return int(self.block[STATE]["passes"].item())

    def read_logs(self) -> dict[str, float]:
        """``neft/*`` entries over the passes since the last read, summed over the ranks (every rank calls it)."""
        state = self.block[STATE]
        sums = state["sums"]
        if self.world.size() > 1:
            sums = mx.distributed.all_sum(sums, stream=mx.cpu)
        noise_sum, embed_sum, sequences, tokens = sums.tolist()
        passes = float(state["passes"].item()) - self._totals[0]
        new = (passes, noise_sum, sequences, tokens)
        self._totals = [total + value for total, value in zip(self._totals, new, strict=True)]
        state["sums"] = mx.zeros((4,))
        if passes and not tokens and not self._warned_nothing_noised:
            self._warned_nothing_noised = True
            logger.warning(
                "neft_plugins: no token got noise in the training passes so far (neftune_scope=%s: MLX-LM's "
                "offsets, set by mask_prompt, tell prompt from response)",
                self.config.neftune_scope,
            )
        return telemetry.log_entries(state["alpha"].item(), noise_sum, embed_sum, sequences, tokens)

    def detach(self) -> None:
        if STATE not in self.block:
            return
        self.read_logs()
        self._restore()
        logger.warning(
            "neft_plugins: detached NEFTune from %s: %s", self.site, telemetry.summary(*self._totals)
        )

    # --- attaching -------------------------------------------------------------------------------------------

    def _restore(self) -> None:
        self.block.__class__ = self._base_class
        self.block.pop(STATE, None)
        self.block.__dict__.pop("_neftune_attachment", None)

    def _probe(self, model: nn.Module) -> None:
        """One forward pass with one token changed: the first block must be called once, with ``[1, n, d]``
        whose positions are each their own token's (the embeddings as the block receives them)."""
        tokens = mx.arange(1, PROBE_TOKENS + 1)[None, :]
        changed = PROBE_TOKENS // 2
        self._probed = []
        training = model.training
        model.eval()
        try:
            for ids in (tokens, tokens + (mx.arange(PROBE_TOKENS) == changed)[None, :]):
                mx.eval(model(ids))
        except Exception as error:
            raise NEFTuneAttachError(
                f"NEFTune could not run a probe forward pass of {type(model).__name__} (8 token ids) to find what "
                f"its first block receives: {type(error).__name__}: {error}"
            ) from error
        finally:
            probed, self._probed = self._probed, None
            model.train(training)
        _check_probe(type(model).__name__, probed, changed)


def _check_probe(model: str, probed: Sequence[Any], changed: int) -> None:
    def refuse(why: str) -> NEFTuneAttachError:
        return NEFTuneAttachError(
            f"{model}: NEFTune adds its noise to the input of model.layers[0], but {why}"
        )

    if len(probed) != 2:
        raise refuse(f"that block ran {len(probed) / 2:g} times in one forward pass, not once")
    first, second = probed
    if not isinstance(first, mx.array) or first.ndim != 3 or first.shape[:2] != (1, PROBE_TOKENS):
        shape = getattr(first, "shape", type(first).__name__)
        raise refuse(f"its first argument is {shape}, not the [batch, tokens, width] embeddings")
    moved = (mx.abs(first.astype(mx.float32) - second.astype(mx.float32)).sum(axis=-1)[0] > 0).tolist()
    if not moved[changed]:
        raise refuse("what it receives does not change with the token ids")
    if sum(moved) > 1:
        raise refuse(
            "what it receives at one position changes when another position's token changes (the positions are "
            "mixed before the first block), so it is not the token embeddings"
        )


def _first_block(model: nn.Module) -> nn.Module:
    layers = getattr(model, "layers", None)
    if not isinstance(layers, (list, tuple)) or not layers or not isinstance(layers[0], nn.Module):
        raise NEFTuneAttachError(
            f"{type(model).__name__} has no model.layers list of blocks; NEFTune adds its noise to the first "
            "block's input"
        )
    if isinstance(layers[0], tuple(_noised_classes.values())):
        raise NEFTuneAttachError(f"NEFTune is already attached to {type(model).__name__}: detach it first")
    return layers[0]


def _noised_class(base: type) -> type:
    if base not in _noised_classes:
        # What the block receives, by position or by its name (GPT-J calls `block(inputs=...)`).
        first = list(inspect.signature(base.__call__).parameters)[1]

        def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
            noised = self._neftune_attachment.noised
            if args:
                args = (noised(self, args[0]), *args[1:])
            elif first in kwargs:
                kwargs[first] = noised(self, kwargs[first])
            else:  # never a pass without noise unsaid
                raise NEFTuneAttachError(
                    f"{base.__name__} was called with no positional argument and no {first!r}, so NEFTune cannot "
                    "tell which argument is what the block receives"
                )
            # The base class's call looked up now: MLX-LM's --grad-checkpoint replaces it on the class.
            return base.__call__(self, *args, **kwargs)

        _noised_classes[base] = type(f"NEFTune{base.__name__}", (base,), {"__call__": __call__})
    return _noised_classes[base]


def check_config(config: NEFTuneConfig) -> None:
    """What MLX cannot do, refused before any model loads: the clean-loss pass, a plugin's (torch) sampler."""
    if config.neftune_clean_loss:
        raise NEFTuneConfigError(
            "neftune_clean_loss: got true; on MLX-LM, where the training step is compiled whole, the extra "
            "noise-free pass is not available: use false (neft/clean_loss is logged by the torch integrations)"
        )
    name = config.neftune_distribution
    if name in DISTRIBUTIONS:
        return
    owner = next(
        (
            plugin_name
            for plugin_name, plugin in plugin_manager().list_name_plugin()
            if name in (getattr(plugin, "neft_distributions", lambda: {})() or {})
        ),
        "a plugin",
    )
    raise NEFTunePluginError(
        f"neftune_distribution: {name!r} comes from {owner}, whose sampler fills torch tensors; the MLX route "
        f"draws {' and '.join(map(repr, DISTRIBUTIONS))} (see docs/plugins.md)"
    )


def _shared_seed(seed: int | None, world: Any) -> int:
    """``seed``, or one drawn on rank 0 and shared by every rank (each rank then splits off its own stream)."""
    if seed is not None:
        return seed
    drawn = secrets.randbits(31)
    if world.size() == 1:
        return drawn
    mine = mx.array(drawn if world.rank() == 0 else 0, dtype=mx.int32)
    return int(mx.distributed.all_sum(mine, stream=mx.cpu).item())


def attach(
    model: nn.Module, config: NEFTuneConfig | None = None, *, total_steps: int = 0, **keys: Any
) -> MLXNEFTune:
    """``attach(model, neftune_alpha=5, total_steps=1000)``: NEFTune on the model's training passes through
    ``handle.loss(loss)``; ``handle.detach()`` when done."""
    return MLXNEFTune(model, as_config(config, keys), total_steps=total_steps)
