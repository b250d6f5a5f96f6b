"""The plugin manager: built-ins first, then everything in the ``neft_plugins`` entry-point group."""

from __future__ import annotations

import difflib
import functools

import pluggy

from neft_plugins import hookspecs
from neft_plugins.builtin_plugins import BUILTIN_PLUGINS
from neft_plugins.errors import NEFTunePluginError
from neft_plugins.hookspecs import AlphaSchedule, NoiseSampler


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, but a hook implementation that matches no spec is an error when it registers."""

    def register(self, plugin: object, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        unknown = [caller.name for caller in self.get_hookcallers(plugin) or [] if not caller.has_spec()]
        if unknown:
            self.unregister(plugin)
            specs = [name for name in vars(hookspecs.NeftHookSpecs) if name.startswith("neft_")]
            hints = "; ".join(
                f"{hook!r}"
                + "".join(
                    f" (did you mean {match!r}?)" for match in difflib.get_close_matches(hook, specs, 1)
                )
                for hook in unknown
            )
            raise NEFTunePluginError(
                f"plugin {name or getattr(plugin, '__name__', type(plugin).__name__)} implements {hints}, which "
                f"no neft_plugins hook spec declares, so it would never run. The specs: {', '.join(specs)}."
            )
        return registered


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    manager = PluginManager(hookspecs.PROJECT)
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
