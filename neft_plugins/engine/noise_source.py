"""One pass's noise for one copy of the embeddings: drawn from the noise stream, scaled per sequence, and
recorded for the ``neft/*`` logs and the observers."""

from __future__ import annotations

import pluggy
import torch

from neft_plugins.config import NEFTuneConfig
from neft_plugins.engine import custom_ops
from neft_plugins.engine.noise_stream import NoiseStream
from neft_plugins.engine.plan import NoisePlan
from neft_plugins.engine.stats import NoiseStats
from neft_plugins.noise import noise_dtype, padded_magnitude, per_token_scale, segment_token_counts
from neft_plugins.plugins import distributions
from neft_plugins.record import NoiseRecord, measure


class NoiseSource:
    """The sampler, the stream and the alpha in force of one attachment (``owner``: the records' source), and
    the statistics of what it applied."""

    def __init__(self, owner: object, config: NEFTuneConfig, plugins: pluggy.PluginManager) -> None:
        self.owner = owner
        self.alpha = config.neftune_alpha
        self.noising = self.alpha > 0  # a bool, not alpha: a compiled graph guards on it, and alpha changes
        self.stats = NoiseStats()
        self.stream = NoiseStream(config.neftune_seed)
        self._sample = distributions()[config.neftune_distribution]
        self._plugins = plugins
        custom_ops.register(id(self), self._draw, self._observe_measured)

    def set_alpha(self, alpha: float) -> None:
        self.alpha = alpha
        self.noising = alpha > 0

    def close(self) -> None:
        custom_ops.unregister(id(self))

    def per_sequence(self, embeddings: torch.Tensor, plan: NoisePlan) -> torch.Tensor:
        """``alpha / sqrt(L_s * d)`` noise per sequence for ``embeddings`` (``[B, L, d]``, one copy), in their
        dtype, recorded against them."""
        scale = per_token_scale(plan.segments, plan.noised, embeddings.shape[2], plan.counts)
        noise = custom_ops.draw_noise(id(self), embeddings.shape, noise_dtype(embeddings), embeddings.device)
        noise.mul_(scale.unsqueeze(-1))
        self._observe(embeddings, noise, plan.segments, plan.counts > 0, plan.noised.sum())
        return noise.to(embeddings.dtype)

    def probe(self, embeddings: torch.Tensor, plan: NoisePlan) -> torch.Tensor:
        """Noise for the probe pass: non-zero exactly where a training pass puts noise, from a generator of its
        own (the noise stream and the global RNG untouched), not recorded."""
        scale = per_token_scale(plan.segments, plan.noised, embeddings.shape[2], plan.counts)
        generator = torch.Generator(embeddings.device).manual_seed(0)
        noise = torch.empty(embeddings.shape, dtype=noise_dtype(embeddings), device=embeddings.device)
        noise.uniform_(-1.0, 1.0, generator=generator).mul_(scale.unsqueeze(-1))
        return noise.to(embeddings.dtype)

    def padded(self, output: torch.Tensor, embedded: torch.Tensor, plan: NoisePlan) -> torch.Tensor:
        """transformers' built-in noise, bit for bit: padded length, every position, shaped like ``output``."""
        noise = custom_ops.draw_noise(id(self), output.shape, output.dtype, output.device, padded=True)
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
        """Record what this pass applied to one copy of the embeddings, measured over ``segments`` (0 outside
        every sequence)."""
        custom_ops.observe_noise(id(self), *measure(clean, noise, segments), is_sequence, tokens)

    def _observe_measured(
        self,
        noise_norms: torch.Tensor,
        embed_norms: torch.Tensor,
        is_sequence: torch.Tensor,
        tokens: torch.Tensor,
    ) -> None:
        record = NoiseRecord(self.owner, self.alpha, noise_norms, embed_norms, is_sequence, tokens)
        self.stats.add(record)
        self._plugins.hook.neft_observe(record=record)
