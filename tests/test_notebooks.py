"""Notebook hygiene, and the shipped notebooks run for real: under the runner and top to bottom with defaults."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from conftest import copy_smoke_project
from nbclient import NotebookClient

from arabic_r1.manifest import read_manifest
from arabic_r1.params import REPO_DIR
from arabic_r1.phases import PHASES, find_phase
from arabic_r1.pipeline import reproduce

NOTEBOOKS = sorted((REPO_DIR / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS and NOTEBOOKS[0].name == "00_environment.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_hygiene(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    for name in ("params_path", "overrides", "run_dir"):
        assert f"{name} =" in tagged[0].source, f"{path.name}: parameters cell lacks {name}"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} committed with outputs"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert find_phase(path.stem).notebook == path.name  # every notebook is a registered phase


def test_runner_executes_shipped_notebooks_on_smoke(smoke_run) -> None:
    project, params, summary = smoke_run
    ran = [r for r in summary.results if r.action == "ran"]
    assert [r.phase for r in ran] == [p.stem for p in NOTEBOOKS]
    m = read_manifest(project / "runs" / "smoke", PHASES[0])
    assert m["status"] == "complete" and m["metrics"]["base_model_parameters"] > 1_000_000
    assert (project / "runs" / "smoke" / "00_environment" / "base_model" / "config.json").is_file()
    assert (project / "runs" / "smoke" / "notebooks" / "00_environment.ipynb").is_file()
    again = reproduce(params, notebooks_dir=REPO_DIR / "notebooks")
    assert all(r.action == "skipped" for r in again.results if r.action != "missing")


def test_notebook_00_runs_top_to_bottom_with_defaults(tmp_path: Path) -> None:
    """As a JupyterLab user would: no injected parameters, cwd = notebooks/."""
    project = copy_smoke_project(tmp_path)
    path = project / "notebooks" / "00_environment.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    env = json.loads((project / "runs" / "smoke" / "00_environment" / "env.json").read_text())
    assert env["profile"] == "smoke" and env["base_model"]["embedded"]["family"] == "deepseek_v3"
    shown = "".join(json.dumps(c.get("outputs", [])) for c in nb.cells)
    assert "unsloth" in shown and "lighteval" in shown  # the doctor table was displayed


@pytest.mark.slow
def test_a_gpt_oss_harmony_student_runs_every_phase(tmp_path: Path) -> None:
    """The colab_t4 student's shape on a CPU: tiny gpt-oss, harmony channels, the harmony training template."""
    from arabic_r1.params_loading import load_params

    project = copy_smoke_project(tmp_path)
    params = load_params(project / "params" / "smoke.yaml", [
        "model.family=gpt_oss", "model.reasoning_format=harmony",
        "train.chat_template=arabic_r1/resources/chat_template_harmony.jinja",
        "train.lora.targets=[attention, routed_experts]", "train.lora.train_router=true",
    ])  # fmt: skip
    summary = reproduce(params, notebooks_dir=REPO_DIR / "notebooks")
    assert [r.action for r in summary.results] == ["ran"] * len(NOTEBOOKS)
    run = project / "runs" / "smoke"
    first = json.loads((run / "03_trace_verification" / "verified.jsonl").read_text().splitlines()[0])
    assert set(first["messages"][1]) == {"role", "thinking", "content"}
    cov = json.loads((run / "04_moe_lora_sft" / "coverage.json").read_text())["adapter"]
    assert cov["routed_experts"]["parameters"] > 0 and cov["router"]["parameters"] > 0
    merged = json.loads((run / "04_moe_lora_sft" / "merged" / "config.json").read_text())
    assert merged["output_router_logits"] is False  # TRL's training setting is not saved for inference
    assert (run / "05_oall_evaluation" / "reasoning_finetuned.jsonl").is_file()
