"""The one table of framework versions neft-plugins is tested with, one warning when the installed one is not, and
one error when it lacks a hook point an integration relies on.

Everything else reads it: that warning and that error (every framework's), the nox matrix (``noxfile.py`` loads
this file by path) and the README's compatibility table (checked by ``tests/core/test_versions.py``). This module
imports nothing outside the standard library at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # noxfile.py loads this file by path, without the package
    from neft_plugins.errors import NEFTuneCompatibilityError

logger = logging.getLogger("neft_plugins")

# Every version tested, oldest first. transformers and TRL are tested in pairs: the i-th of each together.
TESTED: dict[str, tuple[str, ...]] = {
    "transformers": ("4.46.3", "4.57.6", "5.25.0"),
    "trl": ("0.16.1", "0.24.0", "1.16.0"),
    "axolotl": ("0.17.0", "0.19.0"),
    "llamafactory": ("0.9.3", "0.9.4", "0.9.5"),
    "deepspeed": ("0.16.9", "0.19.8"),
    "ms-swift": ("4.1.0", "4.6.0"),
    "unsloth": ("2026.10.9",),
    "mlx-lm": ("0.32.2",),
}
# (oldest, newest) tested, inclusive: inside, every hook point is the same, so no warning.
TESTED_RANGES: dict[str, tuple[str, str]] = {
    package: (tested[0], tested[-1]) for package, tested in TESTED.items()
}

_warned: set[str] = set()


def installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def tested_range(package: str) -> str:
    """``transformers 4.46.3 to 5.25.0``; ``unsloth 2026.10.9`` for a single tested version."""
    oldest, newest = TESTED_RANGES[package]
    return f"{package} {oldest}" if oldest == newest else f"{package} {oldest} to {newest}"


def missing_hook_point(package: str, what: str | Sequence[str], who: str) -> NEFTuneCompatibilityError:
    """The one error for a hook point the installed ``package`` lacks (or has changed), for every integration:
    ``<package> <version>: <what>; <who> relies on it. Install a tested version (<package> <oldest> to <newest>).``

    ``what``: the names of what is missing (read ``A, B missing``), or a clause saying what changed
    (``Runner._launch no longer starts ...``); ``who``: the part of neft-plugins that relies on it.
    """
    from neft_plugins.errors import NEFTuneCompatibilityError

    if isinstance(what, str):
        clause, it = what, "it"
    else:
        clause, it = f"{', '.join(what)} missing", "them" if len(what) > 1 else "it"
    return NEFTuneCompatibilityError(
        f"{package} {installed_version(package)}: {clause}; {who} relies on {it}. "
        f"Install a tested version ({tested_range(package)})."
    )


def warn_if_untested(package: str) -> None:
    """One warning per process when ``package`` is installed at a version outside its tested range."""
    from packaging.version import Version

    version = installed_version(package)
    if version is None or package in _warned:
        return
    oldest, newest = TESTED_RANGES[package]
    if not Version(oldest) <= Version(version) <= Version(newest):
        _warned.add(package)
        logger.warning(
            "neft_plugins: %s %s is untested (tested: %s); every hook point it uses was found, so it runs",
            package,
            version,
            tested_range(package),
        )
