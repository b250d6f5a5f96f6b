import subprocess
import sys

from neft_plugins.cli import main


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


def test_console_script_lists_the_builtin_plugins():
    result = subprocess.run(
        [sys.executable, "-m", "neft_plugins.cli", "plugins"], capture_output=True, text=True, check=True
    )
    assert "distributions: uniform, gaussian" in result.stdout
    assert "plugin: builtin:RowMaskReader" in result.stdout
