"""Run the numbered notebooks in order with papermill, skipping phases whose manifest is fresh.

The run owns its processes (:mod:`arabic_r1.run_owner`): it locks the run folder, and each notebook's papermill
runs under a watchdog that ends papermill, the kernel and whatever the kernel started when this runner dies,
however it dies. This process also watches papermill, because papermill alone can hang when the kernel is
OOM-killed and can exit 0 after an IOPub timeout that trimmed the run. The guards:
- a kernel that disappears while papermill is still running ends the run after a short grace period;
- a stall limit (``run.stall_timeout_s``): no output and no CPU work for that long ends the notebook as hung,
  while a slow or busy machine, still working, goes on; a wall-clock cap (``run.notebook_timeout_s``) only if set;
- success means papermill exited 0 *and* the phase wrote a complete manifest during this execution;
- on failure the executed notebook is read to name the failing cell and its error.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from arabic_r1.code_digest import NOTEBOOKS_DIR
from arabic_r1.hosted import PIPELINE_ENV
from arabic_r1.jsonl import write_json_atomic
from arabic_r1.manifest import check_fresh, read_manifest
from arabic_r1.params import Params
from arabic_r1.phases import PHASES, Phase, find_phase, select_phases
from arabic_r1.run_owner import RUN_ENV, RunLock, end_run_processes, new_token, owned_command

log = logging.getLogger(__name__)

KERNEL_GONE_GRACE_S = 15.0
POLL_S = 0.5


class PhaseFailed(RuntimeError):
    """A notebook failed; the message names the phase, the notebook, the cell and the error."""


@dataclass
class PhaseResult:
    phase: str
    action: str  # "ran" | "skipped" | "missing"
    reason: str
    seconds: float = 0.0
    executed_notebook: str | None = None
    peak_rss_mb: float | None = None  # runner + papermill + kernel (+ its children), sampled every POLL_S


RECORD_FILE = "reproduce.json"


@dataclass
class RunSummary:
    run_dir: Path
    results: list[PhaseResult] = field(default_factory=list)

    started_at: str = ""
    wall_s: float = 0.0
    n_phases: int = 0  # in the pipeline, selected or not: "cold" means every one of them ran

    def table(self) -> str:
        rows = [f"{r.phase:<24} {r.action:<8} {r.seconds:7.1f}s  {r.reason}" for r in self.results]
        peak = max((r.peak_rss_mb or 0 for r in self.results), default=0)
        total = f"total {self.wall_s:.1f}s wall, peak memory {peak:.0f} MB (runner + notebook processes)"
        return "\n".join([f"run folder: {self.run_dir}", *rows, total])

    def record(self) -> dict:
        """What ``reproduce.json`` holds: the measured budget of this invocation."""
        ran = [r for r in self.results if r.action == "ran"]
        return {
            "started_at": self.started_at,
            "wall_s": round(self.wall_s, 1),
            "peak_rss_mb": round(max((r.peak_rss_mb or 0 for r in self.results), default=0), 1),
            "cold": len(ran) == self.n_phases > 0,
            "n_phases": self.n_phases,
            "phases": [r.__dict__ for r in self.results],
        }


def available_phases(notebooks_dir: Path = NOTEBOOKS_DIR, phases: Sequence[Phase] = PHASES) -> list[Phase]:
    """Phases whose notebook exists (later issues add notebooks; the runner runs whichever exist)."""
    return [p for p in phases if (notebooks_dir / p.notebook).is_file()]


def reproduce(
    params: Params,
    *,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    phases: Sequence[Phase] = PHASES,
    force: bool = False,
    only: Sequence[str] = (),
    start_from: str | None = None,
    run_dir: Path | None = None,
) -> RunSummary:
    """Run every selected phase in order; ``start_from`` forces that phase and all later ones."""
    phases = tuple(phases)
    run_dir = (run_dir or params.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not available_phases(notebooks_dir, phases):
        raise PhaseFailed(
            f"no phase notebooks found in {notebooks_dir} (expected names like {phases[0].notebook})"
        )
    selected = select_phases(phases, only, start_from)
    with RunLock(run_dir, new_token()) as lock:
        summary = _run_phases(
            params, selected, phases, notebooks_dir, run_dir, force or start_from is not None, lock
        )
    if any(r.action == "ran" and r.phase == "06_paper_report" for r in summary.results):
        from arabic_r1.report import report_dir, stamp_budget

        stamp_budget(report_dir(params) / "report.md", summary.record())
    return summary


def _run_phases(
    params: Params,
    selected: Sequence[Phase],
    phases: tuple[Phase, ...],
    notebooks_dir: Path,
    run_dir: Path,
    forced: bool,
    lock: RunLock,
) -> RunSummary:
    summary = RunSummary(run_dir, started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), n_phases=len(phases))
    began = time.monotonic()
    for phase in selected:
        nb = notebooks_dir / phase.notebook
        if not nb.is_file():
            summary.results.append(PhaseResult(phase.slug, "missing", f"no notebook {nb.name} yet"))
            continue
        fresh, reason = check_fresh(phase, params, run_dir, phases)
        if fresh and not forced:
            log.info("phase %s: skipped, %s", phase.slug, reason)
            summary.results.append(PhaseResult(phase.slug, "skipped", reason))
            continue
        why = "forced" if forced else reason
        log.info("phase %s: running (%s)", phase.slug, why)
        t0 = time.monotonic()
        out_nb, peak = execute_notebook(nb, params, run_dir, phase, lock)
        seconds = time.monotonic() - t0
        log.info("phase %s: done in %.1fs (peak memory %.0f MB)", phase.slug, seconds, peak)
        summary.results.append(PhaseResult(phase.slug, "ran", why, seconds, str(out_nb), peak))
    summary.wall_s = time.monotonic() - began
    write_json_atomic(run_dir / RECORD_FILE, summary.record(), indent=1)
    return summary


def run_phase(params: Params, phase_key: str, **kwargs) -> RunSummary:
    """``arabic-r1 run PHASE``: one phase, always executed (its inputs must already exist)."""
    phases = tuple(kwargs.pop("phases", PHASES))
    phase = find_phase(phase_key, phases)
    return reproduce(params, phases=phases, only=[phase.slug], force=True, **kwargs)


# ----------------------------------------------------------------------------------------- execution
def papermill_parameters(params: Params, run_dir: Path) -> dict:
    """What the runner injects into every notebook's ``parameters`` cell."""
    return {
        "params_path": str(params.source_file) if params.source_file else None,
        "overrides": list(params.overrides),
        "run_dir": str(run_dir),
    }


def execute_notebook(
    nb: Path, params: Params, run_dir: Path, phase: Phase, lock: RunLock
) -> tuple[Path, float]:
    """Execute one notebook under the guards above: (executed notebook, peak memory in MB), or raise PhaseFailed."""
    import importlib.util

    if importlib.util.find_spec("papermill") is None or importlib.util.find_spec("ipykernel") is None:
        raise PhaseFailed(
            "the runner executes the notebooks with papermill and an ipykernel kernel, which are the `lab` extra: "
            "pip install -e '.[lab]' (make install has it)"
        )
    if params.source_file is None:
        raise PhaseFailed("the runner needs params loaded from a file (notebooks re-load them by path)")
    out_dir = run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_nb = out_dir / nb.name
    timeout, stall = params.run.notebook_timeout_s, params.run.stall_timeout_s
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8") as f:
        yaml.safe_dump(papermill_parameters(params, run_dir), f, allow_unicode=True)
        injected = f.name
    cmd = [
        sys.executable,
        "-m",
        "papermill",
        str(nb),
        str(out_nb),
        "-f",
        injected,
        "--cwd",
        str(nb.parent),
        "-k",
        "python3",
        "--start-timeout",
        str(params.run.kernel_startup_timeout_s),
    ]
    if timeout is not None:
        cmd += ["--execution-timeout", str(timeout)]
    if not sys.stderr.isatty():
        cmd.append(
            "--no-progress-bar"
        )  # a tqdm bar per cell floods CI logs and papermill-in-papermill output
    launched = time.time()
    stderr_path = out_dir / f"{nb.stem}.stderr.log"
    try:
        with stderr_path.open("w", encoding="utf-8") as err:
            wall = None if timeout is None else timeout + params.run.kernel_startup_timeout_s + 60
            outcome, peak = _watch(cmd, err, wall_limit=wall, stall_s=stall, lock=lock, outputs=(out_nb,))
    finally:
        os.unlink(injected)
    fold_injected_parameters(out_nb)
    stderr_tail = _tail(stderr_path)
    if outcome == "stalled":
        raise PhaseFailed(
            f"phase {phase.slug}: {nb.name} wrote no output and did no CPU work for run.stall_timeout_s={stall}s "
            f"and was stopped as hung{_cell_hint(out_nb)}; if it was waiting on something slow, raise the limit "
            f"with -o run.stall_timeout_s=... Executed notebook: {out_nb}"
        )
    if outcome == "timeout":
        raise PhaseFailed(
            f"phase {phase.slug}: {nb.name} ran past run.notebook_timeout_s={timeout}s and was stopped"
            f"{_cell_hint(out_nb)}; raise the limit with -o run.notebook_timeout_s=... Executed notebook: {out_nb}"
        )
    if outcome == "kernel_died" or "DeadKernelError" in stderr_tail or "Kernel died" in stderr_tail:
        raise PhaseFailed(
            f"phase {phase.slug}: the Jupyter kernel running {nb.name} died{_cell_hint(out_nb)} - most often the "
            f"out-of-memory killer (see `dmesg`); reduce batch size / sequence length or use a larger machine. "
            f"Executed notebook: {out_nb}"
        )
    if outcome != 0:
        failing = failing_cell(out_nb)
        if failing:
            idx, source, error = failing
            raise PhaseFailed(
                f"phase {phase.slug}: {nb.name} failed in code cell {idx} ({source}): {error}. Executed notebook: {out_nb}"
            )
        raise PhaseFailed(
            f"phase {phase.slug}: papermill exited with code {outcome} running {nb.name}:\n{stderr_tail}"
        )
    manifest = read_manifest(run_dir, phase)
    if not manifest or manifest.get("status") != "complete" or _started_before(manifest, launched):
        raise PhaseFailed(
            f"phase {phase.slug}: {nb.name} finished without recording a complete manifest in {run_dir / phase.slug} "
            f"(papermill may have trimmed execution after an IOPub timeout, or the notebook does not call "
            f"PhaseRun.finish). Executed notebook: {out_nb}"
        )
    return out_nb, peak


def fold_injected_parameters(out_nb: Path) -> None:
    """Collapse papermill's injected-parameters cell in the executed notebook (JupyterLab's ``source_hidden``), as
    the hosted-setup cell is: a reader opens it on Table 1, not on this machine's absolute paths; one click shows
    them, and they stay absolute so the executed copy re-runs from its own folder."""
    if not out_nb.is_file():
        return
    try:
        nb = json.loads(out_nb.read_text(encoding="utf-8"))
    except json.JSONDecodeError:  # papermill died mid-write: the failure is reported from stderr
        return
    for cell in nb.get("cells", []):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            cell["metadata"].setdefault("jupyter", {})["source_hidden"] = True
    out_nb.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _watch(
    cmd: list[str],
    err,
    wall_limit: float | None,
    stall_s: float | None = None,
    lock: RunLock | None = None,
    outputs: Sequence[Path] = (),
) -> tuple[int | str, float]:
    """Run papermill under the run's watchdog: (exit code, or "timeout" / "stalled" / "kernel_died" after ending
    the run's processes; peak memory MB).

    A stall is ``stall_s`` seconds in which neither the log ``err`` nor any of ``outputs`` (papermill saves the
    executed notebook as cells print) changed and the processes used less than STALL_CPU_S of CPU: a hang, not a
    slow machine, whose work still shows as CPU time. Peak memory = resident set of this runner + papermill + the
    kernel and its children, sampled every POLL_S."""
    import psutil

    token = lock.token if lock else new_token()
    # PIPELINE_ENV: the notebooks' hosted-setup cell knows the runner's params are final
    env = {**os.environ, PIPELINE_ENV: "1", RUN_ENV: token}
    proc = subprocess.Popen(
        owned_command(cmd, token),
        stdout=err,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
        pass_fds=(lock.fd,) if lock and lock.fd is not None else (),
    )
    start = time.monotonic()
    kernels: set[int] = set()
    gone_since: float | None = None
    peak = 0.0
    watched = [Path(err.name), *outputs]
    activity = Activity(start, _mtimes(watched))
    try:
        while True:
            rc = proc.poll()
            if rc is not None:
                return rc, peak
            now = time.monotonic()
            if wall_limit is not None and now - start > wall_limit:
                _end(proc, token)
                return "timeout", peak
            try:
                tree = [psutil.Process(os.getpid()), psutil.Process(proc.pid)]
                children = tree[1].children(recursive=True)
            except psutil.NoSuchProcess:
                tree, children = [], []
            peak = max(peak, sum(_rss(p) for p in tree + children) / 2**20)
            activity.update(now, _mtimes(watched), {p.pid: _cpu_s(p) for p in tree[1:] + children})
            if stall_s is not None and now - activity.last > stall_s:
                _end(proc, token)
                return "stalled", peak
            live = {c.pid for c in children if is_kernel(c)}
            kernels |= live
            if kernels and not live:
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since > KERNEL_GONE_GRACE_S:
                    _end(proc, token)
                    return "kernel_died", peak
            else:
                gone_since = None
            time.sleep(POLL_S)
    except BaseException:
        _end(proc, token)
        raise


STALL_CPU_S = 2.0  # CPU seconds that count as work since the last sign of activity


@dataclass
class Activity:
    """When the watched run last showed a sign of life: a file it writes changed, or STALL_CPU_S of CPU work."""

    last: float
    mtimes: tuple[float, ...]
    cpu: dict[int, float] = field(
        default_factory=dict
    )  # per process, kept after it exits: the sum only grows
    cpu_mark: float = 0.0

    def update(self, now: float, mtimes: tuple[float, ...], cpu_by_pid: dict[int, float]) -> None:
        for pid, t in cpu_by_pid.items():
            self.cpu[pid] = max(t, self.cpu.get(pid, 0.0))
        total = sum(self.cpu.values())
        if mtimes != self.mtimes or total - self.cpu_mark >= STALL_CPU_S:
            self.last, self.mtimes, self.cpu_mark = now, mtimes, total


def _mtimes(paths: Sequence[Path]) -> tuple[float, ...]:
    out = []
    for p in paths:
        try:
            out.append(p.stat().st_mtime)
        except OSError:
            out.append(0.0)
    return tuple(out)


def _cpu_s(p) -> float:
    """CPU seconds of one process and its reaped children (user + system)."""
    try:
        t = p.cpu_times()
        return t.user + t.system + t.children_user + t.children_system
    except Exception:  # the process vanished between listing and inspection
        return 0.0


def _rss(p) -> int:
    try:
        return p.memory_info().rss
    except Exception:  # the process vanished between listing and inspection
        return 0


def is_kernel(p) -> bool:
    """A Jupyter kernel: ``python -m ipykernel_launcher ...`` (an argument, not text inside one)."""
    try:
        return any(
            part == "ipykernel_launcher" or part.endswith("ipykernel_launcher.py") for part in p.cmdline()
        )
    except Exception:  # the process vanished between listing and inspection
        return False


def _end(proc: subprocess.Popen, token: str) -> None:
    """End the watchdog, papermill, the kernel and everything they started."""
    end_run_processes(token)
    proc.wait()


def _started_before(manifest: dict, launched: float) -> bool:
    from datetime import datetime

    try:
        started = datetime.fromisoformat(manifest["started_at"]).timestamp()
    except (KeyError, ValueError):
        return True
    return started < launched - 1  # manifest timestamps have 1 s resolution


def _code_cells(out_nb: Path):
    """(n, cell) for the notebook's own code cells, numbered from 1 as in the source notebook."""
    try:
        nb = json.loads(out_nb.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return
    n = 0
    for cell in nb.get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if (
            cell.get("cell_type") != "code"
            or "injected-parameters" in tags
            or "papermill-error-cell-tag" in tags
        ):
            continue
        n += 1
        yield n, cell


def _first_line(cell: dict) -> str:
    lines = "".join(cell.get("source", "")).strip().splitlines()
    return "`" + next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")[:80] + "`"


def failing_cell(out_nb: Path) -> tuple[int, str, str] | None:
    """(code cell number, first source line, 'Error: message') of the first cell with an error output."""
    for n, cell in _code_cells(out_nb):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return n, _first_line(cell), f"{out.get('ename')}: {out.get('evalue')}"
    return None


def _cell_hint(out_nb: Path) -> str:
    """' in code cell N (`source`)' for the cell that started but never got a reply (the one that was running)."""
    for n, cell in _code_cells(out_nb):
        meta = cell.get("metadata", {})
        execution = meta.get("execution", {})
        started = "iopub.execute_input" in execution and "shell.execute_reply" not in execution
        if started or meta.get("papermill", {}).get("status") == "running":
            return f" in code cell {n} ({_first_line(cell)})"
    return ""


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
