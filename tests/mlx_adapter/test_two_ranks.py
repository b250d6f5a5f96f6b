"""Two processes through `mlx.launch` (the ring backend on localhost): each rank draws its own noise from the one
seed, and the reports sum the ranks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from support.cli_run import run_cli


def test_two_ranks_draw_differently_and_report_together(tmp_path):
    script = Path(__file__).with_name("two_ranks.py")
    command = ["mlx.launch", "--backend", "ring", "-n", "2", "--python", sys.executable, script, tmp_path]
    done = run_cli(command, tmp_path)
    assert done.returncode == 0, done.describe()
    ranks = {
        line["rank"]: line
        for line in (json.loads(text) for text in done.stdout.splitlines() if text.startswith('{"rank"'))
    }
    assert set(ranks) == {0, 1}, done.stdout[-3000:]
    assert ranks[0]["norms"] != ranks[1]["norms"]
    # Each rank's report sums both ranks' tokens, so the two reports agree.
    assert ranks[0]["report"]["neft/tokens_noised"] == ranks[1]["report"]["neft/tokens_noised"]
    assert ranks[0]["report"]["neft/noise_norm"] == pytest.approx(5 / 3**0.5, rel=0.1)
