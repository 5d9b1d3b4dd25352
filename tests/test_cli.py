from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from arabic_r1.cli import main
from arabic_r1.params import REPO_DIR
from arabic_r1.params_loading import validate_params

CLI = shutil.which("arabic-r1") or str(Path(sys.executable).parent / "arabic-r1")


def test_console_script_validates_paper_profile() -> None:
    out = subprocess.run(
        [CLI, "params", "validate", str(REPO_DIR / "params" / "paper.yaml")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "valid" in out.stdout


def test_params_validate_reports_bad_override(capsys) -> None:
    assert main(["params", "validate", "smoke", "-o", "train.lora.r=0"]) == 2
    err = capsys.readouterr().err
    assert "smoke.yaml" in err and "train.lora.r" in err and "greater than 0" in err


def test_params_show_round_trips(capsys) -> None:
    assert main(["params", "show", "smoke", "-o", "train.lora.r=32"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["lora"]["r"] == 32
    validate_params(shown)


def test_unknown_phase_is_a_clean_error(capsys) -> None:
    assert main(["run", "99_nothing"]) == 2
    assert "unknown phase" in capsys.readouterr().err


def test_doctor_on_smoke(capsys) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in ("python", "torch", "gpu", "unsloth", "lighteval offline", "datatrove", "disk"):
        assert name in out
    assert "would train with its" in out  # the Makefile installs unsloth --no-deps on CPU machines


def test_doctor_fails_a_gpu_profile_without_gpu(capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["doctor", "--params", "paper"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_benchmarks_check(capsys, tmp_path) -> None:
    assert main(["benchmarks", "check"]) == 0
    assert "usable" in capsys.readouterr().out
    assert main(["benchmarks", "check", "--mirror", str(tmp_path)]) == 1
    assert "no mirror at" in capsys.readouterr().out
