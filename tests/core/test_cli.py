import pytest

import neft_plugins
from neft_plugins.cli import AXOLOTL_PLUGIN, main
from support.cli_run import run_cli
from support.logs import double_noise_error


def test_check_accepts_a_good_config_and_names_the_bad_key(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("learning_rate: 1.0e-4\nneftune_alpha: 5\nneftune_schedule: cosine\n")
    assert main(["check", str(good)]) == 0
    assert '"neftune_schedule": "cosine"' in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("neftune_alpha: 5\nneftune_distribution: laplace\n")
    assert main(["check", str(bad)]) == 2
    assert (
        "neftune_distribution: got 'laplace'; expected one of 'uniform', 'gaussian'"
        in capsys.readouterr().err
    )
    # Several configs: each is checked, and one bad one fails the command.
    assert main(["check", str(bad), str(good)]) == 2
    captured = capsys.readouterr()
    assert f"{bad}: neftune_distribution" in captured.err
    assert f"{good}: ok\n{{" in captured.out and '"neftune_schedule": "cosine"' in captured.out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"neft-plugins {neft_plugins.__version__}"


def test_console_script_lists_the_builtin_plugins(tmp_path):
    """The `neft` console script itself, in a process of its own."""
    result = run_cli(["neft", "plugins"], tmp_path, timeout=120)
    assert result.returncode == 0, result.describe()
    assert "distributions: uniform, gaussian" in result.stdout
    assert "plugin: builtin:RowMaskReader" in result.stdout


def test_check_reports_the_double_noise_conflict_as_the_integrations_do(tmp_path, capsys):
    config = tmp_path / "axolotl.yml"
    config.write_text("neftune_alpha: 0\nneftune_noise_alpha: 5\n")
    assert main(["check", str(config)]) == 2
    assert double_noise_error("neftune_noise_alpha", 5, 0) in capsys.readouterr().err


def test_check_refuses_a_misspelt_key(tmp_path, capsys):
    config = tmp_path / "axolotl.yml"
    config.write_text("neftune_alpha: 5\nneftune_schedul: cosine\n")
    assert main(["check", str(config)]) == 2
    assert "neftune_schedul: unknown key; did you mean neftune_schedule?" in capsys.readouterr().err


def test_check_says_when_the_axolotl_plugin_does_not_import_here(tmp_path, capsys):
    """The core environment has no axolotl: Axolotl would log one error line and train without noise."""
    config = tmp_path / "axolotl.yml"
    config.write_text(f"base_model: x\nplugins:\n  - {AXOLOTL_PLUGIN}\nneftune_alpha: 5\n")
    assert main(["check", str(config)]) == 2
    err = capsys.readouterr().err
    assert (
        f"plugin {AXOLOTL_PLUGIN} does not import here (ModuleNotFoundError: No module named 'axolotl" in err
    )
    assert "Axolotl would train without it" in err


def test_check_says_when_an_axolotl_config_does_not_list_the_plugin(tmp_path, capsys):
    config = tmp_path / "axolotl.yml"
    config.write_text("base_model: x\nneftune_alpha: 5\n")
    assert main(["check", str(config)]) == 2
    assert f"plugins does not list {AXOLOTL_PLUGIN}: Axolotl ignores it" in capsys.readouterr().err


def test_no_test_folder_shadows_a_framework_import_name():
    """With tests/ on sys.path (pyproject's pythonpath), a folder named like a framework would import as an
    empty namespace package where the framework is not installed."""
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1]
    frameworks = (
        "axolotl",
        "llamafactory",
        "transformers",
        "trl",
        "peft",
        "deepspeed",
        "accelerate",
        "torch",
    )
    assert not [name for name in frameworks if (tests / name).exists()]
