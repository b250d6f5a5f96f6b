"""One way to run a framework's command line in a test: ``run_cli`` starts it as a process and returns a ``CliRun``
(what it printed, the metrics it logged, what the first-block spy recorded, its output folder); ``RunCache`` runs
each command once per session, so one run answers every test that reads it.

The process gets the environment every test process gets (``support.env.subprocess_env``: offline, ``tests/`` on
PYTHONPATH), this Python's bin first on PATH (the frameworks start ``accelerate`` and ``torchrun`` by name) and,
with ``spy=True``, the first-block spy (``support.spy``) recording into ``folder/spy``. What is one framework's
(its config, its paths, its overrides) stays in its own module: ``support.axolotl_cli``,
``support.llamafactory_cli``, ``tests/swift_adapter/conftest.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from support.env import subprocess_env
from support.logs import printed_metrics

if TYPE_CHECKING:
    import pytest

    from support.spy import Pass

RUN_TIMEOUT_S = 600
T = TypeVar("T")


def console_script(name: str) -> str:
    """``name``'s console script beside this Python (as in an activated venv), else on PATH."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed beside {sys.executable}"
    return found


@dataclass
class CliRun:
    """A finished command: what it printed and wrote."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str  # empty where the run's stderr went into stdout (``merged``)
    folder: Path | None = None  # the run's own folder: the spy's records in spy/, run.log
    output_dir: Path | None = None  # where the trainer writes
    config: dict[str, Any] = field(default_factory=dict)  # the config a test built for it

    @property
    def text(self) -> str:
        return self.stdout + self.stderr

    @cached_property
    def metrics(self) -> list[dict[str, float]]:
        """The per-step logs the trainer printed (``support.logs.printed_metrics``)."""
        return printed_metrics(self.stdout)

    def metric(self, key: str) -> list[float]:
        return [step[key] for step in self.metrics]

    def describe(self, tail: int = 6000) -> str:
        return f"{Path(self.command[0]).name} exited {self.returncode}; last output:\n{self.text[-tail:]}"

    def passes(self) -> dict[int, list[Pass]]:
        """What the first block received, by rank (``support.spy``; the run started with ``spy=True``)."""
        from support.spy import passes

        assert self.folder is not None, "the run has no folder for the spy's records"
        return passes(self.folder / "spy")

    def written_logs(self) -> list[dict[str, Any]]:
        """The step logs (those with a loss) as the trainer wrote them, at full precision: ``trainer_state.json``'s
        log history in ``output_dir``, or, from ms-swift, rank 0's ``logging.jsonl`` in its versioned folder
        ``v*/``."""
        assert self.output_dir is not None, "the run has no output_dir"
        state = self.output_dir / "trainer_state.json"
        if state.is_file():
            entries = json.loads(state.read_text())["log_history"]
        else:
            (log_file,) = self.output_dir.glob("v*/logging.jsonl")
            entries = [json.loads(line) for line in log_file.read_text().splitlines()]
        return [entry for entry in entries if "loss" in entry]


def run_cli(
    command: Sequence[str | Path],
    cwd: Path,
    *,
    folder: Path | None = None,
    output_dir: Path | None = None,
    spy: bool = False,
    paths: Sequence[Path] = (),
    merged: bool = False,
    timeout: float = RUN_TIMEOUT_S,
    config: dict[str, Any] | None = None,
    **env: str,
) -> CliRun:
    """``command`` (a console script's name first, or a path) in ``cwd``, with ``paths`` after ``tests/`` on
    PYTHONPATH and ``env`` set. With ``spy``, the first-block spy records in ``folder/spy``; with ``merged``,
    stderr goes into stdout (one stream, in the order it was printed). Where there is a ``folder``, the output is
    kept in ``folder/run.log``."""
    program, *rest = map(str, command)
    started = [program if os.sep in program else console_script(program), *rest]
    if spy:
        from support.spy import SITE, SPY_DIR

        assert folder is not None, "the spy records into the run's folder"
        (folder / "spy").mkdir(parents=True, exist_ok=True)
        paths = (SITE, *paths)
        env = {SPY_DIR: str(folder / "spy"), **env}
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    done = subprocess.run(
        started,
        cwd=cwd,
        env=subprocess_env(*paths, **{"PATH": path, **env}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    run = CliRun(started, done.returncode, done.stdout, done.stderr or "", folder, output_dir, config or {})
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "run.log").write_text(run.text, encoding="utf-8")
    return run


class RunCache:
    """Each run once per session: ``cache(start, *args, **kwargs)`` is ``start(folder, *args, **kwargs)``, run in a
    new folder the first time ``start`` is asked for with these arguments, and the same result every later time.
    ``cache.cached(start)`` is that call with ``start`` bound, for a fixture to hand to its tests."""

    def __init__(self, folders: pytest.TempPathFactory) -> None:
        self._folders = folders
        self._runs: dict[tuple, Any] = {}

    def __call__(self, start: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        key = (start.__module__, start.__qualname__, args, tuple(sorted(kwargs.items())))
        if key not in self._runs:
            self._runs[key] = start(self._folders.mktemp(start.__name__), *args, **kwargs)
        return self._runs[key]

    def cached(self, start: Callable[..., T]) -> Callable[..., T]:
        return partial(self, start)
