"""The tree builds and installs from a clone without symlink support (Windows' default), with the setuptools
floor pyproject.toml declares, and the installed wheel imports every integration from real files."""

from __future__ import annotations

import re
import subprocess
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCH_CONSTRAINT = ROOT / "constraints" / "torch-cpu.txt"


def run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def setuptools_floor() -> str:
    requires = re.search(r'requires = \["setuptools>=([\d.]+)"\]', (ROOT / "pyproject.toml").read_text())
    assert requires, "pyproject.toml's build-system requires names a setuptools floor"
    return requires.group(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A wheel and an sdist built from a ``core.symlinks=false`` clone of this commit, by the setuptools floor."""
    work = tmp_path_factory.mktemp("build")
    clone = work / "clone"
    run("git", "clone", "-q", "-c", "core.symlinks=false", ROOT, clone)
    links = run("git", "ls-files", "-s", cwd=clone).splitlines()
    assert not [line for line in links if line.startswith("120000")], "the tree holds no symbolic link"
    builder = work / "builder"
    venv.create(builder, with_pip=True)
    python = builder / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", f"setuptools=={setuptools_floor()}", "wheel")
    dist = work / "dist"
    run(python, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, clone)
    run(python, "-c", "import setuptools.build_meta as b, sys; b.build_sdist(sys.argv[1])", dist, cwd=clone)
    return next(dist.glob("*.whl")), next(dist.glob("*.tar.gz"))


def test_the_wheel_holds_real_integration_files(built: tuple[Path, Path]) -> None:
    names = zipfile.ZipFile(built[0]).namelist()
    for module in (
        "axolotl/__init__.py",
        "axolotl/args.py",
        "llamafactory/cli.py",
        "llamafactory/train.py",
        "swift/cli.py",
    ):
        assert f"neft_plugins/integrations/{module}" in names
    assert "neft_plugins/engine/block_noise.py" in names, "the engine subpackage is shipped"
    metadata = next(name for name in names if name.endswith("METADATA"))
    text = zipfile.ZipFile(built[0]).read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text and "Requires-Dist: packaging" in text
    assert any(name.endswith("licenses/LICENSE") for name in names)


def test_the_sdist_holds_what_runs_the_tests(built: tuple[Path, Path]) -> None:
    with tarfile.open(built[1]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for needed in (
        "LICENSE",
        "noxfile.py",
        "constraints/torch-cpu.txt",
        "tests/core/test_attach.py",
        "tests/support/tiny.py",
        "integrations/axolotl/args.py",
        "example_configs",
        "docs/index.md",
        "CONTRIBUTING.md",
    ):
        assert needed in names, needed


def test_the_wheel_installs_in_a_fresh_venv_and_imports_every_integration(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    env = tmp_path / "env"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "-c", TORCH_CONSTRAINT, "torch==2.13.0")
    run(python, "-m", "pip", "install", "-q", "-c", TORCH_CONSTRAINT, built[0])
    check = (
        "import importlib.util, pathlib, neft_plugins, neft_plugins.integrations.llamafactory as lf\n"
        "site = pathlib.Path(neft_plugins.__file__).parent\n"
        "assert pathlib.Path(lf.__file__).is_relative_to(site), lf.__file__\n"
        "for name in ('axolotl', 'swift', 'mlx'):\n"  # importing them needs Axolotl, ms-swift, MLX-LM
        "    spec = importlib.util.find_spec(f'neft_plugins.integrations.{name}')\n"
        "    assert pathlib.Path(spec.origin).is_relative_to(site) and pathlib.Path(spec.origin).is_file()\n"
        "print(site)\n"
    )
    site = run(python, "-c", check, cwd=tmp_path).strip()
    assert str(env) in site, "the installed copy is imported, not the source tree"
