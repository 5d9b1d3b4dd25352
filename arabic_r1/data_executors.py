"""Where phase 01's datatrove stages run: locally (processes on this machine), on Slurm or on Ray, from params;
with datatrove's own logs kept in the phase folder rather than on the notebook's output.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from arabic_r1.params import DataParams
from arabic_r1.slurm import SlurmJobRecorder

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ executors
def make_executor(
    data: DataParams, pipeline: list, tasks: int, logging_dir: Path, depends=None, name: str = "stage"
):
    """The datatrove executor chosen in params (Slurm and Ray are imported only when chosen)."""
    common = dict(
        tasks=tasks,
        workers=min(data.workers, tasks),
        logging_dir=str(logging_dir),
        depends=depends,
        skip_completed=False,
    )
    if data.executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline, **common)
    if data.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = data.slurm
        sbatch_args = {**({"account": s.account} if s.account else {}), **s.sbatch_args}
        return SlurmPipelineExecutor(
            pipeline,
            **common,
            time=s.time,
            partition=s.partition,
            cpus_per_task=s.cpus_per_task,
            mem_per_cpu_gb=s.mem_per_cpu_gb,
            qos=s.qos or None,
            job_name=f"arabic_r1_{name}",
            env_command=s.env_command,
            venv_path=None if s.env_command else _venv_activate(),
            sbatch_args=sbatch_args,
            srun_args=s.srun_args or None,
            max_array_size=s.max_array_size,
            job_id_retriever=SlurmJobRecorder(),
        )
    from datatrove.executor import RayPipelineExecutor  # ray itself is imported when the stage runs

    return RayPipelineExecutor(
        pipeline,
        **common,
        cpus_per_task=data.ray.cpus_per_task,
        mem_per_cpu_gb=data.ray.mem_per_cpu_gb,
        tasks_per_job=data.ray.tasks_per_job,
    )


def _venv_activate() -> str | None:
    activate = Path(sys.prefix) / "bin" / "activate"
    return str(activate) if activate.is_file() else None


@contextlib.contextmanager
def datatrove_logs_to(path: Path):
    """datatrove logs every task to stderr at INFO; send that to a file so notebooks stay readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        saved = sys.stderr
        sys.stderr = f  # loguru binds the stream when each task adds its handler
        try:
            yield
        finally:
            sys.stderr = saved
            # datatrove's handlers still point at the file: leave only warnings, on stderr
            from loguru import logger

            logger.remove()
            logger.add(sys.stderr, level="WARNING")
