"""Loaded at start-up by every Python process with this folder on PYTHONPATH: where ``NEFT_SPY_DIR`` is set, it
installs the first-block spy (``support.spy.install``). Python loads only the first ``sitecustomize`` on the path,
so this one then runs the next one (the Axolotl 0.17 session's CPU shim), which it would otherwise hide."""

import os
import sys
from pathlib import Path

if os.environ.get("NEFT_SPY_DIR"):
    from support.spy import install

    install()

_here = Path(__file__).resolve().parent
for _entry in sys.path:
    _next = Path(_entry or ".").resolve() / "sitecustomize.py"
    if _next.parent != _here and _next.is_file():
        exec(compile(_next.read_text(), str(_next), "exec"))
        break
