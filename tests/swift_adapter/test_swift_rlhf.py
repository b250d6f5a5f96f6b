"""`neft-swift rlhf`: ms-swift's `swift rlhf` with our callback. Real DPO and GRPO runs on the tiny local Llama, on
CPU (the noise the first decoder layer gets in the pass that trains, per sequence, by the independent spy; the
passes under no_grad clean), the refusals before any model loads, and the web UI's RLHF and GRPO pages routed to
`neft-swift rlhf`."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest

from neft_plugins.integrations.swift.cli import main
from neft_plugins.integrations.swift.webui import RLHF_COMMAND, route_command
from support.logs import DETACHED_FROM_LLAMA, attached_to_llama, double_noise_error
from support.matrix import on_newest
from support.noise import assert_near_paper_norm, uniform_norm_tolerance

ALPHA = 5.0
STEPS = 2


@pytest.fixture(scope="module")
def tiny_preferences(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preference pairs as ms-swift's DPO records (messages, the chosen answer last, and
    rejected_response)."""
    path = tmp_path_factory.mktemp("tiny-preferences") / "dpo.jsonl"
    lines = []
    for record in tiny.dpo_records():
        messages = [{"role": "system", "content": record["system"]}] if record["system"] else []
        messages += [
            {"role": "user", "content": record["question"]},
            {"role": "assistant", "content": record["chosen"]},
        ]
        lines.append(json.dumps({"messages": messages, "rejected_response": record["rejected"]}) + "\n")
    path.write_text("".join(lines))
    return path


def test_neft_swift_rlhf_dpo_noises_each_policy_sequence_and_not_the_reference_pass(
    swift_run, swift_args, tiny_preferences, hidden_size
):
    argv = swift_args(
        "lora", steps=STEPS, dataset=tiny_preferences, per_device_train_batch_size=2, rlhf_type="dpo"
    )
    run = swift_run(["neft-swift", "rlhf", *argv, "--neftune_alpha", str(ALPHA)])
    assert run.returncode == 0, run.text[-4000:]
    assert attached_to_llama(ALPHA) in run.text and DETACHED_FROM_LLAMA in run.text
    passes = run.passes()[0]
    policy = [each for each in passes if each.training]
    reference = [each for each in passes if not each.training]
    assert len(policy) == STEPS, "one policy pass (chosen and rejected concatenated) a step"
    ratios = []
    for each in policy:
        assert each.rows == 4, "2 pairs: 2 chosen and 2 rejected rows"
        assert each.largest_padding_noise() == 0.0, "padding gets no noise"
        for length, norm in each.sequences():
            assert_near_paper_norm(
                [norm], ALPHA, rel=uniform_norm_tolerance(length * hidden_size), context=length
            )
            ratios.append(round(norm / (ALPHA / math.sqrt(3)), 3))
    print("neft-swift rlhf dpo, per-sequence noise norm / (alpha/sqrt(3)):", ratios)
    assert len(reference) == STEPS and all(not each.grad_enabled for each in reference)
    assert all(each.largest_noise() == 0.0 for each in reference), "the no_grad reference pass is clean"
    logged = [entry for entry in run.metrics if "neft/noise_norm" in entry]
    assert len(logged) == STEPS, run.text[-4000:]
    assert all(entry["neft/alpha"] == ALPHA and entry["neft/tokens_noised"] > 0 for entry in logged)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--neftune_alpah", "5"], "neftune_alpah: unknown key; did you mean neftune_alpha?"),
        (
            ["--neftune_alpha", "5", "--neftune_noise_alpha", "5"],
            double_noise_error("neftune_noise_alpha", 5, 5),
        ),
        (["--neftune_alpha", "-1"], "neftune_alpha: got -1"),
    ],
)
@pytest.mark.parametrize("command", [["sft"], ["rlhf", "--rlhf_type", "dpo"]], ids=["sft", "rlhf"])
def test_neft_swift_refuses_a_bad_key_before_ms_swift_runs(monkeypatch, capsys, command, argv, message):
    """In-process: our error (exit status 2) and ms-swift's entry point never reached, so no model loaded."""
    import runpy

    def never(*args, **kwargs):
        raise AssertionError("ms-swift's entry point ran")

    monkeypatch.setattr(runpy, "run_path", never)
    assert main([*command, "--model", "none", *argv]) == 2
    assert f"neft-swift: error: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("group", ["llm_rlhf", "llm_grpo"])
def test_the_web_uis_rlhf_and_grpo_commands_become_neft_swift_rlhf_with_the_slider_as_our_key(group):
    command, shown = route_command(
        ["swift", "rlhf", "--rlhf_type", "dpo", "--model", "m", "--neftune_noise_alpha", "5.0"],
        "nohup swift rlhf --rlhf_type 'dpo' --model 'm' --neftune_noise_alpha '5.0' > run.log 2>&1 &",
        group,
    )
    assert command == [*RLHF_COMMAND, "--rlhf_type", "dpo", "--model", "m", "--neftune_alpha", "5.0"]
    assert RLHF_COMMAND[-2:] == ["neft_plugins.integrations.swift.cli", "rlhf"]
    assert (
        shown == "nohup neft-swift rlhf --rlhf_type 'dpo' --model 'm' --neftune_alpha '5.0' > run.log 2>&1 &"
    )


@pytest.mark.parametrize(("module", "page"), [("llm_rlhf", "LLMRLHF"), ("llm_grpo", "LLMGRPO")])
def test_the_rlhf_and_grpo_pages_slider_is_ours_and_their_run_is_neft_swift_rlhf(
    module, page, tiny_model, tmp_path, monkeypatch
):
    """In-process: the page built with the patch (its slider labelled and ranged from our key), and the command
    its Begin button would start, built from the page's values with the slider at 5."""
    gr = pytest.importorskip("gradio", reason="the swift session installs gradio on the newest ms-swift")
    from neft_plugins.integrations.swift.webui import install
    from neft_plugins.keys import KEY

    install()
    ui = getattr(importlib.import_module(f"swift.ui.{module}"), page)
    ui.set_lang("en")
    with gr.Blocks():
        ui.build_ui(ui)
    slider = ui.element("neftune_noise_alpha")
    assert (slider.label, slider.maximum) == (KEY["neftune_alpha"].label, KEY["neftune_alpha"].ui_range[1])
    keys = ui.valid_element_keys()
    values = {key: ui.element(key).value for key in keys}
    values.update(
        model=str(tiny_model),
        model_type="llama",
        template="default",
        torch_dtype="float32",  # the page offers bf16 first, which a CPU refuses
        dataset=["d.jsonl"],
        neftune_noise_alpha=5.0,
    )
    monkeypatch.chdir(tmp_path)  # the page's default output_dir is under the working directory
    command, _, _, shown, _, _ = ui.train(*(values[key] for key in keys))
    assert command[: len(RLHF_COMMAND)] == RLHF_COMMAND
    assert command[command.index("--neftune_alpha") + 1] == "5.0" and "--neftune_noise_alpha" not in command
    assert "neft-swift rlhf " in shown and "--neftune_alpha '5.0'" in shown
    assert " swift rlhf " not in shown and "--neftune_noise_alpha" not in shown
    if page == "LLMGRPO":
        assert command[len(RLHF_COMMAND) : len(RLHF_COMMAND) + 2] == ["--rlhf_type", "grpo"]


@on_newest("ms-swift")
def test_neft_swift_rlhf_grpo_noises_the_policy_pass_and_not_the_no_grad_passes(
    swift_run, swift_args, hidden_size
):
    """GRPO on the tiny data's prompts (ms-swift's transformers engine generates, no vLLM): the pass that trains
    is noised per sequence; the rollouts (every decoding step of `generate`, in eval mode under inference_mode)
    and the reference and old-policy log-prob passes under no_grad are clean; the on-policy warning names the
    KL."""
    pytest.importorskip(
        "msgspec", reason="ms-swift's GRPO trainer imports msgspec (the swift session installs it)"
    )
    argv = swift_args(
        "lora",
        steps=1,
        per_device_train_batch_size=2,
        rlhf_type="grpo",
        num_generations=2,
        max_completion_length=8,
        reward_funcs="format",
        use_vllm="false",
    )
    run = swift_run(["neft-swift", "rlhf", *argv, "--neftune_alpha", str(ALPHA)])
    assert run.returncode == 0, run.text[-4000:]
    assert "neft_plugins: GRPOTrainer: NEFTune noises the policy pass" in run.text
    passes = run.passes()[0]
    policy = [each for each in passes if each.training]
    clean = [each for each in passes if not each.training]
    assert policy and clean
    for each in policy:
        assert each.largest_padding_noise() == 0.0
        for length, norm in each.sequences():
            assert_near_paper_norm(
                [norm], ALPHA, rel=uniform_norm_tolerance(length * hidden_size), context=length
            )
    assert all(not each.grad_enabled and each.largest_noise() == 0.0 for each in clean), (
        "no_grad passes clean"
    )
    # The rollouts: one prefill and a one-token step per generated token (max_completion_length=8), all measured.
    decoding = [each for each in clean if each.segments.shape[1] == 1]
    assert len(decoding) >= 7, [tuple(each.segments.shape) for each in clean]
