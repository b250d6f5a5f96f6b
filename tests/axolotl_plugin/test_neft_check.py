"""`neft check` on the Axolotl examples, in Axolotl's environment: the plugin imports, the keys are valid."""

from __future__ import annotations

import subprocess
import sys

import pytest

from support import ROOT

EXAMPLES = ROOT / "example_configs" / "axolotl"


@pytest.mark.parametrize("example", sorted(path.name for path in EXAMPLES.glob("*.yml")))
def test_neft_check_accepts_each_example(example):
    result = subprocess.run(
        [sys.executable, "-m", "neft_plugins.cli", "check", str(EXAMPLES / example)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "plugin neft_plugins.integrations.axolotl.NEFTunePlugin: imports" in result.stdout
