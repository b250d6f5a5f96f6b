"""A real browser on ``neft-swift web-ui`` (ms-swift's web UI): on the SFT page, the NEFTune slider is ours (label
and range from neft_plugins.keys); set it to 5, start training the tiny model on CPU, and see that the run it
started was ``neft-swift sft`` with our noise (the attach line, the neft/* logs, and the first-block spy)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from neft_plugins.keys import KEY
from support import ROOT
from support.browser import CHROMIUM, descendants, missing_packages, web_ui_page
from support.cli_run import console_script
from support.distributed import free_port
from support.env import subprocess_env
from support.logs import DETACHED_FROM_LLAMA, attached_to_llama
from support.noise import assert_near_paper_norm, uniform_norm_tolerance
from support.spy import SITE, SPY_DIR, passes

ALPHA = 5.0
RUN_TIMEOUT = 420
ROUTED = "neft_plugins.integrations.swift.cli"  # what the page's run is, instead of `swift sft`
# gradio's check of its own page, given time on a busy machine (see its sitecustomize.py)
GRADIO_SITE = Path(__file__).with_name("gradio_site")

pytestmark = [
    pytest.mark.skipif(
        bool(missing_packages()),
        reason=f"{' and '.join(missing_packages())} not installed (the swift session installs them)",
    ),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"no chromium at {CHROMIUM}: install Debian's (tests/llamafactory_adapter/install_chromium.sh)",
    ),
]


def test_the_sft_page_trains_with_our_neftune(tmp_path, tiny_model, cpu_run_settings, hidden_size):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    output_dir = tmp_path / "out"
    # ms-swift's "Other params" field: what the tiny CPU run needs beside the page's fields
    more_params = {**cpu_run_settings, "output_dir": str(output_dir)}
    env = subprocess_env(
        SITE,
        ROOT,
        GRADIO_SITE,
        **{SPY_DIR: str(tmp_path / "spy"), "CUDA_VISIBLE_DEVICES": "-1", "MODELSCOPE_CACHE": str(tmp_path)},
    )
    (tmp_path / "spy").mkdir()
    command = [console_script("neft-swift"), "web-ui", "--server_name", "127.0.0.1", "--server_port", port]
    with web_ui_page([*command, "--lang", "en"], tmp_path, env, url) as page:
        before = descendants()
        drive_the_page(page, url, tiny_model, more_params)
        wait_for_the_run(before)
    (run_log,) = output_dir.glob("v*/runs/run.log")  # the page adds ms-swift's version folder
    log = run_log.read_text()
    assert attached_to_llama(ALPHA) in log and DETACHED_FROM_LLAMA in log, log[-4000:]
    args = json.loads((run_log.parent.parent / "args.json").read_text())  # what the run parsed: ours only
    assert args["neftune_noise_alpha"] is None and "'neft/alpha': 5.0" in log, log[-4000:]
    by_rank = passes(tmp_path / "spy")
    assert len(by_rank[0]) == 2
    for each in by_rank[0]:
        assert each.largest_padding_noise() == 0.0
        for length, norm in each.sequences():
            assert_near_paper_norm([norm], ALPHA, rel=uniform_norm_tolerance(length * hidden_size))


def drive_the_page(page, url: str, tiny_model: Path, more_params: dict[str, object]) -> None:
    from playwright.sync_api import expect

    def field(elem_id: str):  # the SFT page's; the RLHF and GRPO pages reuse the elem_ids
        return page.locator(f"#{elem_id}").filter(visible=True)

    page.goto(url)
    model = field("model").locator("input")
    model.fill(str(tiny_model))
    model.press("Enter")
    page.get_by_text("Hyper settings", exact=False).filter(visible=True).first.click()
    alpha = field("neftune_noise_alpha")
    expect(alpha).to_contain_text(KEY["neftune_alpha"].label)
    slider = alpha.locator("input[type=range]")
    expect(slider).to_have_attribute("max", str(int(KEY["neftune_alpha"].ui_range[1])))
    number = alpha.locator("input[type=number]")
    number.fill(str(int(ALPHA)))
    number.press("Enter")
    expect(slider).to_have_value(str(int(ALPHA)))
    page.get_by_text("Extra settings", exact=True).filter(visible=True).first.click()
    field("more_params").locator("textarea").fill(json.dumps(more_params))
    page.get_by_role("button", name="Begin").filter(visible=True).first.click()


def wait_for_the_run(before: set[int]) -> None:
    """Find the run the page started (``neft-swift sft``, not ``swift sft``) and wait until it ends."""
    import psutil

    deadline = time.monotonic() + 120
    run = None
    while run is None:
        assert time.monotonic() < deadline, "the page started no `neft-swift sft` run"
        for child in psutil.Process().children(recursive=True):
            try:
                if child.pid not in before and ROUTED in child.cmdline():
                    run = child
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.5)
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if run.status() == psutil.STATUS_ZOMBIE:  # ended; the web UI never waits for it
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(1)
    raise AssertionError(f"the run did not end in {RUN_TIMEOUT} s")
