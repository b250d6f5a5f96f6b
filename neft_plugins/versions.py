"""The one table of framework versions neft-plugins is tested with, and one warning when the installed one is not.

Everything else reads it: the runtime warnings, the LLaMA-Factory compatibility check, the nox matrix
(``noxfile.py`` loads this file by path) and the README's compatibility table (checked by
``tests/core/test_versions.py``). This module imports nothing outside the standard library at import time.
"""

from __future__ import annotations

import logging
from importlib import metadata

logger = logging.getLogger("neft_plugins")

# Every version tested, oldest first. transformers and TRL are tested in pairs: the i-th of each together.
TESTED: dict[str, tuple[str, ...]] = {
    "transformers": ("4.46.3", "5.25.0"),
    "trl": ("0.16.1", "1.16.0"),
    "axolotl": ("0.17.0", "0.19.0"),
    "llamafactory": ("0.9.3", "0.9.4", "0.9.5"),
    "deepspeed": ("0.16.9", "0.19.8"),
    "ms-swift": ("4.1.0", "4.6.0"),
    "unsloth": ("2026.10.9",),
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
