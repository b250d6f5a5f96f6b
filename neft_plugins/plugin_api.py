"""The public API for plugin authors: the hook marker, the types each hook receives or returns, and the segment
readers the built-ins are made of. Everything here is stable; the rest of ``neft_plugins`` is internal.

A plugin is a module or object with ``@hookimpl`` functions named like the specs in ``neft_plugins.hookspecs``,
registered through the ``neft_plugins`` entry-point group::

    [project.entry-points.neft_plugins]
    my_plugin = "my_package.neft_plugin"
"""

from __future__ import annotations

from neft_plugins.hookspecs import AlphaSchedule, NoiseSampler, hookimpl
from neft_plugins.noise import (
    IGNORE_INDEX,
    segments_from_block_mask,
    segments_from_cu_seqlens,
    segments_from_row_values,
    segments_from_starts,
)
from neft_plugins.record import NoiseRecord

__all__ = [
    "IGNORE_INDEX",
    "AlphaSchedule",
    "NoiseRecord",
    "NoiseSampler",
    "hookimpl",
    "segments_from_block_mask",
    "segments_from_cu_seqlens",
    "segments_from_row_values",
    "segments_from_starts",
]
