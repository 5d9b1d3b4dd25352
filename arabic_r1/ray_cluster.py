"""The Ray cluster phase 01 runs on when ``data.executor: ray``: started for the run, or joined.

datatrove's ``RayPipelineExecutor`` expects ``ray.init()`` to have been called; this module owns that call.
``data.ray.address`` null starts a local cluster (``data.ray.num_cpus`` CPUs, default ``data.workers``) that is
shut down when the stages end, even on error; ``auto`` joins the cluster of this machine (``ray start --head``),
``ray://host:10001`` a remote one through Ray Client; a joined cluster is left running.

Ray workers start the processes of datatrove's task pool by *spawning* (``spawn_task_processes``): forked from a
Ray worker's threads they can deadlock. Two things keep a run's files its own:
- each Ray worker gets ``TMPDIR`` inside the run folder: datatrove's Ray executor writes every task's log to
  ``$TMPDIR/ray_logs/logs/task_<rank>.log`` before copying it to the stage's log folder, so two runs on one
  machine would otherwise write the same files;
- worker output does not go to the driver's terminal (``log_to_driver=False``): datatrove copies each task's log
  into ``<stage>/logs/``, and ``collect_task_logs`` appends them to the phase's ``datatrove.log``, the same file
  the local executor writes.

A local cluster's processes (GCS, raylet, workers) inherit the run's environment, so the runner's watchdog ends
them with the run if the kernel is killed before ``ray.shutdown()``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path

from arabic_r1.params import DataParams

log = logging.getLogger(__name__)


class RayUnavailable(RuntimeError):
    """ray is not installed, or the cluster named in params cannot be reached."""


@contextlib.contextmanager
def ray_cluster(data: DataParams, work: Path) -> Iterator[None]:
    """Connect to (or start) the cluster for the stages inside the block; stop it after if it was started here."""
    if importlib.util.find_spec("ray") is None:
        raise RayUnavailable(
            "data.executor=ray needs ray on this machine and on the cluster: pip install -e '.[ray]'"
        )
    import ray

    if ray.is_initialized():  # a notebook that already connected: use that cluster, leave it alone
        yield
        return
    r = data.ray
    tmp = work / "ray_tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    kwargs: dict = {
        "log_to_driver": False,
        "include_dashboard": False,
        "runtime_env": {
            "env_vars": {"TMPDIR": str(tmp)},
            "worker_process_setup_hook": "arabic_r1.ray_cluster.spawn_task_processes",
        },
    }
    if r.address is None:
        kwargs |= {"num_cpus": r.num_cpus or data.workers, "object_store_memory": r.object_store_mb * 2**20}
    try:
        ray.init(address=r.address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayUnavailable(f"data.ray.address={r.address!r}: cannot connect to a Ray cluster ({e})") from e
    log.info(
        "Ray cluster %s (%s CPUs)",
        "started for this run" if r.address is None else f"at {r.address}",
        int(ray.cluster_resources().get("CPU", 0)),
    )
    try:
        yield
    finally:
        ray.shutdown()  # a started cluster stops with it; a joined one only loses this driver


def spawn_task_processes() -> None:
    """Run in every Ray worker at start-up: datatrove's Ray actor runs its tasks in a ``multiprocess`` pool, and
    a child *forked* from a Ray worker (gRPC and logging threads running) can deadlock on a lock one of those
    threads held at the fork - seen here as a stage whose tasks had all completed while the actor never returned.
    Spawned children start clean."""
    import multiprocess

    multiprocess.set_start_method("spawn", force=True)


def collect_task_logs(stage_dirs: list[Path], log_file: Path) -> int:
    """Append every task log the stages wrote (``<stage>/logs/task_*.log``) to ``log_file``; returns how many."""
    count = 0
    with log_file.open("a", encoding="utf-8") as out:
        for stage in stage_dirs:
            for f in sorted((stage / "logs").glob("task_*.log")):
                out.write(f"===== {stage.name}/{f.name}\n{f.read_text(encoding='utf-8', errors='replace')}")
                count += 1
    return count
