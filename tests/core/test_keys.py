"""The keys are declared once (``neft_plugins.keys``): the config's fields, ``neft keys``, and the README's
keys table all say the same."""

from __future__ import annotations

import re
from pathlib import Path

from neft_plugins import CONFIG_KEYS, NEFTuneConfig
from neft_plugins.cli import main
from neft_plugins.keys import KEYS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_config_field_is_one_key_with_its_type_and_default():
    defaults = NEFTuneConfig().as_dict()
    assert tuple(key.name for key in KEYS) == CONFIG_KEYS
    for key in KEYS:
        assert key.default == defaults[key.name]
        assert key.help and key.label and key.values
        if key.choices is not None:
            assert key.default in key.choices()


def test_neft_keys_prints_each_key_with_its_help(capsys):
    assert main(["keys"]) == 0
    shown = capsys.readouterr().out
    for key in KEYS:
        assert f"{key.name}: {key.values}" in shown and key.help in shown


def test_the_readme_keys_table_has_every_key_in_order_with_its_default():
    rows = re.findall(r"^\| `(neftune_\w+)` \|[^|]*\| ([^|]*) \|", README.read_text(), re.M)
    assert [name for name, _ in rows] == list(CONFIG_KEYS)
    for (_, default), key in zip(rows, KEYS, strict=True):
        shown = "null" if key.default is None else str(key.default).lower()
        assert shown.removesuffix(".0") in default.lower(), (key.name, default)
