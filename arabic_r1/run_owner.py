"""A run owns its processes: what it starts ends with it, and two runs never write one run folder at once.

- **The lock.** ``reproduce`` holds an exclusive ``flock`` on ``<run_dir>/.run.lock`` (its PID and start time
  written inside). The kernel drops a flock when its holder dies, however it dies, so a killed run never holds a
  folder forever; a second run on a held folder is refused naming the holder's PID.
- **The watchdog.** Every notebook runs under ``python -m arabic_r1.run_owner``: a small process between the
  runner and papermill that watches the runner. When the runner goes away (SIGKILL included, where no handler of
  the runner's can run) or asks it to stop (SIGTERM), it ends every process of the run and exits; the runner's
  lock descriptor is passed to it, so the folder stays locked until that is done.
- **Which processes.** Each carries ``ARABIC_R1_RUN=<token>`` in its environment (inherited by papermill, the
  kernel and whatever the kernel starts: data workers, a local teacher server, ranks). Ending a run ends every
  process with the token, however it was re-parented or re-grouped on the way.
- **Slurm jobs.** Jobs a run submits (phase 01 with ``data.executor: slurm``) run on other machines, outside
  the token's reach: their ids are appended to ``slurm_jobs_file(token)`` as they are submitted, and the
  watchdog ``scancel``s whatever that file lists when the run ends; the phase empties it once its jobs are done.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from arabic_r1.errors import ExplainedError

RUN_ENV = "ARABIC_R1_RUN"
LOCK_FILE = ".run.lock"
WATCH_S = 0.2
TERM_GRACE_S = 3.0  # SIGTERM, then SIGKILL: a kernel mid-step gets this long to exit on its own


class RunLocked(ExplainedError, RuntimeError):
    """Another run holds the run folder; the message names its PID."""


def new_token() -> str:
    return uuid.uuid4().hex


class RunLock:
    """The exclusive lock on a run folder, held by the runner (and its watchdogs) for the whole run."""

    def __init__(self, run_dir: Path, token: str):
        self.path = Path(run_dir) / LOCK_FILE
        self.token = token
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_lock(self.path.parent)
            raise RunLocked(
                f"{self.path.parent} is being written by another run (PID {holder.get('pid', '?')}, started "
                f"{holder.get('started_at', '?')}); wait for it, stop it, or pass another run folder"
            ) from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "token": self.token, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.write(fd, json.dumps(info).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the watchdogs' copies closed when they exited
            self.fd = None


def read_lock(run_dir: Path) -> dict:
    """What the lock file says about the run that holds (or last held) ``run_dir``: pid, token, started_at."""
    try:
        return json.loads((Path(run_dir) / LOCK_FILE).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def run_processes(token: str) -> list:
    """Every live process carrying the run's token (psutil processes), this one excluded."""
    import psutil

    found = []
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        try:
            if p.environ().get(RUN_ENV) == token and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def end_run_processes(token: str, grace_s: float = TERM_GRACE_S) -> int:
    """SIGTERM every process of the run, SIGKILL what is left after ``grace_s``; returns how many there were."""
    import psutil

    procs = run_processes(token)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive + run_processes(token):  # and any it started meanwhile
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return len(procs)


def slurm_jobs_file(token: str) -> Path:
    """Where a run's kernel lists the Slurm jobs it submitted (one id a line), for the watchdog to cancel."""
    return Path(tempfile.gettempdir()) / f"arabic_r1_{token}.slurm_jobs"


def cancel_slurm_jobs(token: str) -> list[str]:
    """``scancel`` every job the run listed in ``slurm_jobs_file`` (done ones are a no-op); returns the ids."""
    path = slurm_jobs_file(token)
    try:
        ids = sorted(set(path.read_text(encoding="utf-8").split()))
    except FileNotFoundError:
        return []
    scancel(ids)
    path.unlink(missing_ok=True)
    return ids


def scancel(job_ids: list[str], timeout_s: float = 60) -> None:
    """Cancel Slurm jobs (ended ones are a no-op); a hung controller is reported, not waited on forever."""
    if not job_ids or not shutil.which("scancel"):
        return
    try:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        print(f"run_owner: scancel {' '.join(job_ids)} timed out; cancel them by hand", file=sys.stderr)


def owned_command(cmd: Sequence[str], token: str) -> list[str]:
    """``cmd`` run under the watchdog of this process (see the module docstring)."""
    return [sys.executable, "-m", "arabic_r1.run_owner", str(os.getpid()), token, "--", *cmd]


def watch(runner_pid: int, token: str, cmd: Sequence[str]) -> int:
    """The watchdog: run ``cmd``; when it exits, or the runner is gone, or a SIGTERM/SIGINT arrives, end every
    process of the run. Returns ``cmd``'s exit code (or 128 + the signal that stopped the run)."""
    stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: stop.append(signum))
    child = subprocess.Popen(list(cmd))  # inherits stdout/stderr and the token; not the lock descriptor
    rc: int | None = None
    while rc is None and not stop and os.getppid() == runner_pid:
        time.sleep(WATCH_S)
        rc = child.poll()
    end_run_processes(token)
    cancel_slurm_jobs(token)
    if rc is None:
        child.wait()
        return 128 + (stop[0] if stop else signal.SIGKILL)
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 4 or args[2] != "--":
        print("usage: python -m arabic_r1.run_owner RUNNER_PID TOKEN -- COMMAND...", file=sys.stderr)
        return 2
    return watch(int(args[0]), args[1], args[3:])


if __name__ == "__main__":
    sys.exit(main())
