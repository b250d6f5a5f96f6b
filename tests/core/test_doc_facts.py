"""What the documentation states about the code is what the code does: the tested versions are
``neft_plugins.versions.TESTED``; every listing of the log keys names every key the code logs; the attach and
detach lines shown are the ones the engine logs."""

from __future__ import annotations

import inspect
import logging
import re

import pytest
import torch

from neft_plugins import clean_loss, neftune
from neft_plugins.versions import TESTED
from support import ROOT
from support.doc_blocks import DOCUMENTS, extract
from support.logs import ATTACHED, DETACHED, LLAMA_FIRST_BLOCK
from support.tiny import make_llama

PAGES = {path.name: path for path in DOCUMENTS}
VERSION = r"\d+\.\d+\.\d+"


def page(name: str) -> str:
    return PAGES[name].read_text(encoding="utf-8")


def pinned(text: str, package: str) -> list[str]:
    """The versions ``package==X`` is pinned to in ``text``."""
    return re.findall(rf"(?<![\w-]){re.escape(package)}==({VERSION})", text)


def prose(text: str) -> str:
    return re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)


# Tested versions --------------------------------------------------------------------------------------------------


def test_the_trl_page_names_exactly_the_tested_transformers_trl_pairs():
    text = page("trl.md")
    section = text[text.index("## Tested versions") :]
    pip_lines = [line for line in section.splitlines() if line.startswith("pip install")]
    pinned_pairs = {(pinned(line, "transformers")[0], pinned(line, "trl")[0]) for line in pip_lines}
    named_pairs = set(re.findall(rf"({VERSION}) \+ ({VERSION})", prose(section)))
    tested = set(zip(TESTED["transformers"], TESTED["trl"], strict=True))
    assert pinned_pairs == tested, "the install lines are the tested cells"
    assert named_pairs == tested, "the pairs named as tested are the tested cells"


@pytest.mark.parametrize(
    ("name", "package", "pin"),
    [
        ("axolotl.md", "axolotl", "axolotl"),
        ("llamafactory.md", "llamafactory", "llamafactory"),
        ("swift.md", "ms-swift", "ms-swift"),
        ("unsloth.md", "unsloth", "unsloth"),
    ],
)
def test_each_framework_page_names_and_installs_exactly_the_tested_versions(name, package, pin):
    text = page(name)
    headline = re.search(r"Tested with \*\*(.+?)\*\*", text)
    assert headline, f"{name} opens with 'Tested with **<versions>**'"
    assert tuple(re.findall(VERSION, headline.group(1))) == TESTED[package], headline.group(0)
    section = text[text.index("## Tested versions") :] if "## Tested versions" in text else text
    assert tuple(sorted(set(pinned(section, pin)), key=TESTED[package].index)) == TESTED[package]


def test_the_catalogue_counts_are_given_for_each_tested_transformers_and_only_those():
    counted = re.findall(rf"({VERSION}): \d+ entries", page("models.md"))
    assert sorted(counted) == sorted(TESTED["transformers"])


def test_no_page_names_an_untested_transformers_trl_pair_as_the_core_cell():
    """A transformers + TRL pair named anywhere in docs/ is a tested one (a framework's own pinned stack is
    written with its framework, not as a pair)."""
    tested = set(zip(TESTED["transformers"], TESTED["trl"], strict=True))
    for name, path in PAGES.items():
        if path.parent.name != "docs":
            continue
        for pair in re.findall(
            rf"transformers(?: \+ TRL)? ({VERSION}) \+ ({VERSION})", prose(path.read_text())
        ):
            assert pair in tested, f"{name}: transformers + TRL {pair[0]} + {pair[1]} is not a tested pair"


# Log keys --------------------------------------------------------------------------------------------------------


def logged_keys() -> tuple[set[str], set[str]]:
    """The keys one attachment logs on a training pass (``NoiseStats.read_and_reset``), and the clean-loss keys
    (``neft_plugins.clean_loss``)."""
    model = make_llama().train()
    with neftune(model, neftune_alpha=5) as handle:
        model(input_ids=torch.tensor([[4, 5, 6, 7]]))
        noise = set(handle.read_logs())
    clean = set(re.findall(r'"(neft/\w+)"', inspect.getsource(clean_loss)))
    return noise, clean


def listings() -> list[tuple[str, set[str]]]:
    """Each prose paragraph or table row of README.md and docs/ that names four log keys or more."""
    found = []
    for path in DOCUMENTS:
        text = prose(path.read_text(encoding="utf-8"))
        units = [unit for paragraph in text.split("\n\n") for unit in paragraph_units(paragraph)]
        for unit in units:
            keys = set(re.findall(r"neft/\w+", unit))
            if len(keys) >= 4:
                found.append((f"{path.relative_to(ROOT)}: {unit.strip()[:80]}...", keys))
    return found


def paragraph_units(paragraph: str) -> list[str]:
    """A table's rows one by one, any other paragraph whole."""
    lines = paragraph.strip().splitlines()
    return lines if lines and all(line.startswith("|") for line in lines) else [paragraph]


def test_every_listing_of_the_log_keys_names_every_key_the_code_logs():
    noise, clean = logged_keys()
    assert noise == {
        "neft/alpha",
        "neft/tokens_noised",
        "neft/noise_norm",
        "neft/embed_norm",
        "neft/noise_to_embed",
    }
    assert clean == {"neft/clean_loss", "neft/noised_loss"}
    found = listings()
    assert found, "the README lists the log keys"
    for where, keys in found:
        assert noise <= keys, f"{where} misses {sorted(noise - keys)}"
        assert not (clean & keys) or clean <= keys, f"{where} names one clean-loss key without the other"
        unknown = keys - noise - clean
        assert not unknown, f"{where} names keys the code does not log: {sorted(unknown)}"
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        if any(where.startswith(f"{path.relative_to(ROOT)}:") for where, _ in found):
            assert "neft/clean_loss" in text, (
                f"{path.name} lists the log keys: say where neft/clean_loss comes in"
            )


# The attach and detach lines -------------------------------------------------------------------------------------


def logged_lines(caplog) -> tuple[str, str]:
    model = make_llama().train()
    with caplog.at_level(logging.WARNING, logger="neft_plugins"), neftune(model, neftune_alpha=5):
        model(input_ids=torch.tensor([[4, 5, 6, 7]]))
    messages = [record.getMessage() for record in caplog.records]
    return (
        next(message for message in messages if message.startswith(ATTACHED)),
        next(message for message in messages if message.startswith(DETACHED)),
    )


def documented_lines() -> list[tuple[str, str]]:
    """Every attach/detach line shown in a code block of README.md or docs/: (where, the line from
    ``neft_plugins:`` on)."""
    lines = []
    for path in DOCUMENTS:
        for block in extract(path):
            for offset, line in enumerate(block.text.splitlines(), start=1):
                for marker in (ATTACHED, DETACHED):
                    if marker in line:
                        lines.append((f"{block.id}+{offset}", line[line.index(marker) :].strip()))
    return lines


def counts_as_words(line: str) -> str:
    """``line`` with every number as N and every plural singular: ``10 training passes`` -> ``N training pass``."""
    line = re.sub(r"\d+(?:\.\d+)?", "N", line)
    line = re.sub(r"(ss)es\b", r"\1", line)  # passes -> pass
    return re.sub(r"\b(\w*[^s\W])s\b", r"\1", line)  # tokens -> token


def test_the_documented_attach_and_detach_lines_are_what_the_engine_logs(caplog):
    attached, detached = logged_lines(caplog)
    assert attached.startswith(f"{ATTACHED} {LLAMA_FIRST_BLOCK} (alpha=5.0, ")
    assert detached.startswith(f"{DETACHED} {LLAMA_FIRST_BLOCK}")
    shown = documented_lines()
    assert any(line.startswith(DETACHED) for _, line in shown), "some page shows the detach line"
    for where, line in shown:
        shown_part = re.split(r"\.\.\.|…", line)[0].rstrip(" ,")  # what the page shows before an ellipsis
        if line.startswith(DETACHED):
            # the detach line's summary counts what the run noised: its wording is compared, not its numbers
            assert counts_as_words(detached).startswith(counts_as_words(shown_part)), (
                f"{where}: documented {line!r}, logged {detached!r}"
            )
            continue
        site, _, settings = shown_part.partition(" (")
        logged_site, _, logged_settings = attached.partition(" (")
        assert site == logged_site, f"{where}: documented {line!r}, logged {attached!r}"
        names = re.findall(r"(\w+)=", settings)
        assert names == re.findall(r"(\w+)=", logged_settings)[: len(names)], f"{where}: settings {line!r}"
