"""The plugin manager: built-ins first, then everything in the ``neft_plugins`` entry-point group."""

from __future__ import annotations

import functools

import pluggy

from neft_plugins import hookspecs
from neft_plugins.builtins import BUILTIN_PLUGINS
from neft_plugins.hookspecs import AlphaSchedule, NoiseSampler


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs.NeftHookSpecs)
    for plugin in BUILTIN_PLUGINS:
        manager.register(plugin, name=f"builtin:{type(plugin).__name__}")
    manager.load_setuptools_entrypoints(hookspecs.PROJECT)
    return manager


def distributions() -> dict[str, NoiseSampler]:
    return _merged(plugin_manager().hook.neft_distributions())


def schedules() -> dict[str, AlphaSchedule]:
    return _merged(plugin_manager().hook.neft_schedules())


def _merged(provided: list) -> dict:
    # pluggy returns the latest registration first; let later plugins override earlier ones.
    merged: dict = {}
    for mapping in reversed(provided):
        merged.update(mapping)
    return merged
