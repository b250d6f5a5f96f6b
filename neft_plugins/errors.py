"""The one family of errors neft-plugins raises: catch ``NEFTuneError`` to catch them all."""

from __future__ import annotations


class NEFTuneError(Exception):
    """Base of every error neft-plugins raises on purpose; the message says what to change."""


class NEFTuneConfigError(NEFTuneError, ValueError):
    """A ``neftune_*`` value that cannot be used; the message names the key, the value and what is allowed."""


class NEFTuneConflictError(NEFTuneConfigError):
    """NEFTune would be applied twice, by us and by a framework's built-in key."""


class NEFTuneAttachError(NEFTuneError, RuntimeError):
    """The model offers nothing NEFTune can attach to correctly."""


class NEFTuneInputError(NEFTuneError, RuntimeError):
    """A training forward pass brought something NEFTune cannot noise correctly."""


class NEFTunePluginError(NEFTuneError, TypeError):
    """A plugin implements a hook no spec declares (a misspelt name would otherwise never run)."""


class NEFTuneCompatibilityError(NEFTuneError, RuntimeError):
    """The installed framework lacks a hook point the integration relies on (an untested version)."""


class NEFTuneAssetError(NEFTuneError, RuntimeError):
    """The demo could not fetch, unpack or read one of its assets."""
