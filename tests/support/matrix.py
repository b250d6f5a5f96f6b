"""Which tests run on which cell of the version matrix (CI runs every cell on 2 cores, inside 90 minutes).

The newest tested version of each framework, and the newest transformers/TRL pair for ``tests/core``, runs the
whole suite. The older versions run what goes through the parts of the framework that change between releases:
config loading and refusals, the hook points, the CLI and its launcher, and one real LoRA training run through
the framework's own command (``tests/core``: every in-process test, ZeRO-3 and FSDP2 on 2 ranks). They skip the
runs that add a feature on top of that route (packing, QLoRA, DPO, full fine-tuning, multimodal, resume, the
other ZeRO stages, DeepSpeed through a framework's CLI, more ranks): each costs one or two minutes of CI on 2
cores, and what it adds is our same code behind the framework's same hook. Each skip names the version where
the test runs.
"""

from __future__ import annotations

import pytest

from neft_plugins.versions import TESTED, installed_version


def is_newest(package: str) -> bool:
    """Whether the installed ``package`` is the newest version in ``neft_plugins.versions.TESTED``."""
    return installed_version(package) == TESTED[package][-1]


def on_newest(package: str) -> pytest.MarkDecorator:
    """Run only where ``package`` is at its newest tested version (see the module's docstring for the rule)."""
    newest = TESTED[package][-1]
    return pytest.mark.skipif(
        not is_newest(package),
        reason=f"runs on {package} {newest}, the newest tested; older versions run the routes it builds on "
        "(tests/support/matrix.py)",
    )
