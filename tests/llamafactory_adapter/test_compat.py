"""On an untested LLaMA-Factory, a missing hook point stops with a clear message, never a silent misbehaviour."""

from __future__ import annotations

import logging

import pytest

from neft_plugins import NEFTuneCompatibilityError, versions
from neft_plugins.integrations.llamafactory import compat
from neft_plugins.integrations.llamafactory.compat import LlamaFactoryHookError

# The one shape of a missing hook point's error, for llamafactory 0.10.0 (neft_plugins.versions.missing_hook_point).
RELIES = "; neft-plugins' LLaMA-Factory adapter relies on it. Install a tested version (llamafactory 0.9.3 to 0.9.5)."


def test_installed_version_is_tested_and_hook_points_exist():
    assert compat.llamafactory_version() in compat.TESTED_VERSIONS
    assert "callbacks" in compat.train_entry().__code__.co_varnames
    hooks = compat.webui_hooks()
    assert hooks.version == compat.llamafactory_version()


@pytest.fixture
def untested(monkeypatch, caplog):
    """llamafactory 0.10.0 installed (the other packages as they are), the one-per-process warnings not yet given."""
    installed = versions.installed_version
    monkeypatch.setattr(
        versions,
        "installed_version",
        lambda package: "0.10.0" if package == "llamafactory" else installed(package),
    )
    monkeypatch.setattr(versions, "_warned", set())
    caplog.set_level(logging.WARNING, logger="neft_plugins")
    return caplog


def untested_warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if "untested" in record.getMessage()]


def test_untested_version_warns_once_as_every_framework_does(untested):
    compat.train_entry()
    compat.webui_hooks()
    assert untested_warnings(untested) == [
        "neft_plugins: llamafactory 0.10.0 is untested (tested: llamafactory 0.9.3 to 0.9.5); every hook point it "
        "uses was found, so it runs"
    ]


def test_a_tested_version_gets_no_warning(monkeypatch, caplog):
    monkeypatch.setattr(versions, "_warned", set())
    assert compat.check_version() in compat.TESTED_VERSIONS
    assert untested_warnings(caplog) == []


def test_run_exp_without_callbacks_fails_clearly(untested, monkeypatch):
    import llamafactory.train.tuner as tuner

    monkeypatch.setattr(tuner, "run_exp", lambda args=None: None)
    with pytest.raises(NEFTuneCompatibilityError) as raised:
        compat.train_entry()
    assert str(raised.value) == (
        f"llamafactory 0.10.0: llamafactory.train.tuner.run_exp(args=None) does not take (args, callbacks){RELIES}"
    )
    assert untested_warnings(untested) == []  # stopped before the warning that says it runs


def test_missing_run_exp_fails_clearly(untested, monkeypatch):
    import llamafactory.train.tuner as tuner

    monkeypatch.delattr(tuner, "run_exp")
    with pytest.raises(LlamaFactoryHookError) as raised:  # the older name of the one type
        compat.train_entry()
    assert str(raised.value) == f"llamafactory 0.10.0: llamafactory.train.tuner.run_exp missing{RELIES}"


def test_webui_launch_without_llamafactory_cli_fails_clearly(untested, monkeypatch):
    from llamafactory.webui.runner import Runner

    def _launch(self, data, do_train):  # a future runner that starts training some other way
        yield from ()

    monkeypatch.setattr(Runner, "_launch", _launch)
    with pytest.raises(
        NEFTuneCompatibilityError,
        match=r"^llamafactory 0\.10\.0: webui\.runner\.Runner\._launch no longer starts Popen",
    ):
        compat.webui_hooks()


def test_webui_without_builtin_key_fails_clearly(untested, monkeypatch):
    from llamafactory.webui.runner import Runner

    monkeypatch.setattr(Runner, "_parse_train_args", lambda self, data: {})
    with pytest.raises(
        NEFTuneCompatibilityError, match=r"Runner\._parse_train_args no longer sets neftune_noise_alpha; "
    ):
        compat.webui_hooks()


def test_webui_without_locale_entry_fails_clearly(untested, monkeypatch):
    from llamafactory.webui import locales

    monkeypatch.delitem(locales.LOCALES, "neftune_alpha")
    with pytest.raises(NEFTuneCompatibilityError) as raised:
        compat.webui_hooks()
    assert (
        str(raised.value) == f"llamafactory 0.10.0: webui.locales.LOCALES has no neftune_alpha entry{RELIES}"
    )
