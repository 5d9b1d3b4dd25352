"""The papermill runner on real (tiny) notebooks: injection, freshness, failures, a killed kernel."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import write_notebook

from arabic_r1 import pipeline
from arabic_r1.manifest import check_fresh, read_manifest
from arabic_r1.params_loading import load_params
from arabic_r1.phases import Phase

# A two-phase registry whose notebooks live in tmp_path: "alpha" reads params.data, "beta" reads alpha's output.
PH = (Phase("00", "alpha", ("data",)), Phase("01", "beta", ("train",), ("alpha",)))
REGISTRY = "from arabic_r1.phases import Phase\nPH = (Phase('00', 'alpha', ('data',)), Phase('01', 'beta', ('train',), ('alpha',)))"

ALPHA = f"""{REGISTRY}
import json
from arabic_r1.params_loading import load_params
from arabic_r1.manifest import start_phase
params = load_params(params_path, overrides)
phase = start_phase(PH[0], params, run_dir, PH)
out = phase.dir / 'alpha.json'
out.write_text(json.dumps({{'budget': params.data.token_budget, 'overrides': overrides}}))
phase.finish({{'alpha': out}}, {{'budget': params.data.token_budget}})"""

BETA = f"""{REGISTRY}
from arabic_r1.params_loading import load_params
from arabic_r1.manifest import start_phase
params = load_params(params_path, overrides)
phase = start_phase(PH[1], params, run_dir, PH)
text = (phase.run_dir / '00_alpha' / 'alpha.json').read_text()
out = phase.dir / 'beta.txt'
out.write_text(text + str(params.train.lora.r))
phase.finish({{'beta': out}})"""


@pytest.fixture
def setup(project: Path):
    params_file = project / "params" / "t.yaml"
    params_file.write_text(
        yaml.safe_dump({"data": {"token_budget": 100}, "run": {"notebook_timeout_s": 120}})
    )
    nbs = project / "notebooks"
    write_notebook(nbs / "00_alpha.ipynb", ALPHA)
    write_notebook(nbs / "01_beta.ipynb", BETA)
    return params_file, nbs


def _run(params_file: Path, nbs: Path, overrides=(), **kw):
    return pipeline.reproduce(load_params(params_file, overrides), notebooks_dir=nbs, phases=PH, **kw)


def test_runs_notebooks_with_injected_params_then_skips_fresh(setup) -> None:
    params_file, nbs = setup
    summary = _run(params_file, nbs, ["data.token_budget=7"])
    run_dir = summary.run_dir
    assert [r.action for r in summary.results] == ["ran", "ran"]
    record = json.loads(
        (run_dir / pipeline.RECORD_FILE).read_text()
    )  # the measured budget of this invocation
    assert record["cold"] and record["wall_s"] + 0.1 >= sum(r.seconds for r in summary.results) > 0
    assert record["peak_rss_mb"] > 50 and [p["action"] for p in record["phases"]] == ["ran", "ran"]
    assert json.loads((run_dir / "00_alpha" / "alpha.json").read_text()) == {
        "budget": 7,
        "overrides": ["data.token_budget=7"],
    }
    executed = run_dir / "notebooks" / "00_alpha.ipynb"
    nb = json.loads(executed.read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and str(params_file) in "".join(injected[0]["source"])
    m = read_manifest(run_dir, PH[0])
    assert m["status"] == "complete" and m["metrics"] == {"budget": 7}
    for key in (
        "versions",
        "git_commit",
        "device",
        "started_at",
        "finished_at",
        "duration_s",
        "peak_memory_mb",
        "key",
    ):
        assert key in m
    assert m["peak_memory_mb"]["rss_self"] > 10

    again = _run(params_file, nbs, ["data.token_budget=7"])
    assert [r.action for r in again.results] == ["skipped", "skipped"]


def test_stale_params_rerun_only_affected_phases(setup) -> None:
    params_file, nbs = setup
    _run(params_file, nbs)
    # train is read only by beta: alpha stays fresh
    s = _run(params_file, nbs, ["train.lora.r=4"])
    assert [(r.action, r.reason) for r in s.results] == [
        ("skipped", s.results[0].reason),
        ("ran", "params changed in train"),
    ]
    # data changes alpha's output, which makes beta stale through its input
    s = _run(params_file, nbs, ["train.lora.r=4", "data.token_budget=9"])
    assert [r.action for r in s.results] == ["ran", "ran"]
    assert s.results[1].reason == "input 'alpha' changed"


def test_modified_output_and_force_only_from(setup) -> None:
    params_file, nbs = setup
    s = _run(params_file, nbs)
    (s.run_dir / "01_beta" / "beta.txt").write_text("tampered")
    fresh, reason = check_fresh(PH[1], load_params(params_file), s.run_dir, PH)
    assert not fresh and "modified" in reason
    assert [r.action for r in _run(params_file, nbs, only=["beta"]).results] == ["ran"]
    assert [r.action for r in _run(params_file, nbs, only=["00"], force=True).results] == ["ran"]
    assert [r.action for r in _run(params_file, nbs, start_from="01").results] == ["ran"]


def test_failing_cell_names_notebook_and_cell(setup) -> None:
    params_file, nbs = setup
    write_notebook(
        nbs / "01_beta.ipynb",
        "x = 1",
        "# a comment\nraise ValueError('bad row 17 in data.jsonl')",
        "print('never')",
    )
    with pytest.raises(pipeline.PhaseFailed) as err:
        _run(params_file, nbs)
    msg = str(err.value)
    assert "01_beta.ipynb failed in code cell 3" in msg  # parameters cell, x = 1, the raise
    assert (
        "raise ValueError('bad row 17 in data.jsonl')" in msg
        and "ValueError: bad row 17 in data.jsonl" in msg
    )
    assert (
        read_manifest(load_params(params_file).run_dir, PH[0])["status"] == "complete"
    )  # earlier phase kept


def test_cli_exit_code_on_failure(setup, capsys) -> None:
    from arabic_r1.cli import main

    params_file, nbs = setup
    write_notebook(nbs / "00_environment.ipynb", "1/0")  # the CLI uses the real phase table
    rc = main(["reproduce", "--params", str(params_file), "--notebooks", str(nbs)])
    assert rc == 1
    assert "00_environment.ipynb failed in code cell" in capsys.readouterr().err
    assert main(["reproduce", "--params", str(params_file), "--notebooks", str(nbs / "nothing")]) == 1
    assert "no phase notebooks" in capsys.readouterr().err


def test_notebook_that_skips_its_manifest_is_a_failure(setup) -> None:
    params_file, nbs = setup
    write_notebook(nbs / "00_alpha.ipynb", "print('did some work but never called finish')")
    with pytest.raises(pipeline.PhaseFailed, match="without recording a complete manifest"):
        _run(params_file, nbs)


def test_killed_kernel_ends_the_run(setup) -> None:
    params_file, nbs = setup
    write_notebook(
        nbs / "00_alpha.ipynb",
        "import os, signal, time\ntime.sleep(0.5)\nos.kill(os.getpid(), signal.SIGKILL)",
        "print('after')",
    )
    t0 = time.monotonic()
    with pytest.raises(pipeline.PhaseFailed, match="kernel .* died") as err:
        _run(params_file, nbs)
    assert time.monotonic() - t0 < 90
    assert "out-of-memory" in str(err.value)
    assert "in code cell 2 (`import os, signal, time`)" in str(
        err.value
    )  # numbered as in the source notebook


def test_watchdog_kills_a_hung_runner_whose_kernel_died(tmp_path, monkeypatch) -> None:
    """If papermill itself hangs after its kernel vanished, the watchdog still ends it."""
    monkeypatch.setattr(pipeline, "KERNEL_GONE_GRACE_S", 1.0)
    fake = (
        "import subprocess, sys, time\n"
        "k = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(1)', 'ipykernel_launcher'])\n"
        "time.sleep(600)\n"
    )
    t0 = time.monotonic()
    with (tmp_path / "log").open("w") as err:
        outcome, peak = pipeline._watch([sys.executable, "-c", fake], err, wall_limit=300)
    assert outcome == "kernel_died" and peak > 10  # MB: this runner and the fake papermill at least
    assert time.monotonic() - t0 < 30


def test_watchdog_wall_limit(tmp_path) -> None:
    with (tmp_path / "log").open("w") as err:
        outcome, _ = pipeline._watch(
            [sys.executable, "-c", "import time; time.sleep(600)"], err, wall_limit=1
        )
    assert outcome == "timeout"


def test_watchdog_stops_a_silent_idle_run_but_not_a_silent_busy_one(tmp_path) -> None:
    """A hang (no output, no CPU) is stopped after stall_s; a run that prints nothing but computes is not."""
    t0 = time.monotonic()
    with (tmp_path / "log").open("w") as err:
        outcome, _ = pipeline._watch(
            [sys.executable, "-c", "import time; time.sleep(600)"], err, None, stall_s=2
        )
    assert outcome == "stalled" and time.monotonic() - t0 < 20
    busy = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 8: pass\n"  # 8 s of CPU, silent
    with (tmp_path / "log2").open("w") as err:
        outcome, _ = pipeline._watch([sys.executable, "-c", busy], err, None, stall_s=3)
    assert outcome == 0


def test_stall_limit_from_params_names_the_hang(setup) -> None:
    params_file, nbs = setup
    write_notebook(nbs / "00_alpha.ipynb", "import time\ntime.sleep(120)")
    with pytest.raises(pipeline.PhaseFailed, match="no CPU work for run.stall_timeout_s=4s.*hung"):
        _run(params_file, nbs, ["run.stall_timeout_s=4"])


def test_runner_without_the_lab_extra_says_how_to_install_it(setup, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "papermill" else real(name, *a)
    )
    params_file, nbs = setup
    with pytest.raises(pipeline.PhaseFailed, match=r"papermill.*the `lab` extra: pip install -e '.\[lab\]'"):
        _run(params_file, nbs)


def test_cell_timeout_from_params(setup) -> None:
    params_file, nbs = setup
    write_notebook(nbs / "00_alpha.ipynb", "import time\ntime.sleep(60)")
    with pytest.raises(pipeline.PhaseFailed, match="time|Timeout"):
        _run(params_file, nbs, ["run.notebook_timeout_s=3"])


def test_missing_notebooks_are_reported_not_fatal(setup) -> None:
    params_file, nbs = setup
    (nbs / "01_beta.ipynb").unlink()
    s = _run(params_file, nbs)
    assert [r.action for r in s.results] == ["ran", "missing"]


def test_phase_with_missing_input_fails_clearly(setup) -> None:
    params_file, nbs = setup
    with pytest.raises(pipeline.PhaseFailed, match="has not completed"):
        pipeline.run_phase(load_params(params_file), "beta", notebooks_dir=nbs, phases=PH)


def test_a_new_package_version_makes_a_phase_stale(setup, monkeypatch) -> None:
    import arabic_r1

    params_file, nbs = setup
    s = _run(params_file, nbs)
    assert check_fresh(PH[0], load_params(params_file), s.run_dir, PH)[0]
    monkeypatch.setattr(arabic_r1, "__version__", arabic_r1.__version__ + ".post1")
    fresh, reason = check_fresh(PH[0], load_params(params_file), s.run_dir, PH)
    assert not fresh and reason.startswith("arabic_r1 version changed"), reason


def test_upstream_artifacts_come_from_the_manifest_and_the_phase_table(tmp_path: Path) -> None:
    from arabic_r1.jsonl import write_json_atomic
    from arabic_r1.manifest import PhaseError, upstream_artifact, upstream_outputs

    with pytest.raises(ValueError, match="does not list it among its inputs"):
        upstream_artifact(tmp_path, "cot_distillation", "trace_verification/verified")  # 02 never reads 03
    with pytest.raises(
        ValueError, match="reads data_mixture/stats but"
    ):  # 02 declares the pool, not the stats
        upstream_artifact(tmp_path, "cot_distillation", "data_mixture/stats")
    with pytest.raises(ValueError, match="reads data_mixture but"):  # nor phase 01 as a whole
        upstream_outputs(tmp_path, "cot_distillation", "data_mixture")
    with pytest.raises(
        PhaseError, match="needs output 'pool' of phase 01_data_mixture, which has not completed"
    ):
        upstream_artifact(tmp_path, "cot_distillation", "data_mixture/pool")
    (tmp_path / "01_data_mixture").mkdir()
    write_json_atomic(tmp_path / "01_data_mixture" / "manifest.json",
                      {"status": "complete", "outputs": {"pool": {"path": "01_data_mixture/pool.jsonl"}}})  # fmt: skip
    assert (
        upstream_artifact(tmp_path, "cot_distillation", "data_mixture/pool")
        == tmp_path / "01_data_mixture" / "pool.jsonl"
    )
