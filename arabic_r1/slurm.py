"""Phase 01 on Slurm: datatrove's ``SlurmPipelineExecutor`` submits each stage as a job array that depends
(afterok) on the stage before; this module records every job id, waits for the chain and fails loudly.

datatrove itself only submits: a failed array task leaves the later stages pending forever (their dependency
can never be satisfied) and the driver waiting. ``wait_for`` watches every job of the chain in ``squeue`` and
raises, naming the stage, the job and the tail of its log, after cancelling the rest of the chain; a run killed
before that has its jobs cancelled by the run's watchdog (``arabic_r1.run_owner``), which reads the ids that
``SlurmJobRecorder`` appends to the run's jobs file as they are submitted.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from arabic_r1.jsonl import write_json_atomic
from arabic_r1.run_owner import RUN_ENV, scancel, slurm_jobs_file

log = logging.getLogger(__name__)


class SlurmJobRecorder:
    """datatrove's ``job_id_retriever``: reads the id from sbatch's output (its default) and remembers every job
    the executor submits (its job arrays and the merge_stats job), for waiting on them and cancelling them. When the
    run has a watchdog (``arabic_r1.run_owner``), the ids are also appended to its jobs file as they are submitted."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, sbatch_output: str) -> str:
        job_id = sbatch_output.split()[-1]
        self.ids.append(job_id)
        if token := os.environ.get(RUN_ENV):
            with slurm_jobs_file(token).open("a", encoding="utf-8") as f:
                f.write(job_id + "\n")
        return job_id


SLURM_FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED",
                "REVOKED", "SPECIAL_EXIT"}  # fmt: skip
SLURM_ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                "RESIZING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED", "RESV_DEL_HOLD"}  # fmt: skip


def slurm_jobs(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """What squeue knows of these jobs, array tasks one by one: {'123_4': {state, reason, start, end}}. Jobs the
    controller has already forgotten (MinJobAge after they ended) are absent."""
    if not job_ids:
        return {}
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%r|%S|%e"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:  # "Invalid job id specified": every one of them has been purged
        return {}
    jobs = {}
    for line in out.stdout.splitlines():
        job, state, reason, start, end = (line.split("|") + [""] * 5)[:5]
        jobs[job.strip()] = {"state": state, "reason": reason, "start": start, "end": end}
    return jobs


def _slurm_log_tail(folder: str, job: str, lines: int = 8) -> str:
    path = Path(folder) / f"{job if '_' in job else job + '_0'}.out"
    if not path.is_file():
        return f"(no log at {path})"
    return f"{path}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_for(executors: list[tuple[str, Any]], poll_s: float = 30.0) -> None:
    """Block until every job the (Slurm) executors submitted has left the queue and every task has completed.
    A job that failed (or was cancelled, timed out...) or waits on a dependency that can no longer be satisfied
    raises, naming the stage and its log, after cancelling the rest of the chain."""
    stage_of = {j: name for name, ex in executors for j in ex.job_id_retriever.ids}
    ids = list(stage_of)
    while True:
        jobs = slurm_jobs(ids)
        broken = {
            j: info
            for j, info in jobs.items()
            if info["state"] in SLURM_FAILED or info["reason"] == "DependencyNeverSatisfied"
        }
        if broken:
            scancel(ids)
            first = min(broken, key=lambda j: (ids.index(j.split("_")[0]), j))
            name = stage_of[first.split("_")[0]]
            ex = dict(executors)[name]
            raise RuntimeError(
                f"phase 01 on Slurm: stage {name!r} job {first} is {broken[first]['state']} "
                f"({broken[first]['reason']}); cancelled the rest of the chain ({', '.join(ids)}). "
                f"{_slurm_log_tail(ex.slurm_logs_folder, first)}"
            )
        incomplete = {name: ex.get_incomplete_ranks(skip_completed=True) for name, ex in executors}
        waiting = [j for j, info in jobs.items() if info["state"] in SLURM_ACTIVE]
        if not waiting:
            missing = {name: ranks for name, ranks in incomplete.items() if ranks}
            if not missing:
                return
            scancel(ids)
            raise RuntimeError(
                f"phase 01 on Slurm: no job of {', '.join(ids)} is queued or running, yet tasks of "
                + "; ".join(f"{name} {ranks}" for name, ranks in missing.items())
                + " never completed; see "
                + ", ".join(dict(executors)[name].slurm_logs_folder for name in missing)
            )
        todo = sum(len(r) for r in incomplete.values())
        log.info("slurm: %d jobs queued or running, %d tasks to go (%s)", len(waiting), todo, ", ".join(ids))
        time.sleep(poll_s)


def run_slurm(executors: list[tuple[str, Any]], work: Path, poll_s: float) -> dict[str, float]:
    """Submit every stage (each after the one before: afterok), wait, and write ``logs/slurm_jobs.json``
    ({stage: job ids, the last the merge_stats job}); returns each stage's seconds from squeue's start/end."""
    submitted: list[str] = []
    try:
        for name, ex in executors:
            ex.launch_job()  # its dependency (the stage before) is already submitted: afterok on its job id
            submitted += ex.job_id_retriever.ids
            log.info("slurm: stage %s submitted as job %s", name, ex.job_id)
        write_json_atomic(
            work / "logs" / "slurm_jobs.json", {name: ex.job_id_retriever.ids for name, ex in executors}
        )
        wait_for(executors, poll_s)
    except BaseException:  # KeyboardInterrupt included: leave nothing queued behind
        scancel(submitted)
        raise
    if token := os.environ.get(RUN_ENV):
        slurm_jobs_file(token).unlink(missing_ok=True)  # all done: nothing for the watchdog to cancel
    jobs = slurm_jobs(submitted)
    timings: dict[str, float] = {}
    for name, ex in executors:
        main = [
            info
            for j, info in jobs.items()
            if j.split("_")[0] in ex.job_id_retriever.ids[:-1] and info["start"][:1].isdigit()
        ]
        if main and all(info["end"][:1].isdigit() for info in main):
            start = min(datetime.fromisoformat(i["start"]) for i in main)
            end = max(datetime.fromisoformat(i["end"]) for i in main)
            timings[name] = (end - start).total_seconds()
    return timings
