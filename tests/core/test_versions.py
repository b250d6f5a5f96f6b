"""The same alpha gives the same noise at the first decoder layer on every tested transformers version.

Each nox cell of the version matrix (`core(stack=...)`) runs this file: the assertions are the same in every
cell, so passing in all of them is the cross-version comparison.
"""

import pytest
import torch

from neft_plugins import attach
from support.noise import assert_near_paper_norm
from support.spy import first_block_input

ALPHA = 5.0


def tiny_gemma(hidden_size: int = 256):
    from transformers import GemmaConfig, GemmaForCausalLM

    torch.manual_seed(0)
    config = GemmaConfig(
        vocab_size=64,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=hidden_size // 4,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    return GemmaForCausalLM(config)


def first_layer_input(model, **batch) -> torch.Tensor:
    """The hidden states the first decoder layer receives in one forward pass."""
    return first_block_input(model.model.layers[0], lambda: model(**batch))


def test_gemma_first_layer_gets_the_paper_noise_and_the_logs_say_so():
    """transformers < 5 scales Gemma's embeddings by sqrt(d) after the embedding module, 5.x inside it: the
    first layer must get alpha/sqrt(3) per sequence either way (a hook on the module output alone gives
    sqrt(d) = 16x that on 4.x), and neft/noise_norm / neft/embed_norm must describe what it gets."""
    model = tiny_gemma().train()
    lengths = (12, 40)
    input_ids = torch.randint(1, 64, (2, max(lengths)))
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    with torch.no_grad():
        clean = first_layer_input(model, **batch)
    handle = attach(model, neftune_alpha=ALPHA)
    try:
        noisy = first_layer_input(model, **batch)
        logs = handle.read_logs()
    finally:
        handle.detach()
    noise = (noisy - clean).float()
    per_sequence = [noise[row, :length].norm() for row, length in enumerate(lengths)]
    assert float(noise[0, lengths[0] :].abs().max()) == 0.0, "padding gets no noise"
    # 12 x 256 uniform entries: the norm's relative spread is ~0.8%; 5% also allows bf16-free rounding.
    assert_near_paper_norm(per_sequence, ALPHA, rel=0.05)
    clean_norms = [clean[row, :length].float().norm() for row, length in enumerate(lengths)]
    assert logs["neft/noise_norm"] == pytest.approx(float(sum(per_sequence)) / 2, rel=1e-3)
    assert logs["neft/embed_norm"] == pytest.approx(float(sum(clean_norms)) / 2, rel=1e-3)
    assert logs["neft/noise_to_embed"] == pytest.approx(logs["neft/noise_norm"] / logs["neft/embed_norm"])


def test_the_same_alpha_is_sqrt_d_weaker_relative_to_gemmas_embeddings():
    """Gemma multiplies its token embeddings by sqrt(d) before the first layer, Llama does not: with the same
    embedding weights and alpha, neft/noise_to_embed is sqrt(d) = 16x smaller for Gemma."""
    from support.tiny import make_llama

    gemma = tiny_gemma().train()
    llama = make_llama(hidden_size=256, vocab_size=64, layers=1).train()
    llama.get_input_embeddings().weight.data.copy_(gemma.get_input_embeddings().weight.data)
    input_ids = torch.randint(1, 64, (8, 40))
    ratios = []
    for model in (llama, gemma):
        handle = attach(model, neftune_alpha=ALPHA, neftune_seed=0)
        try:
            model(input_ids=input_ids)
            ratios.append(handle.read_logs()["neft/noise_to_embed"])
        finally:
            handle.detach()
    assert ratios[0] / ratios[1] == pytest.approx(256**0.5, rel=0.01)


def test_installed_versions_are_inside_the_tested_range():
    """Each matrix cell installs a tested pair: the README's table and TESTED_RANGES say what CI runs."""
    from packaging.version import Version

    from neft_plugins.versions import TESTED_RANGES, installed_version

    for package in ("transformers", "trl"):
        oldest, newest = TESTED_RANGES[package]
        assert Version(oldest) <= Version(installed_version(package)) <= Version(newest), package


def test_an_untested_version_warns_once_naming_the_tested_range(monkeypatch, caplog):
    from neft_plugins import NEFTuneCallback, versions

    monkeypatch.setattr(versions, "_warned", set())
    monkeypatch.setattr(versions, "installed_version", lambda package: "99.0")
    NEFTuneCallback(neftune_alpha=ALPHA)
    NEFTuneCallback(neftune_alpha=ALPHA)
    warnings = [record.getMessage() for record in caplog.records if "untested" in record.getMessage()]
    assert warnings == [
        "neft_plugins: transformers 99.0 is untested (tested: transformers 4.46.3 to 5.25.0); every hook point "
        "it uses was found, so it runs",
        "neft_plugins: trl 99.0 is untested (tested: trl 0.16.1 to 1.16.0); every hook point it uses was found, "
        "so it runs",
    ]


def test_a_missing_hook_point_stops_before_training_naming_it(monkeypatch):
    from transformers import Trainer

    from neft_plugins import NEFTuneCallback, NEFTuneCompatibilityError
    from neft_plugins.versions import installed_version

    monkeypatch.delattr(Trainer, "training_step")
    with pytest.raises(NEFTuneCompatibilityError) as raised:
        NEFTuneCallback(neftune_alpha=ALPHA)
    assert str(raised.value) == (
        f"transformers {installed_version('transformers')}: Trainer.training_step missing; NEFTuneCallback relies "
        "on it. Install a tested version (transformers 4.46.3 to 5.25.0)."
    )


def test_missing_hook_point_is_the_one_error_with_the_one_message(monkeypatch):
    """Every integration's missing hook point: one type, one message shape, the tested range named."""
    from neft_plugins import NEFTuneCompatibilityError, NEFTuneError, versions

    monkeypatch.setattr(versions, "installed_version", lambda package: "9.9.9")
    several = versions.missing_hook_point("axolotl", ["BasePlugin.a", "BasePlugin.b"], "NEFTunePlugin")
    changed = versions.missing_hook_point("unsloth", "FastLanguageModel.x no longer takes y", "the callback")
    assert isinstance(several, NEFTuneCompatibilityError) and isinstance(several, NEFTuneError)
    assert str(several) == (
        "axolotl 9.9.9: BasePlugin.a, BasePlugin.b missing; NEFTunePlugin relies on them. Install a tested version "
        "(axolotl 0.17.0 to 0.19.0)."
    )
    assert str(changed) == (
        "unsloth 9.9.9: FastLanguageModel.x no longer takes y; the callback relies on it. Install a tested version "
        "(unsloth 2026.10.9)."
    )


@pytest.fixture
def fake_unsloth_version(monkeypatch):
    """Unsloth at a version outside its tested range, transformers and TRL at theirs; warnings not yet given."""
    from neft_plugins import versions

    installed = versions.installed_version
    monkeypatch.setattr(versions, "_warned", set())
    monkeypatch.setattr(
        versions,
        "installed_version",
        lambda package: "2099.1.1" if package == "unsloth" else installed(package),
    )


def test_an_untested_unsloth_imported_first_warns_once_naming_the_tested_range(
    fake_unsloth_version, monkeypatch, caplog
):
    import sys
    import types

    from neft_plugins import NEFTuneCallback

    monkeypatch.setitem(sys.modules, "unsloth", types.ModuleType("unsloth"))
    NEFTuneCallback(neftune_alpha=ALPHA)
    NEFTuneCallback(neftune_alpha=ALPHA)
    warnings = [record.getMessage() for record in caplog.records if "untested" in record.getMessage()]
    assert warnings == [
        "neft_plugins: unsloth 2099.1.1 is untested (tested: unsloth 2026.10.9); every hook point it uses was "
        "found, so it runs"
    ]


def test_unsloth_not_imported_gets_no_warning(fake_unsloth_version, monkeypatch, caplog):
    import sys

    from neft_plugins import NEFTuneCallback

    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    NEFTuneCallback(neftune_alpha=ALPHA)
    assert not [record for record in caplog.records if "untested" in record.getMessage()]


def test_the_readme_compatibility_table_is_the_tested_versions_table():
    """README rows name exactly the versions in neft_plugins.versions.TESTED as tested (the nox matrix and the
    LLaMA-Factory check read the table itself). A framework's rows: its named row and the ``| |`` rows below."""
    import re
    from pathlib import Path

    from neft_plugins.versions import TESTED

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("## Compatibility") :]
    tested: dict[str, list[str]] = {}
    framework = ""
    for row in (
        row for row in table.splitlines() if row.startswith("| ") and not row.startswith("| framework")
    ):
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        framework = cells[0] or framework
        if cells[2] == "tested":
            tested.setdefault(framework, []).append(cells[1])
    pairs = {tuple(re.findall(r"\d+\.\d+\.\d+", versions)) for versions in tested["transformers + TRL"]}
    assert pairs == set(zip(TESTED["transformers"], TESTED["trl"], strict=True))
    for package, name in (
        ("axolotl", "Axolotl"),
        ("llamafactory", "LLaMA-Factory"),
        ("unsloth", "Unsloth"),
        ("ms-swift", "ms-swift"),
        ("deepspeed", "DeepSpeed"),
        ("mlx-lm", "MLX-LM"),
    ):
        versions = tuple(re.findall(r"\d+\.\d+\.\d+", " ".join(tested[name])))
        assert versions == TESTED[package], name


def test_the_extras_start_at_the_oldest_tested_versions_and_name_the_tested_ranges():
    import re
    from pathlib import Path

    import tomllib

    from neft_plugins.versions import TESTED

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    lower_bounds = {
        match[1]: match[2]
        for requirements in extras.values()
        for match in (re.fullmatch(r"([\w-]+)>=([\d.]+)", requirement) for requirement in requirements)
        if match
    }
    comment = " ".join(
        line.lstrip("# ") for line in pyproject.read_text().splitlines() if line.startswith("#")
    )
    for package, versions in TESTED.items():
        if package == "deepspeed":
            continue  # not an extra: the frameworks' launchers bring it
        assert lower_bounds[package] == versions[0], package
        tested = f"{versions[0]}-{versions[-1]}" if len(versions) > 1 else versions[0]
        assert tested in comment, (package, tested)
