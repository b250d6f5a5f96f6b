"""benchmarks/gpu_check.py off a GPU: its arguments, its result files, its exit code, and the checks that run on
CPU (noise norms, torch.compile) for real with ``--device cpu --small``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import gpu_check
import pytest
import torch

from support.matrix import on_newest
from support.noise import assert_near_paper_norm


def read_json(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "gpu_check.json").read_text())


@pytest.mark.parametrize("rounds", ["0", "-3", "two"])
def test_rounds_must_be_a_positive_integer(rounds, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--device", "cpu", "--rounds", rounds])
    assert exit_info.value.code == 2
    assert "--rounds" in capsys.readouterr().err


def test_unknown_check_names_are_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--device", "cpu", "--only", "noise_norms", "no_such_check"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--only" in error and "no_such_check" in error


def test_cuda_without_a_cuda_device_exits_2_before_running_anything(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def must_not_run(options: gpu_check.Options) -> dict[str, Any]:
        raise AssertionError("a check ran without a CUDA device")

    monkeypatch.setitem(gpu_check.CHECKS, "noise_norms", must_not_run)
    output = tmp_path / "out"
    assert gpu_check.main(["--only", "noise_norms", "--output", str(output)]) == 2
    error = capsys.readouterr().err.strip()
    assert "no CUDA device" in error and len(error.splitlines()) == 1
    assert not output.exists()


def results_of(checks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    environment = {
        "torch": "2.13.0",
        "transformers": "5.24.0",
        "bitsandbytes": None,
        "neft_plugins": "0.1.0",
        "device": "NVIDIA H200",
        "cuda": "12.8",
        "command": "python benchmarks/gpu_check.py",
        "utc": "2026-01-01T00:00:00+00:00",
    }
    return {"environment": environment, "passed": False, "checks": checks}


def test_result_files_round_trip_and_mark_failures(tmp_path):
    checks = {
        "noise_norms": gpu_check.outcome(
            True, "norms right", "bf16 norms 2.86-2.91", bf16={"sequence_norms": [2.9]}
        ),
        "qlora": gpu_check.outcome(False, "ImportError: No module named 'bitsandbytes'\nmore lines"),
        "peak_memory": gpu_check.outcome(None, "needs CUDA (torch.cuda.max_memory_allocated)"),
        "compile": gpu_check.outcome(False, "fullgraph: a | b", "fullgraph FAILED"),
    }
    results = results_of(checks)
    json_path, markdown_path = gpu_check.write_results(results, tmp_path / "new")
    assert (json_path, markdown_path) == (
        tmp_path / "new" / "gpu_check.json",
        tmp_path / "new" / "gpu_check.md",
    )
    assert json.loads(json_path.read_text()) == results
    rows = [
        line for line in markdown_path.read_text().splitlines() if line.startswith("| ") and "---" not in line
    ]
    assert rows[0].startswith("| check |")
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows[1:]] == list(checks)
    statuses = {row.split(" | ")[0].removeprefix("| "): row.split(" | ")[1] for row in rows[1:]}
    assert statuses == {
        "noise_norms": "passed",
        "qlora": "FAILED",
        "peak_memory": "not run",
        "compile": "FAILED",
    }
    assert "No module named 'bitsandbytes' |" in rows[2] and "more lines" not in rows[2]
    assert "a \\| b" in rows[4], "a pipe in a reason must not split the table cell"


def test_exit_code_is_1_when_any_check_fails_and_the_others_still_run(monkeypatch, tmp_path):
    def failing(options: gpu_check.Options) -> dict[str, Any]:
        raise ImportError("No module named 'bitsandbytes'")

    def passing(options: gpu_check.Options) -> dict[str, Any]:
        return gpu_check.outcome(True, "fine", value=1.0)

    monkeypatch.setitem(gpu_check.CHECKS, "qlora", failing)
    monkeypatch.setitem(gpu_check.CHECKS, "noise_norms", passing)
    argv = ["--device", "cpu", "--output", str(tmp_path), "--only"]
    assert gpu_check.main([*argv, "qlora", "noise_norms"]) == 1
    checks = read_json(tmp_path)["checks"]
    assert checks["qlora"]["passed"] is False
    assert checks["qlora"]["reason"] == "ImportError: No module named 'bitsandbytes'"
    assert checks["noise_norms"]["passed"] is True and checks["noise_norms"]["measured"] == {"value": 1.0}
    assert gpu_check.main([*argv, "noise_norms"]) == 0


def test_a_missing_bitsandbytes_fails_the_qlora_check_with_its_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` raise ImportError
    options = gpu_check.Options(torch.device("cuda"), small=True, rounds=1)  # past the needs-CUDA gate
    result = gpu_check.run_checks(["qlora"], options)["qlora"]
    assert result["passed"] is False
    error_type, _, text = result["reason"].partition(": ")
    assert error_type in ("ImportError", "ModuleNotFoundError") and "bitsandbytes" in text


def test_checks_that_need_cuda_are_not_run_on_cpu_and_do_not_fail(tmp_path):
    argv = [
        "--device",
        "cpu",
        "--small",
        "--output",
        str(tmp_path),
        "--only",
        "qlora",
        "peak_memory",
        "sync_free",
        "unsloth",
    ]
    assert gpu_check.main(argv) == 0
    for result in read_json(tmp_path)["checks"].values():
        assert result["passed"] is None and result["reason"].startswith("needs CUDA")


def test_noise_norm_check_on_cpu(tmp_path):
    assert (
        gpu_check.main(["--device", "cpu", "--small", "--only", "noise_norms", "--output", str(tmp_path)])
        == 0
    )
    results = read_json(tmp_path)
    check = results["checks"]["noise_norms"]
    assert check["passed"] is True, check["reason"]
    for dtype in ("bf16", "fp16"):
        report = check["measured"][dtype]
        assert len(report["sequence_norms"]) == len(gpu_check.NORM_LENGTHS)
        assert_near_paper_norm(
            report["sequence_norms"], gpu_check.ALPHA, rel=gpu_check.TOLERANCE, context=dtype
        )
        assert report["padding_max_abs"] == 0
    assert results["environment"]["command"].endswith("--only noise_norms --output " + str(tmp_path))
    assert results["settings"] == {"device": "cpu", "small": True, "rounds": 20}


@on_newest("transformers")
def test_compile_check_on_cpu(monkeypatch, tmp_path):
    # Inductor's C++ build of the kernels takes over a minute on a 2-core CPU; aot_eager runs the same dynamo
    # trace (where fullgraph fails or not) and AOT autograd without it.
    variants = {
        name: {**options, "backend": "aot_eager"} for name, options in gpu_check.COMPILE_VARIANTS.items()
    }
    variants["reduce-overhead"].pop("mode")
    monkeypatch.setattr(gpu_check, "COMPILE_VARIANTS", variants)
    code = gpu_check.main(["--device", "cpu", "--small", "--only", "compile", "--output", str(tmp_path)])
    check = read_json(tmp_path)["checks"]["compile"]
    runs = check["measured"]
    assert set(runs) == {"fullgraph", "reduce-overhead"}
    for name, run in runs.items():
        assert isinstance(run["graphs"], int), name
        if run["worked"]:
            assert len(run["steps"]) == gpu_check.COMPILE_STEPS, name
            for step in run["steps"]:
                assert_near_paper_norm(step["sequence_norms"], gpu_check.ALPHA, rel=gpu_check.TOLERANCE)
                assert step["padding_max_abs"] == 0
        else:
            assert run["error"], f"{name} failed without saying why"
            assert name in check["reason"]
    assert check["passed"] is all(run["worked"] for run in runs.values())
    assert code == (0 if check["passed"] else 1)
