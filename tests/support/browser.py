"""A real browser on a web UI a test starts: Debian's headless chromium (``/usr/bin/chromium``, or
``$NEFT_CHROMIUM``; ``tests/llamafactory_adapter/install_chromium.sh`` installs it) driven by Playwright. Every
process the test starts (the web UI, the runs it spawns, Playwright's driver, chromium) is stopped by PID."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("NEFT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def missing_packages() -> list[str]:
    """What a browser test needs and this environment lacks, of playwright and psutil."""
    return [name for name in ("playwright", "psutil") if importlib.util.find_spec(name) is None]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the web UI exited early"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer in {timeout} s")


def descendants() -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process().children(recursive=True)}


def stop(pids: set[int]) -> set[int]:
    """Terminate each process by PID, kill what is left; return the PIDs still alive."""
    import psutil

    processes = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            process.terminate()
            processes.append(process)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=10)
    for process in alive:
        process.kill()
    _, alive = psutil.wait_procs(alive, timeout=10)
    return {process.pid for process in alive}


@contextmanager
def web_ui_page(command: list[str], folder: Path, env: dict[str, str], url: str) -> Iterator[Any]:
    """Start the web UI ``command`` in ``folder`` (its output in ``webui.log`` there), wait until it serves
    ``url``, and yield a headless chromium page (not yet on ``url``); a failure leaves ``failure.png`` in
    ``folder``. Afterwards every process started meanwhile is stopped, and none may be left."""
    from playwright.sync_api import sync_playwright

    before = descendants()
    log = open(folder / "webui.log", "w")  # noqa: SIM115 - closed in finally
    webui = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    started: set[int] = set()
    try:
        wait_for_http(url, webui)
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            started |= descendants() - before
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(60_000)
            try:
                yield page
            except BaseException:
                page.screenshot(path=str(folder / "failure.png"), full_page=True)
                raise
            finally:
                started |= descendants() - before
                browser.close()
    finally:
        started |= descendants() - before
        started.add(webui.pid)
        still_alive = stop(started)
        log.close()
    assert not still_alive, f"processes still alive: {still_alive}"
    assert not (descendants() - before), "a process started by this test is still running"
