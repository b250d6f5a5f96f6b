"""Our keys in `neft-swift sft` and in the `swift sft --external_plugins` route: checked before any model loads,
with the messages every integration gives."""

from __future__ import annotations

import logging

import pytest

from neft_plugins import NEFTuneCompatibilityError, versions
from neft_plugins.config import NEFTuneConfig, NEFTuneConfigError, NEFTuneConflictError
from neft_plugins.integrations.swift.callback import (
    PLUGIN_FILE,
    callbacks_of,
    config_from_environment,
    environment_mapping,
    prepare_argv,
    register,
    with_callback,
)
from neft_plugins.integrations.swift.cli import main
from neft_plugins.integrations.swift.webui import SFT_COMMAND, route_command
from support.logs import double_noise_error


def test_our_flags_are_taken_out_typed_and_the_rest_left_for_ms_swift():
    config, rest = prepare_argv(
        ["--model", "m", "--neftune_alpha", "15", "--neftune_scope=response", "--lr", "1"]
    )
    assert (config.neftune_alpha, config.neftune_scope) == (15.0, "response")
    assert rest == ["--model", "m", "--lr", "1"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--neftune_alpha", "-1"], "neftune_alpha: got -1"),
        (["--neftune_alpha", "5", "--neftune_distribution", "cauchy"], "neftune_distribution: got 'cauchy'"),
        (["--neftune_alpah", "5"], "neftune_alpah: unknown key; did you mean neftune_alpha?"),
    ],
)
def test_a_bad_key_is_refused_naming_it(argv, message):
    with pytest.raises(NEFTuneConfigError, match=message):
        prepare_argv(argv)


def test_the_builtin_key_beside_ours_is_refused_with_the_one_message():
    with pytest.raises(NEFTuneConflictError) as error:
        prepare_argv(["--neftune_alpha", "5", "--neftune_noise_alpha", "5"])
    assert str(error.value) == double_noise_error("neftune_noise_alpha", 5, 5)


def test_ms_swifts_own_neftune_tuner_beside_ours_is_refused():
    with pytest.raises(NEFTuneConflictError, match=r"tuner_type: got 'neftune' beside neftune_alpha: 5\.0"):
        prepare_argv(["--neftune_alpha", "5", "--tuner_type", "neftune"])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--model", "m"], ["--model", "m", "--callbacks", "neftune"]),
        (
            ["--callbacks", "lisa", "perf_log", "--x", "1"],
            ["--x", "1", "--callbacks", "neftune", "lisa", "perf_log"],
        ),
        (["--callbacks=lisa"], ["--callbacks", "neftune", "lisa"]),
        (["--callbacks", "neftune"], ["--callbacks", "neftune"]),
    ],
)
def test_ours_joins_the_users_callbacks_in_one_flag(argv, expected):
    assert with_callback(argv) == expected
    assert callbacks_of(expected)[0] == "neftune"


def test_environment_keys_are_typed_and_a_misspelt_one_is_refused(monkeypatch):
    monkeypatch.setenv("NEFTUNE_ALPHA", "10")
    monkeypatch.setenv("NEFTUNE_SEED", "3")
    assert environment_mapping() == {"neftune_alpha": 10, "neftune_seed": 3}
    config = config_from_environment(["--callbacks", "neftune"])
    assert (config.neftune_alpha, config.neftune_seed) == (10.0, 3)
    monkeypatch.setenv("NEFTUNE_SCOPEE", "all")
    with pytest.raises(NEFTuneConfigError, match="neftune_scopee: unknown key; did you mean neftune_scope"):
        config_from_environment(["--callbacks", "neftune"])


def test_the_plugin_route_refuses_the_builtin_flag_and_a_missing_callback(monkeypatch):
    monkeypatch.setenv("NEFTUNE_ALPHA", "5")
    with pytest.raises(NEFTuneConflictError) as error:
        config_from_environment(["--callbacks", "neftune", "--neftune_noise_alpha", "5"])
    assert str(error.value) == double_noise_error("neftune_noise_alpha", 5, 5)
    with pytest.raises(NEFTuneConfigError, match="add --callbacks neftune"):
        config_from_environment(["--model", "m"])


def test_swift_sft_with_the_plugin_stops_on_a_missing_callback(swift_run, tmp_path):
    """ms-swift's own `swift sft`, in a process: the plugin's refusal, as neft-swift's errors are (exit status 2)."""
    run = swift_run(
        ["swift", "sft", "--model", str(tmp_path / "none"), "--external_plugins", str(PLUGIN_FILE)],
        NEFTUNE_ALPHA="5",
    )
    assert run.returncode == 2, run.text
    assert (
        "neft-swift plugin: error: NEFTUNE_ALPHA: got 5.0, but --callbacks does not name 'neftune'"
        in run.stderr
    )


def test_neft_swift_plugin_prints_the_file_and_the_flags(capsys):
    assert main(["plugin"]) == 0
    printed = capsys.readouterr().out
    for command in ("swift sft", "swift rlhf --rlhf_type dpo"):
        assert (
            f"NEFTUNE_ALPHA=5 {command} ... --external_plugins {PLUGIN_FILE} --callbacks neftune" in printed
        )
    assert main(["plugin", "--path"]) == 0
    assert capsys.readouterr().out.strip() == str(PLUGIN_FILE)


def test_the_web_uis_sft_command_becomes_neft_swift_sft_with_the_slider_as_our_key():
    command, shown = route_command(
        ["swift", "sft", "--model", "m", "--neftune_noise_alpha", "5.0"],
        "nohup swift sft --model 'm' --neftune_noise_alpha '5.0' > run.log 2>&1 &",
    )
    assert command == [*SFT_COMMAND, "--model", "m", "--neftune_alpha", "5.0"]
    assert shown == "nohup neft-swift sft --model 'm' --neftune_alpha '5.0' > run.log 2>&1 &"


def test_a_web_ui_that_runs_another_command_is_a_missing_hook_point():
    with pytest.raises(NEFTuneCompatibilityError) as raised:
        route_command(["swift", "rlhf", "--model", "m"], "swift rlhf --model 'm'")
    assert str(raised.value) == (
        f"ms-swift {versions.installed_version('ms-swift')}: the web UI's SFT page built ['swift', 'rlhf'], not "
        "['swift', 'sft']; neft-swift web-ui relies on it. Install a tested version (ms-swift 4.1.0 to 4.6.0)."
    )


class _Trainer:
    """What binding our callback touches on ms-swift's trainer: train and log."""

    def train(self, *args, **kwargs):
        pass

    def log(self, logs, *args, **kwargs):
        pass


@pytest.mark.parametrize(("version", "warned"), [("9.0.0", True), ("4.3.0", False)])
def test_an_untested_ms_swift_warns_once_when_our_callback_is_built(monkeypatch, caplog, version, warned):
    """ms-swift builds the callback (``callbacks_map[name](args, trainer)``): the one untested-version warning."""
    from swift.callbacks import callbacks_map

    installed = versions.installed_version
    monkeypatch.setattr(
        versions,
        "installed_version",
        lambda package: version if package == "ms-swift" else installed(package),
    )
    monkeypatch.setattr(versions, "_warned", set())
    monkeypatch.setitem(callbacks_map, "neftune-test", None)  # removed again after the test
    caplog.set_level(logging.WARNING, logger="neft_plugins")
    register(NEFTuneConfig(neftune_alpha=5), "neftune-test")
    for _ in range(2):
        callbacks_map["neftune-test"](None, _Trainer())
    warnings = [record.getMessage() for record in caplog.records if "untested" in record.getMessage()]
    expected = (
        f"neft_plugins: ms-swift {version} is untested (tested: ms-swift 4.1.0 to 4.6.0); every hook point it uses "
        "was found, so it runs"
    )
    assert warnings == ([expected] if warned else [])
