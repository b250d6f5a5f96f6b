"""On an untested LLaMA-Factory, a missing hook point stops with a clear message, never a silent misbehaviour."""

from __future__ import annotations

import logging

import pytest

from neft_plugins.integrations.llamafactory import compat
from neft_plugins.integrations.llamafactory.compat import LlamaFactoryHookError
from neft_plugins.versions import TESTED


def test_installed_version_is_tested_and_hook_points_exist():
    assert compat.llamafactory_version() in compat.TESTED_VERSIONS
    assert "callbacks" in compat.train_entry().__code__.co_varnames
    hooks = compat.webui_hooks()
    assert hooks.version == compat.llamafactory_version()


@pytest.fixture
def untested(monkeypatch, caplog):
    monkeypatch.setattr(compat, "llamafactory_version", lambda: "0.10.0")
    caplog.set_level(logging.WARNING, logger="neft_plugins")
    return caplog


def test_untested_version_warns(untested):
    compat.train_entry()
    assert f"llamafactory 0.10.0 is untested (tested: {', '.join(TESTED['llamafactory'])})" in untested.text


def test_run_exp_without_callbacks_fails_clearly(untested, monkeypatch):
    import llamafactory.train.tuner as tuner

    monkeypatch.setattr(tuner, "run_exp", lambda args=None: None)
    with pytest.raises(LlamaFactoryHookError) as raised:
        compat.train_entry()
    message = str(raised.value)
    assert message.startswith(
        "llamafactory 0.10.0: llamafactory.train.tuner.run_exp(args=None) does not take"
    )
    assert f"tested with llamafactory {', '.join(TESTED['llamafactory'])}" in message
    assert "pip install 'llamafactory==0.9.5'" in message


def test_missing_run_exp_fails_clearly(untested, monkeypatch):
    import llamafactory.train.tuner as tuner

    monkeypatch.delattr(tuner, "run_exp")
    with pytest.raises(LlamaFactoryHookError, match=r"llamafactory\.train\.tuner\.run_exp is missing"):
        compat.train_entry()


def test_webui_launch_without_llamafactory_cli_fails_clearly(untested, monkeypatch):
    from llamafactory.webui.runner import Runner

    def _launch(self, data, do_train):  # a future runner that starts training some other way
        yield from ()

    monkeypatch.setattr(Runner, "_launch", _launch)
    with pytest.raises(LlamaFactoryHookError, match=r"Runner\._launch no longer starts Popen"):
        compat.webui_hooks()


def test_webui_without_builtin_key_fails_clearly(untested, monkeypatch):
    from llamafactory.webui.runner import Runner

    monkeypatch.setattr(Runner, "_parse_train_args", lambda self, data: {})
    with pytest.raises(LlamaFactoryHookError, match="no longer sets neftune_noise_alpha"):
        compat.webui_hooks()


def test_webui_without_locale_entry_fails_clearly(untested, monkeypatch):
    from llamafactory.webui import locales

    monkeypatch.delitem(locales.LOCALES, "neftune_alpha")
    with pytest.raises(LlamaFactoryHookError, match="LOCALES has no neftune_alpha entry"):
        compat.webui_hooks()
