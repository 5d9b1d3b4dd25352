"""Sweeps: override sets as separate named runs, unchanged phases reused, one comparison table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from arabic_r1.intervals import paired_average
from arabic_r1.paper_tables import compare_runs, read_scores
from arabic_r1.params import ParamsError
from arabic_r1.report_tables import Run
from arabic_r1.sweep import comparable_runs, parse_sets, run_name, run_sweep
from arabic_r1.uncertainty_tables import read_item_scores, sweep_paired_table

REPO = Path(__file__).resolve().parents[1]


def test_sets_and_names():
    assert parse_sets(["train.lora.r=16", "train.lora.r=32 train.lora.alpha=64"]) == [
        ["train.lora.r=16"], ["train.lora.r=32", "train.lora.alpha=64"],
    ]  # fmt: skip
    assert run_name("smoke", ["train.lora.r=32", "data.arabic_share=0.7"]) == "smoke-r32-arabic_share0.7"
    assert run_name("smoke", ["train.lora.r=32", "run.name=mine"]) == "mine"
    with pytest.raises(ParamsError, match="at least two"):
        parse_sets(["train.lora.r=16"])
    with pytest.raises(ParamsError, match="sweep set 2 is empty"):
        parse_sets(["train.lora.r=16", " "])
    with pytest.raises(ParamsError, match="expected KEY.PATH=VALUE"):
        parse_sets(["train.lora.r=16", "rank"])


def test_a_bad_set_fails_before_anything_runs(tmp_path: Path):
    from conftest import copy_smoke_project

    project = copy_smoke_project(tmp_path)
    with pytest.raises(ParamsError, match="train.lora.r"):
        run_sweep(project / "params" / "smoke.yaml", [["train.lora.r=8"], ["train.lora.r=-1"]])
    assert not (project / "runs").exists()


def test_two_run_smoke_sweep_reuses_upstream_phases_and_compares(smoke_run):
    project, base_params, _ = smoke_run
    common = ["eval.benchmarks=[aratrust, alghafa]", "eval.scoring=[loglikelihood]"]
    sets = [["train.max_steps=10"], ["train.max_steps=30"]]
    runs = run_sweep(
        project / "params" / "smoke.yaml", sets, common, name="steps", notebooks_dir=REPO / "notebooks"
    )

    assert [r.name for r in runs] == ["smoke-max_steps10", "smoke-max_steps30"]
    upstream = ["00_environment", "01_data_mixture", "02_cot_distillation", "03_trace_verification"]
    for r in runs:
        assert list(r.reused) == upstream and set(r.reused.values()) == {"smoke"}
        ran = [p.phase for p in r.summary.results if p.action == "ran"]
        assert ran == ["04_moe_lora_sft", "05_oall_evaluation", "06_paper_report"]
        # linked, not copied: the verified traces are the base run's file
        a = r.run_dir / "03_trace_verification" / "verified.jsonl"
        assert (
            os.stat(a).st_ino
            == os.stat(base_params.run_dir / "03_trace_verification" / "verified.jsonl").st_ino
        )
        summary = json.loads((r.run_dir / "04_moe_lora_sft" / "train_summary.json").read_text())
        assert summary["steps"] == int(r.overrides[0].split("=")[1])
        assert (project / "reports" / r.name / "report.md").is_file()  # each run its own report folder

    record = project / "runs" / "sweeps" / "steps.json"
    rec = json.loads(record.read_text())
    assert [x["overrides"] for x in rec["runs"]] == sets
    table = compare_runs([r.run_dir for r in runs], {r.name: r.overrides for r in runs})
    paired = sweep_paired_table(
        [r.run_dir for r in runs], base_params.report.bootstrap_resamples, base_params.run.seed
    )
    assert (
        record.with_suffix(".md").read_text(encoding="utf-8") == table.markdown() + "\n" + paired.markdown()
    )
    # the paired row recomputed from the two runs' item scores: 30 steps against 10, on the same documents
    items = [read_item_scores(Run.open(r.run_dir).artifact("oall_evaluation", "item_scores"))[("finetuned", "leaderboard")]
             for r in runs]  # fmt: skip
    diff = paired_average(
        items[1], items[0], resamples=base_params.report.bootstrap_resamples, seed=base_params.run.seed
    )
    assert paired.value(runs[1].name, "Δ vs smoke-max_steps10 (mean)") == pytest.approx(100 * diff.diff.value)
    assert (
        paired.value(runs[1].name, "benchmarks") == 2 and paired.value(runs[1].name, "items") == diff.diff.n
    )
    # numbers recomputed from each run's own artifacts
    for r in runs:
        scores = read_scores(Run.open(r.run_dir).artifact("oall_evaluation", "scores"))
        assert table.value(r.name, "AraTrust") == pytest.approx(
            100 * scores[("finetuned", "aratrust", "leaderboard")]
        )
        ft = [scores[("finetuned", b, "leaderboard")] for b in ("aratrust", "alghafa")]
        assert table.value(r.name, "mean of 2") == pytest.approx(100 * sum(ft) / 2)
        assert table.value(r.name, "overrides") == r.overrides[0]
    assert table.value(runs[0].name, "final loss") != table.value(runs[1].name, "final loss")
    # notebook 06 of the second run found its sibling
    assert comparable_runs(runs[1].run_dir) == [runs[1].run_dir, runs[0].run_dir]
    executed = json.loads((runs[1].run_dir / "notebooks" / "06_paper_report.ipynb").read_text())
    text = json.dumps(executed["cells"])
    assert "Sweep: fine-tuned models side by side" in text and "smoke-max_steps10" in text
