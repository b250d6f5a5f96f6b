"""`neft check` on the Axolotl examples, in Axolotl's environment: the plugin imports, the keys are valid."""

from __future__ import annotations

import subprocess
import sys

from support import ROOT

EXAMPLES = ROOT / "example_configs" / "axolotl"


def test_neft_check_accepts_every_example():
    examples = sorted(EXAMPLES.glob("*.yml"))
    result = subprocess.run(
        [sys.executable, "-m", "neft_plugins.cli", "check", *map(str, examples)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    imports = "plugin neft_plugins.integrations.axolotl.NEFTunePlugin: imports"
    assert len(examples) >= 5 and result.stdout.count(imports) == len(examples), result.stdout
