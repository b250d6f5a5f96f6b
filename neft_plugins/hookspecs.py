"""The hooks neft-plugins is built from. Built-ins and third-party plugins implement the same specs.

A plugin is any object or module with ``@hookimpl``-marked functions named like the specs below.
Third-party packages register one through the ``neft_plugins`` entry-point group::

    [project.entry-points.neft_plugins]
    my_noise = "my_package.neft_plugin"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    import torch

    from neft_plugins.record import NoiseRecord

PROJECT = "neft_plugins"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class NoiseSampler(Protocol):
    """Fills ``out`` in place with noise of the spread of Uniform(-magnitude, magnitude) and returns it.

    ``magnitude`` is a float. Samplers keep the variance of Uniform(-m, m), m²/3, so that one alpha means the
    same noise energy whatever the distribution. A sampler runs as plain Python even inside a compiled graph
    (``neft_plugins.engine.custom_ops``), so it may use the generator, or anything else, freely.
    """

    def __call__(
        self, out: torch.Tensor, magnitude: float, generator: torch.Generator | None
    ) -> torch.Tensor: ...


class AlphaSchedule(Protocol):
    """The alpha in force at optimizer step ``step`` of ``total_steps`` (``total_steps`` may be 0: unknown)."""

    def __call__(self, alpha: float, step: int, total_steps: int) -> float: ...


class NeftHookSpecs:
    @hookspec
    def neft_distributions(self) -> Mapping[str, NoiseSampler]:
        """Return the noise distributions this plugin provides, by the name ``neftune_distribution`` uses."""
        raise NotImplementedError

    @hookspec
    def neft_schedules(self) -> Mapping[str, AlphaSchedule]:
        """Return the alpha schedules this plugin provides, by the name ``neftune_schedule`` uses."""
        raise NotImplementedError

    @hookspec(firstresult=True)
    def neft_read_segments(
        self, inputs: Mapping[str, Any], batch_shape: tuple[int, int]
    ) -> torch.Tensor | None:
        """Read which sequence each position belongs to from the model call's inputs.

        Return a ``[batch, length]`` integer tensor: 0 where the position is not a real token (padding),
        otherwise a segment number in 1..length, equal positions of one row forming one sequence.
        Return None when the inputs hold nothing this reader understands; the next reader is asked.
        Readers registered later are asked first.
        """
        raise NotImplementedError

    @hookspec
    def neft_observe(self, record: NoiseRecord) -> None:
        """Called after every noised forward pass with what was applied (tensors stay on the device); inside a
        compiled graph too, as plain Python, at the point of the pass where the noise was added."""
        raise NotImplementedError
