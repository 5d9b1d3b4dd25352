"""Phase 01 on a real Slurm cluster (``data.executor: slurm``) gives the local executor's outputs.

The end-to-end test is opt-in (slow) and needs a running cluster with the smoke profile's partition (``data.slurm.partition``, "cpu"):
on a fresh Debian/Ubuntu machine, as root, ``make slurm-up`` (scripts/slurm_local.sh: slurmctld + slurmd + munge,
one node, no cgroups), then ``.venv/bin/python -m pytest -m slow tests/test_slurm.py``; ``make slurm-down`` stops it.

Both runs go through the runner (``arabic-r1 run 01``), so the Slurm one is submitted from the notebook kernel
like a user's. The test checks that every stage was a Slurm job array that ran to COMPLETED (the controller's
records and the job logs datatrove asked sbatch for), that each stage's tasks started only after every task of the
stage before had completed (the afterok chain), and that the pool and the reports equal the local run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from conftest import copy_smoke_project

CLI = Path(sys.executable).with_name("arabic-r1")
PHASE = "01_data_mixture"
REPORTS = ("mixture_stats.json", "dedup_report.json", "decontamination_report.json", "filter_report.json")
SETUP = "sudo make slurm-up (scripts/slurm_local.sh up)"


def _slurm_partition_or_skip(partition: str) -> None:
    if not shutil.which("sbatch") or not shutil.which("squeue"):
        pytest.skip(f"no Slurm client (sbatch/squeue) on PATH: {SETUP}")
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-p", partition, "-o", "%T"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"sinfo timed out: no Slurm controller answers; {SETUP}")
    if out.returncode != 0:
        pytest.skip(f"no Slurm controller answers (sinfo: {out.stderr.strip()[:200]}): {SETUP}")
    states = out.stdout.split()
    if not any(s.rstrip("*~#$@+").lower() in ("idle", "mixed", "allocated", "completing") for s in states):
        pytest.skip(
            f"partition {partition!r} has no usable node (sinfo: {states or 'no such partition'}): {SETUP}"
        )


def _run(project: Path, run_dir: Path, phase: str, *overrides: str) -> float:
    cmd = [
        str(CLI),
        "run",
        phase,
        "--params",
        str(project / "params" / "smoke.yaml"),
        "--run-dir",
        str(run_dir),
    ]
    for o in overrides:
        cmd += ["-o", o]
    t0 = datetime.now()
    proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return (datetime.now() - t0).total_seconds()


def _canonical(obj):
    """Dicts by key and every list as a sorted multiset (by its items' canonical JSON): the order in which
    datatrove's ranks wrote rows is not part of the result."""
    if isinstance(obj, dict):
        return {k: _canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, list):
        items = [_canonical(v) for v in obj]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True, ensure_ascii=False))
    return obj


def _jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _outputs(phase_dir: Path) -> dict[str, str]:
    """sha256 of each output after canonical sorting: pool.jsonl rows sorted by id (then by content), the JSON
    reports with every list sorted (timings_s dropped: wall clocks differ), each removed/<step>/ folder's rows
    sorted by id. The raw pool.jsonl is compared byte for byte as well (selection writes it in cell order)."""
    out = {}

    def digest(obj) -> str:
        return hashlib.sha256(
            json.dumps(_canonical(obj), sort_keys=True, ensure_ascii=False).encode()
        ).hexdigest()

    out["pool.jsonl (rows)"] = digest(_jsonl(phase_dir / "pool.jsonl"))
    out["pool.jsonl (bytes)"] = hashlib.sha256((phase_dir / "pool.jsonl").read_bytes()).hexdigest()
    for name in REPORTS:
        payload = json.loads((phase_dir / name).read_text(encoding="utf-8"))
        payload.pop("timings_s", None)
        out[name] = digest(payload)
    for step in sorted(p for p in (phase_dir / "removed").iterdir() if p.is_dir()):
        out[f"removed/{step.name}"] = digest([row for f in sorted(step.glob("*.jsonl")) for row in _jsonl(f)])
    return out


def _job_records(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """{'12_3': {name, state, start, end}} from the controller (squeue keeps ended jobs MinJobAge seconds:
    3600 on the local cluster), else from accounting (sacct), else from job completion records (sacct -c)."""
    ids = ",".join(job_ids)
    records: dict[str, dict[str, str]] = {}
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", ids, "-o", "%i|%j|%T|%S|%e"], capture_output=True, text=True
    )
    lines = out.stdout.splitlines() if out.returncode == 0 else []
    if not lines:
        for extra in ([], ["-c"]):
            out = subprocess.run(
                ["sacct", *extra, "-n", "-P", "-X", "-j", ids, "-o", "JobID,JobName,State,Start,End"],
                capture_output=True, text=True,
            )  # fmt: skip
            lines = out.stdout.splitlines() if out.returncode == 0 else []
            if lines:
                break
    for line in lines:
        job, name, state, start, end = line.split("|")[:5]
        records[job.strip()] = {"name": name, "state": state.split()[0], "start": start, "end": end}
    return records


def _first_timestamp(log: Path) -> datetime:
    first = log.read_text(encoding="utf-8").splitlines()[0]  # "2026-12-02 03:37:08.787 | INFO | ..."
    return datetime.strptime(first.split(" | ")[0], "%Y-%m-%d %H:%M:%S.%f")


def test_slurm_params_reach_the_sbatch_script(tmp_path: Path) -> None:
    """Fast, no cluster: account, extra sbatch/srun options and the env command land in datatrove's script."""
    from arabic_r1.data_executors import make_executor
    from arabic_r1.params import ParamsError
    from arabic_r1.params_loading import load_params

    base = load_params("smoke")
    slurm = base.data.slurm.model_copy(
        update={"account": "alloc1", "qos": None, "sbatch_args": {"constraint": "cpu", "exclusive": ""},
                "env_command": "module load python && source /x/.venv/bin/activate",
                "srun_args": {"container-image": "/x/img.sqsh"}}
    )  # fmt: skip
    data = base.data.model_copy(update={"executor": "slurm", "workers": 4, "slurm": slurm})
    ex = make_executor(data, [], 3, tmp_path / "logs", name="filter")
    script = ex.get_launch_file_contents(ex.get_sbatch_args(3), "srun launch_pickled_pipeline x")
    for line in ("#SBATCH --account=alloc1", "#SBATCH --constraint=cpu", "#SBATCH --exclusive",
                 "#SBATCH --array=0-2%3", "module load python && source /x/.venv/bin/activate"):  # fmt: skip
        assert line in script, script
    assert "--qos" not in script and ex.srun_args == {"container-image": "/x/img.sqsh"}
    for bad, match in (
        ("data.slurm.sbatch_args={account: a}", "'account' is set by data.slurm.account"),
        ("data.slurm.sbatch_args={--constraint: cpu}", "long option name without dashes"),
        ("data.slurm.time=2h", "time"),
    ):
        with pytest.raises(ParamsError, match=match):
            load_params("smoke", [bad])


def test_watchdog_cancels_the_jobs_a_run_listed(tmp_path: Path, monkeypatch) -> None:
    from arabic_r1 import run_owner

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "cancelled"}\n')
    (bin_dir / "scancel").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    token = run_owner.new_token()
    run_owner.slurm_jobs_file(token).write_text("12\n13\n12\n")
    assert run_owner.cancel_slurm_jobs(token) == ["12", "13"]
    assert (tmp_path / "cancelled").read_text().split() == ["12", "13"]
    assert not run_owner.slurm_jobs_file(token).exists() and run_owner.cancel_slurm_jobs(token) == []


@pytest.mark.slow
def test_phase01_on_slurm_equals_local(tmp_path: Path) -> None:
    project = copy_smoke_project(tmp_path)
    smoke = yaml.safe_load((project / "params" / "smoke.yaml").read_text(encoding="utf-8"))
    partition = smoke["data"].get("slurm", {}).get("partition", "cpu")
    _slurm_partition_or_skip(partition)
    run_dir = project / "runs" / "slurm"
    phase_dir = run_dir / PHASE

    _run(project, run_dir, "00")
    local_s = _run(project, run_dir, "01")
    local = _outputs(phase_dir)
    local_tasks = {p.name: len(list((p / "completions").iterdir())) for p in (phase_dir / "work" / "logs").iterdir()
                   if p.is_dir()}  # fmt: skip

    # workers=2: the 20-task MinHash bucket array runs two at a time; each stage still waits for the one before
    slurm_s = _run(project, run_dir, "01", "data.executor=slurm", "data.workers=2", "data.slurm.poll_s=1")
    logs = phase_dir / "work" / "logs"
    jobs = json.loads((logs / "slurm_jobs.json").read_text(encoding="utf-8"))
    stage_dirs = sorted((p for p in logs.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0]))
    assert [d.name.split("_", 1)[1] for d in stage_dirs] == list(jobs), "one Slurm submission per stage"
    records = _job_records([j for ids in jobs.values() for j in ids])

    # 1. every stage was a job array queued through Slurm: one array task per datatrove task, all COMPLETED
    previous_end = previous_slurm_end = None
    previous_name = None
    for stage_dir, (name, ids) in zip(stage_dirs, jobs.items(), strict=True):
        main = ids[:-1]  # datatrove submits the stage's array(s), then a merge_stats job
        tasks = {j: r for j, r in records.items() if j.split("_")[0] in main}
        assert len(tasks) == local_tasks[stage_dir.name], f"{name}: array tasks {sorted(tasks)} in {records}"
        assert {r["state"] for r in tasks.values()} == {"COMPLETED"}, f"{name}: {tasks}"
        assert {r["name"] for r in tasks.values()} == {f"arabic_r1_{name}"}
        for job in tasks:
            text = (stage_dir / "slurm_logs" / f"{job}.out").read_text(encoding="utf-8")
            assert "launch_pickled_pipeline" in text and "Launching pipeline for rank=" in text, text[-2000:]
        # 2. the afterok chain: this stage's first task started after the previous stage's last one ended,
        # by the controller's clock (seconds) and by datatrove's own logs (task start vs completion marker)
        start = min(datetime.fromisoformat(r["start"]) for r in tasks.values())
        first_log = min(_first_timestamp(f) for f in (stage_dir / "logs").glob("task_*.log"))
        if previous_end is not None and previous_slurm_end is not None:
            assert start >= previous_slurm_end, (
                f"stage {name!r} started at {start} (Slurm), before stage {previous_name!r} ended at "
                f"{previous_slurm_end}: the dependency between stages was not honoured"
            )
            assert first_log > previous_end, (
                f"stage {name!r}'s first task started at {first_log}, before stage {previous_name!r}'s last task "
                f"completed at {previous_end}: the dependency between stages was not honoured"
            )
        previous_slurm_end = max(datetime.fromisoformat(r["end"]) for r in tasks.values())
        previous_end = max(
            datetime.fromtimestamp(os.stat(f).st_mtime) for f in (stage_dir / "completions").iterdir()
        )
        previous_name = name

    # 3. the same results as the local executor
    slurm = _outputs(phase_dir)
    differ = [k for k in local if local[k] != slurm.get(k)]
    assert not differ and local.keys() == slurm.keys(), f"Slurm outputs differ from local in: {differ}"
    print(f"\nphase 01 local {local_s:.1f}s, on Slurm {slurm_s:.1f}s; jobs {jobs}")
