"""`neft check` on the Axolotl examples, in Axolotl's environment: the plugin imports, the keys are valid. The
console script itself, in a process of its own: the plugin's import is checked in a fresh interpreter."""

from __future__ import annotations

from support import ROOT
from support.cli_run import run_cli

EXAMPLES = ROOT / "example_configs" / "axolotl"


def test_neft_check_accepts_every_example():
    examples = sorted(EXAMPLES.glob("*.yml"))
    result = run_cli(["neft", "check", *examples], ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    imports = "plugin neft_plugins.integrations.axolotl.NEFTunePlugin: imports"
    assert len(examples) >= 5 and result.stdout.count(imports) == len(examples), result.stdout
