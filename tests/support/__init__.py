"""What the test sessions share: tiny local models and data, the offline environment, the runs' printed output
and the paper's noise norm. ``tests/`` is on pytest's ``pythonpath``; scripts a test starts get it through
``support.env.subprocess_env``."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
