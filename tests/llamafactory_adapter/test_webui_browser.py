"""A real browser on ``neft-llamafactory webui``: find the NEFTune controls, set alpha to 15, train the tiny
model, and see in the run's output that neft-plugins' noise was applied.

Headless Debian chromium driven by Playwright (``support.browser``); every process this test starts is stopped
by PID.
Set ``NEFT_SCREENSHOT=path.png`` to keep a screenshot of the option.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from support.browser import CHROMIUM, missing_packages, web_ui_page
from support.cli_run import console_script
from support.distributed import free_port
from support.llamafactory_cli import NORM_TOLERANCE, run_env
from support.logs import DETACHED, attached_to_llama
from support.noise import assert_near_paper_norm

# The nox matrix installs playwright and psutil in the newest LLaMA-Factory cell (0.9.5) only: one real-browser
# run is enough, and the web UI patch itself is tested in-process on every version (test_webui_patch.py).
_MISSING = missing_packages()
if _MISSING:
    pytest.skip(
        f"{' and '.join(_MISSING)} not installed: the real-browser test runs in the newest LLaMA-Factory cell "
        "only (llamafactory 0.9.5, where nox installs playwright); the patch is tested in-process here",
        allow_module_level=True,
    )

FAST_RUN = {
    "optim": "adamw_torch",
    "max_steps": 3,
    "logging_steps": 1,
    "save_steps": 1000,
    "gradient_accumulation_steps": 1,
    "preprocessing_num_workers": None,
    "bf16": False,
    "report_to": "none",
}

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no chromium at {CHROMIUM}: install Debian's (apt-get install -y chromium; the nox session does)",
)


@pytest.fixture
def board_dir(tmp_path, tiny_model, tiny_data):
    """LLaMA Board's working directory: the dataset in data/, the tiny model remembered as "Custom"."""
    shutil.copytree(tiny_data, tmp_path / "data")
    (tmp_path / "llamaboard_cache").mkdir()
    user_config = {
        "lang": "en",
        "hub_name": "huggingface",
        "last_model": "Custom",
        "path_dict": {"Custom": str(tiny_model)},
        "cache_dir": None,
    }
    (tmp_path / "llamaboard_cache" / "user_config.yaml").write_text(yaml.safe_dump(user_config))
    return tmp_path


def test_webui_trains_with_neftune_alpha_15(board_dir, tiny_model):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = run_env(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=port)
    with web_ui_page([console_script("neft-llamafactory"), "webui"], board_dir, env, url) as page:
        drive_the_ui(page, url, tiny_model)

    # What the launched run got: our key in its YAML, not transformers' built-in, and per-sequence noise.
    (run_dir,) = (board_dir / "saves" / "Custom" / "lora").iterdir()
    train_args = yaml.safe_load((run_dir / "training_args.yaml").read_text())
    assert train_args["neftune_alpha"] == 15.0 and "neftune_noise_alpha" not in train_args
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    norms = [entry["neft/noise_norm"] for entry in history if "neft/noise_norm" in entry]
    assert len(norms) == 3
    assert_near_paper_norm(norms, 15, rel=NORM_TOLERANCE)


def drive_the_ui(page, url: str, tiny_model: Path) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    extra_tab = page.get_by_text("Extra configurations", exact=True)
    extra_tab.wait_for()
    expect(page.get_by_label("Model path")).to_have_value(str(tiny_model))  # LLaMA Board remembered it
    dataset = page.get_by_label("Dataset", exact=True).filter(visible=True)
    dataset.click()  # LLaMA Board lists the datasets of data/dataset_info.json
    page.get_by_role("option", name="tiny_alpaca").click()
    page.keyboard.press("Escape")

    extra_tab.click()
    alpha = page.locator("#neftune-alpha")
    expect(alpha).to_contain_text("NEFTune alpha (neft-plugins)")
    slider = alpha.locator("input[type=range]")
    expect(slider).to_have_attribute("max", "20")  # LLaMA Board's own slider stops at 10
    number = alpha.locator("input[type=number]")
    number.fill("15")
    number.press("Enter")
    expect(slider).to_have_value("15")
    for key, default in (("distribution", "uniform"), ("schedule", "constant"), ("scope", "all")):
        expect(page.locator(f"#neftune-{key} input")).to_have_value(default)
    page.get_by_label("Extra arguments").filter(visible=True).fill(json.dumps(FAST_RUN))
    if os.environ.get("NEFT_SCREENSHOT"):  # the option, from the accordion's title to our drop-downs
        page.locator("#neftune-length").scroll_into_view_if_needed()
        top, bottom = extra_tab.bounding_box(), page.locator("#neftune-length").bounding_box()
        clip = {"x": top["x"] - 14, "y": top["y"] - 12}
        clip.update(
            width=bottom["x"] + bottom["width"] + 14 - clip["x"],
            height=bottom["y"] + bottom["height"] + 14 - clip["y"],
        )
        page.mouse.move(0, 0)
        page.screenshot(path=os.environ["NEFT_SCREENSHOT"], clip=clip)

    page.get_by_role("button", name="Start", exact=True).click()
    page.wait_for_function(
        "() => ['Finished.', 'Failed.'].some(word => document.body.innerText.includes(word))", timeout=400_000
    )
    shown = page.locator("body").inner_text()
    assert "Finished." in shown, shown[-4000:]
    # The run's output, as LLaMA Board shows it: our attach line and our metrics at alpha 15.
    assert attached_to_llama(15) in shown
    assert "neft/alpha=15" in shown and "neft/noise_norm=" in shown
    assert DETACHED in shown
