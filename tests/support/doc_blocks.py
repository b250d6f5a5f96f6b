"""Every fenced code block of README.md and docs/*.md, and how the test sessions run them (CONTRIBUTING.md, "Docs").

The line directly before each opening fence is a tag, ``<!-- doc-test: WHAT -->``, where WHAT is

- an environment, one of ``ENVS`` (the nox session family whose ``tests/<folder>/test_doc_blocks.py`` runs it),
  optionally followed by options: ``expect="text"`` (the block's output, stdout and stderr, must contain the
  text; repeatable) and ``timeout=SECONDS`` (default ``DEFAULT_TIMEOUT``);
- ``skip REASON``: the block cannot run here (a CUDA GPU, the model hub, the test command itself, an install);
  ``tests/core/test_doc_tags.py`` lists every skipped block with its reason;
- ``output``: the block shows output (log lines, an error message), it is not run.

How a block runs: ``python`` in a fresh ``sys.executable``; ``bash``/``sh`` with ``bash -euo pipefail``, the
environment's ``bin/`` first on PATH; ``yaml`` written to a file and checked with ``neft check FILE``; ``toml``
parsed with tomllib. Each runs in a fresh directory holding a copy of the repository's ``example_configs/``,
offline (``support.env.OFFLINE_ENV``), with the prelude: a Hugging Face hub cache (``HF_HOME``) in which every
name of ``HUB_MODELS`` is a tiny random Llama with a word-level tokenizer (``support.tiny``), so that
``AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")`` loads it, unmodified, offline.
A block passes when it exits 0 (and its output holds every ``expect`` text).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from support import ROOT
from support.env import OFFLINE_ENV

DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
ENVS = ("core", "axolotl", "llamafactory", "swift", "unsloth", "mlx", "demo")
KINDS = (*ENVS, "skip", "output")
LANGUAGES = {"python": "python", "bash": "bash", "sh": "bash", "yaml": "yaml", "yml": "yaml", "toml": "toml"}
DEFAULT_TIMEOUT = 600
TAG = re.compile(r"^\s*<!-- doc-test: (?P<body>.*?) -->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>[\w+-]*)\s*$")
# The hub names the documentation's snippets use; each resolves to the same tiny model in the prelude's cache.
HUB_MODELS = (
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "unsloth/SmolLM2-135M-Instruct",
)
# ChatML, as SmolLM2-Instruct and Qwen2.5-Instruct write it: apply_chat_template works on the tiny tokenizer.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text and what its tag says."""

    path: Path
    line: int  # of the opening fence, from 1
    language: str
    text: str
    tag: str | None  # the tag's body, None when the line before the fence is not a tag
    options: dict[str, list[str]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"

    @property
    def kind(self) -> str | None:
        """An environment of ``ENVS``, ``skip``, ``output``, or None (untagged)."""
        return self.tag.split()[0] if self.tag else None

    @property
    def reason(self) -> str:
        """A skipped block's reason."""
        return self.tag.partition(" ")[2].strip() if self.tag else ""

    @property
    def expect(self) -> list[str]:
        return self.options.get("expect", [])

    @property
    def timeout(self) -> float:
        return float(self.options.get("timeout", [DEFAULT_TIMEOUT])[-1])


def parse_options(tag: str) -> dict[str, list[str]]:
    """An environment tag's ``key=value`` words (values may be quoted): ``core expect="attached NEFTune"``."""
    options: dict[str, list[str]] = {}
    for word in shlex.split(tag)[1:]:
        key, equals, value = word.partition("=")
        if not equals:
            raise ValueError(f"doc-test option {word!r} is not key=value")
        options.setdefault(key, []).append(value)
    return options


def extract(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = textwrap.dedent("\n".join(lines[index + 1 : end])) + "\n"
        tag = TAG.match(lines[index - 1]) if index else None
        body_tag = tag.group("body").strip() if tag else None
        options = parse_options(body_tag) if body_tag and body_tag.split()[0] in ENVS else {}
        language = opening.group("language").lower()
        blocks.append(Block(path, index + 1, language, body, body_tag, options))
        index = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for path in DOCUMENTS for block in extract(path)]


def blocks_for(env: str) -> list[Block]:
    """The blocks tagged for the session family ``env``: parametrize a test with them, ids ``Block.id``."""
    assert env in ENVS, env
    return [block for block in all_blocks() if block.kind == env]


def build_prelude(home: Path, save_model: Callable[[Path, int], None] | None = None) -> dict[str, str]:
    """A hub cache under ``home`` where every ``HUB_MODELS`` name is the tiny Llama and its tokenizer; the
    environment variables that point the hub client at it, offline. ``save_model(folder, vocab_size)`` writes the
    model (default: transformers' tiny Llama; the MLX cell writes MLX's, in the same layout, without torch)."""
    from support.tiny import CHAT_SPECIALS, make_tokenizer, vocabulary

    tokenizer = make_tokenizer(CHAT_SPECIALS)
    tokenizer.chat_template = CHAT_TEMPLATE
    saved = home / "tiny-llama"
    tokenizer.save_pretrained(saved)
    (save_model or _save_tiny_llama)(saved, len(vocabulary(CHAT_SPECIALS)))
    hub = home / "hub"
    for name in HUB_MODELS:
        revision = hashlib.sha1(name.encode()).hexdigest()  # any 40 hex digits: refs/main names the snapshot
        repo = hub / f"models--{name.replace('/', '--')}"
        shutil.copytree(saved, repo / "snapshots" / revision)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(revision)
    # transformers 4.x: the cache layout is current (no migration warning)
    (hub / "version.txt").write_text("1")
    return {
        **OFFLINE_ENV,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(hub),
        "HF_DATASETS_CACHE": str(home / "datasets"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def _save_tiny_llama(folder: Path, vocab_size: int) -> None:
    from support.tiny import make_llama

    make_llama(vocab_size=vocab_size).save_pretrained(folder)


def block_environment(prelude: dict[str, str]) -> dict[str, str]:
    """This process's environment, the prelude on top, the Python environment's ``bin/`` first on PATH."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    # older names that would win over HF_HUB_CACHE
    for stale in ("TRANSFORMERS_CACHE", "HUGGINGFACE_HUB_CACHE"):
        environment.pop(stale, None)
    path = os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", "")])
    return {**environment, **prelude, "PATH": path}


def workspace(folder: Path) -> Path:
    """A fresh working directory holding a copy of the repository's example_configs/."""
    shutil.copytree(ROOT / "example_configs", folder / "example_configs")
    return folder


def run_block(block: Block, folder: Path, prelude: dict[str, str]) -> str:
    """Runs ``block`` in ``workspace(folder)`` and returns its output; fails the test, showing the output, when
    it exits non-zero or its output lacks an ``expect`` text."""
    cwd = workspace(folder)
    language = LANGUAGES.get(block.language)
    if language == "toml":
        import tomllib

        tomllib.loads(block.text)
        return ""
    if language == "python":
        script = cwd / "doc_block.py"
        command = [sys.executable, str(script)]
    elif language == "bash":
        script = cwd / "doc_block.sh"
        command = ["bash", "-euo", "pipefail", str(script)]
    elif language == "yaml":
        script = cwd / "doc_block.yaml"
        command = [str(Path(sys.executable).parent / "neft"), "check", str(script)]
    else:
        raise AssertionError(
            f"{block.id}: cannot run a {block.language or 'plain'} block; tag it output or skip"
        )
    script.write_text(block.text, encoding="utf-8")
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=block_environment(prelude),
            capture_output=True,
            text=True,
            timeout=block.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"{block.id}: still running after {block.timeout:.0f} s") from error
    output = done.stdout + done.stderr
    shown = f"{block.id} ({' '.join(command[:2])} ...):\n{block.text}\n--- output ---\n{output[-6000:]}"
    assert done.returncode == 0, f"exit status {done.returncode}: {shown}"
    for text in block.expect:
        assert text in output, f"the output does not contain {text!r}: {shown}"
    return output
