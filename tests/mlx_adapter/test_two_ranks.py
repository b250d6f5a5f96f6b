"""Two processes through `mlx.launch` (the ring backend on localhost): each rank draws its own noise from the one
seed, and the reports sum the ranks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.env import subprocess_env


def test_two_ranks_draw_differently_and_report_together(tmp_path):
    launch = shutil.which("mlx.launch", path=str(Path(sys.executable).parent))
    if launch is None:
        pytest.fail("mlx.launch is not installed beside this Python")
    script = Path(__file__).with_name("two_ranks.py")
    command = [launch, "--backend", "ring", "-n", "2", "--python", sys.executable, str(script), str(tmp_path)]
    done = subprocess.run(
        command, env=subprocess_env(), capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = {
        line["rank"]: line
        for line in (json.loads(text) for text in done.stdout.splitlines() if text.startswith('{"rank"'))
    }
    assert set(ranks) == {0, 1}, done.stdout[-3000:]
    assert ranks[0]["norms"] != ranks[1]["norms"]
    # Each rank's report sums both ranks' tokens, so the two reports agree.
    assert ranks[0]["report"]["neft/tokens_noised"] == ranks[1]["report"]["neft/tokens_noised"]
    assert ranks[0]["report"]["neft/noise_norm"] == pytest.approx(5 / 3**0.5, rel=0.1)
