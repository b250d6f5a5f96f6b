"""Third-party plugins, loaded from the `neft_plugins` entry-point group as a real installed package would be."""

import sys
import textwrap

import pytest
import torch

from neft_plugins import NEFTuneConfig, NEFTuneConfigError, NEFTunePluginError, hookimpl, neftune
from neft_plugins.plugins import distributions, plugin_manager, schedules
from support.spy import first_block_input
from support.tiny import make_llama

PLUGIN_SOURCE = '''
import torch
from neft_plugins import hookimpl

def spike_noise(out, magnitude, generator):
    """Every element is +-magnitude: the variance of Uniform(-m, m) would be m^2/3, this is m^2."""
    return out.bernoulli_(0.5, generator=generator).mul_(2).sub_(1).mul_(magnitude)

def halving(alpha, step, total_steps):
    return alpha / 2 ** step

@hookimpl
def neft_distributions():
    return {"spike": spike_noise}

@hookimpl
def neft_schedules():
    return {"halving": halving}
'''


def install_plugin(tmp_path, monkeypatch, module: str, source: str) -> None:
    """``module`` as an installed distribution whose ``neft_plugins`` entry point names it."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    dist_info = tmp_path / f"{module}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[neft_plugins]\n{module.split('_')[0]} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin_manager.cache_clear()


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    install_plugin(tmp_path, monkeypatch, "spike_plugin", PLUGIN_SOURCE)
    yield
    sys.modules.pop("spike_plugin", None)
    plugin_manager.cache_clear()


def test_unknown_distribution_is_rejected_without_the_plugin():
    with pytest.raises(NEFTuneConfigError, match="neftune_distribution: got 'spike'"):
        NEFTuneConfig(neftune_distribution="spike")


def test_entry_point_plugin_is_selected_by_name(installed_plugin):
    assert {"uniform", "gaussian", "spike"} <= set(distributions())
    assert {"constant", "linear", "cosine", "halving"} <= set(schedules())
    config = NEFTuneConfig(neftune_alpha=4, neftune_distribution="spike", neftune_schedule="halving")
    model = make_llama().train()
    input_ids = torch.randint(4, 60, (1, 16))
    with neftune(model, config) as handle:
        assert handle.set_step(1, 10) == 2.0
        noised = first_block_input(model.model.layers[0], lambda: model(input_ids=input_ids))
    with torch.no_grad():
        clean = model.get_input_embeddings()(input_ids)
    noise = noised - clean
    expected = 2.0 / (16 * 64) ** 0.5
    assert torch.allclose(noise.abs(), torch.full_like(noise, expected), rtol=1e-4)


def test_builtins_are_plugins_through_the_same_hooks():
    names = {type(plugin).__name__ for plugin in plugin_manager().get_plugins()}
    assert {"Distributions", "Schedules", "RowMaskReader", "BlockMaskReader", "VarlenReader"} <= names


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("constant", [5, 5, 5]), ("linear", [5, 2.5, 0]), ("cosine", [5, 2.5, 0])],
)
def test_builtin_schedules(schedule, expected):
    model = make_llama()
    with neftune(model, neftune_alpha=5, neftune_schedule=schedule) as handle:
        assert [pytest.approx(handle.set_step(step, 10)) for step in (0, 5, 10)] == expected


class MisspeltDistribution:
    @hookimpl
    def neft_distribution(self):  # the spec is neft_distributions
        return {"spike": None}


def test_a_hook_that_matches_no_spec_is_an_error_at_registration():
    manager = plugin_manager()
    with pytest.raises(
        NEFTunePluginError, match=r"implements 'neft_distribution' \(did you mean 'neft_distributions'\?\)"
    ):
        manager.register(MisspeltDistribution(), name="misspelt")
    assert not manager.has_plugin("misspelt"), "the refused plugin is not left registered"


def test_a_misspelt_entry_point_plugin_is_an_error_when_plugins_load(tmp_path, monkeypatch):
    source = "from neft_plugins import hookimpl\n\n@hookimpl\ndef neft_schedule():\n    return {}\n"
    install_plugin(tmp_path, monkeypatch, "misspelt_plugin", source)
    try:
        with pytest.raises(
            NEFTunePluginError, match=r"misspelt.*'neft_schedule' \(did you mean 'neft_schedules'\?\)"
        ):
            plugin_manager()
    finally:
        sys.modules.pop("misspelt_plugin", None)
        plugin_manager.cache_clear()
