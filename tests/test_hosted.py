"""Colab/Kaggle front door: runtime detection, profile choice from the GPU, persistent storage, the setup cell."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import arabic_r1.hosted as hosted
import arabic_r1.hosted_install as hosted_install
from arabic_r1.hosted import (
    PROFILE_PARAMETER,
    REPO_PARAMETER,
    REPO_URL,
    SETUP_CELL,
    SETUP_CELL_METADATA,
    HostedSetupError,
    choose_profile,
    detect_runtime,
    setup,
)
from arabic_r1.params import REPO_DIR
from arabic_r1.params_loading import load_params

NOTEBOOKS = sorted((REPO_DIR / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize(
    ("env", "modules", "want"),
    [
        ({"COLAB_RELEASE_TAG": "release-colab_20261120-060000_RC00"}, [], "colab"),
        ({}, ["google.colab"], "colab"),
        ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, [], "kaggle"),
        (
            {"KAGGLE_KERNEL_RUN_TYPE": "Batch", "ARABIC_R1_PIPELINE": "1"},
            [],
            "local",
        ),  # the runner's params win
        ({"HOME": "/home/me"}, ["IPython"], "local"),
    ],
)
def test_runtime_detection(env, modules, want):
    assert detect_runtime(env, modules) == want


@pytest.mark.parametrize(
    ("gib", "want"),
    [(15.0, "colab_t4"), (15.8, "colab_t4"), (40.0, "colab_t4"), (79.6, "single_gpu"), (None, "smoke")],
)
def test_auto_profile_follows_the_gpu(gib, want):
    assert choose_profile("auto", gib) == want


def test_too_small_gpu_and_gpu_profile_on_cpu_fail_clearly():
    with pytest.raises(HostedSetupError, match="8.0 GiB.*colab_t4"):
        choose_profile("auto", 8.0)
    with pytest.raises(HostedSetupError, match="needs a GPU.*Change runtime type > T4 GPU"):
        choose_profile("colab_t4", None)
    assert choose_profile("smoke", None) == "smoke"
    assert choose_profile("single_gpu", 80.0) == "single_gpu"


def test_local_setup_changes_nothing():
    h = setup("../params/smoke.yaml", ["train.max_steps=3"], runtime="local")
    assert (h.params_path, h.overrides, h.storage) == ("../params/smoke.yaml", ["train.max_steps=3"], None)


def test_hosted_setup_puts_runs_and_paid_caches_on_persistent_storage(tmp_path: Path):
    h = setup("../params/smoke.yaml", ["train.lora.r=4"], runtime="kaggle", gpu_gib=80.0, storage=tmp_path)
    assert h.params_path == "single_gpu" and h.overrides[0] == "train.lora.r=4"
    p = load_params(h.params_path, h.overrides, check_paths=False)
    assert p.run_dir == tmp_path / "runs" / "single_gpu" and p.train.lora.r == 4
    for cache in (
        p.distill.cache_dir,
        p.verify.judge.cache_dir,
        p.eval.judge.cache_dir,
        p.verify.morphology_cache,
    ):
        assert Path(cache).is_relative_to(tmp_path), cache
    # the smoke profile's replay cache ships with the package: it stays where it is
    smoke = setup("../params/smoke.yaml", [], runtime="colab", gpu_gib=None, storage=tmp_path)
    ps = load_params(smoke.params_path, smoke.overrides)
    assert ps.run_dir == tmp_path / "runs" / "smoke" and ps.distill.cache_dir.is_relative_to(
        REPO_DIR / "arabic_r1"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_carries_the_setup_cell_after_its_parameters(path: Path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    i = next(k for k, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    assert "".join(cells[i + 1]["source"]) == SETUP_CELL
    assert cells[i + 1]["metadata"] == SETUP_CELL_METADATA  # collapsed in JupyterLab, a titled form in Colab
    assert PROFILE_PARAMETER in "".join(cells[i]["source"])  # one parameters cell holds every knob
    assert REPO_PARAMETER in "".join(cells[i]["source"])  # a fork's notebook: one edit before Run all


def _colab(monkeypatch, tmp_path: Path, replaced: list[str]) -> tuple[list, list, dict]:
    """A Colab kernel in tmp_path: git clone recorded (it makes the folder), the installer recorded."""
    ran: list[list[str]] = []
    calls: list = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20261120")
    monkeypatch.delenv("ARABIC_R1_PIPELINE", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: (ran.append(cmd), Path(cmd[-1]).mkdir()))
    monkeypatch.setattr(
        hosted_install, "ensure_installed",
        lambda repo: calls.append(("install", repo)) or hosted_install.Outcome({}, replaced),
    )  # fmt: skip
    monkeypatch.setattr(
        hosted_install, "restart_runtime", lambda names: calls.append(("restart", list(names)))
    )
    monkeypatch.setattr(hosted, "gpu_memory_gib", lambda: 15.0)  # a T4
    monkeypatch.setattr(hosted, "mount_storage", lambda runtime: tmp_path / "drive")
    ns = {
        "params_path": "../params/smoke.yaml",
        "overrides": [],
        "profile": "auto",
        "repo_url": "https://x/fork.git",
    }
    return ran, calls, ns


def test_setup_cell_on_a_fresh_colab_clones_the_parameter_url_installs_then_configures(tmp_path, monkeypatch):
    """The cell as Colab runs it: the clone comes from the parameters cell's repo_url, the install is the
    stdlib-only installer from that clone, then the profile follows the GPU and runs go to Drive."""
    ran, calls, ns = _colab(monkeypatch, tmp_path, replaced=[])
    exec(compile(SETUP_CELL, "setup-cell", "exec"), ns)
    assert ran == [["git", "clone", "--depth", "1", "https://x/fork.git", "arabic_r1_repo"]]
    assert calls == [("install", "arabic_r1_repo")]  # nothing imported was replaced: no restart
    assert ns["params_path"] == "colab_t4"
    assert f"run.root={tmp_path / 'drive' / 'runs'}" in ns["overrides"]
    exec(
        compile(SETUP_CELL, "setup-cell", "exec"), ns
    )  # the next notebook: the clone is there, no second clone
    assert len(ran) == 1
    assert REPO_URL in REPO_PARAMETER


def test_setup_cell_restarts_the_runtime_when_an_imported_package_was_replaced(tmp_path, monkeypatch):
    ran, calls, ns = _colab(monkeypatch, tmp_path, replaced=["pyarrow 18.1.0 -> 22.0.0"])
    exec(compile(SETUP_CELL, "setup-cell", "exec"), ns)
    assert calls[:2] == [("install", "arabic_r1_repo"), ("restart", ["pyarrow 18.1.0 -> 22.0.0"])]


def test_setup_cell_is_a_no_op_under_the_runner_and_locally(monkeypatch):
    for env in ({"ARABIC_R1_PIPELINE": "1", "COLAB_RELEASE_TAG": "x"}, {}):
        for k in ("COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE", "ARABIC_R1_PIPELINE"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        ns = {"params_path": "../params/smoke.yaml", "overrides": ["a=1"], "profile": "auto"}
        exec(compile(SETUP_CELL, "setup-cell", "exec"), ns)
        assert (ns["params_path"], ns["overrides"]) == (
            "../params/smoke.yaml",
            ["a=1"],
        ) and "hosted" not in ns
