"""The framework versions each integration is tested with, and one warning when the installed one is not."""

from __future__ import annotations

import logging
from importlib import metadata

logger = logging.getLogger("neft_plugins")

# (oldest, newest) tested, inclusive; the README's compatibility table and the nox matrix list the same.
TESTED_RANGES: dict[str, tuple[str, str]] = {
    "transformers": ("4.46.3", "5.24.0"),
    "trl": ("0.16.1", "1.16.0"),
    "axolotl": ("0.17.0", "0.19.0"),
}

_warned: set[str] = set()


def installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def tested_range(package: str) -> str:
    oldest, newest = TESTED_RANGES[package]
    return f"{package} {oldest} to {newest}"


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
