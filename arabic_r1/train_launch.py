"""Phase 04 as several processes: the ranks of one training (``WORLD_SIZE``, rank 0's decisions shared with
the others) and the launch of ``python -m arabic_r1.train`` through torchrun or accelerate, watched like a notebook:
the launcher owns its ranks, and a failing rank's root cause is what the error says."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arabic_r1.errors import ExplainedError
from arabic_r1.params import CONFIGS_DIR, LAUNCHER_CONFIGS, Params
from arabic_r1.run_owner import RUN_ENV, new_token, owned_command

log = logging.getLogger(__name__)


class TrainSetupError(ExplainedError, ValueError):
    """Bad input found before training starts (data, template, targets, hardware options, world size)."""


class LaunchFailed(RuntimeError):
    """A launched rank exited non-zero (the message names it), or the launcher itself failed."""


# --------------------------------------------------------------------------------------------- ranks
DIST_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a launch, from what torchrun / accelerate set (RANK, LOCAL_RANK, WORLD_SIZE)."""

    rank: int = 0
    local: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Ranks:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def resolve_precision(params: Params) -> str:
    """The precision every rank trains in (and accelerate launches with): train.precision, or what the GPU supports."""
    import torch

    p = params.train.precision
    cuda = torch.cuda.is_available()
    if p == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else ("fp16" if cuda else "fp32")
    if p in ("bf16", "fp16") and not cuda:
        log.warning("train.precision=%s on a CPU: training in fp32 instead", p)
        return "fp32"
    return p


def check_world_size(params: Params, ranks: Ranks) -> None:
    """The launch started the processes the params ask for: a silent 1-process launch (``accelerate launch --cpu``,
    a MULTI_CPU config) would otherwise train with a global batch ``train.processes`` times too small."""
    t = params.train
    if ranks.world != t.processes:
        raise TrainSetupError(
            f"train.launcher={t.launcher} asks for {t.processes} processes (train.num_gpus={t.num_gpus} x "
            f"train.num_machines={t.num_machines}) but this one is one of WORLD_SIZE={ranks.world}: "
            + (
                "start it through the phase (arabic-r1 run 04 / notebook 04), which launches them"
                if ranks.world == 1
                else "launch it with the command of arabic_r1.train_launch.launch_command"
            )
        )


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (a no-op alone): the others wait here while rank 0 writes what they will read."""
    if _distributed():
        import torch.distributed as dist

        dist.barrier()


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (also a barrier): one decision, e.g. which checkpoint to resume."""
    if not _distributed():
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


# ------------------------------------------------------------------------------------------- launch
def launch_command(params: Params, run_dir: Path) -> list[str]:
    """The ranks of ``python -m arabic_r1.train`` the params ask for: torchrun (DDP; ``--standalone`` on one
    machine, a c10d rendezvous at ``$MASTER_ADDR:$MASTER_PORT`` across several) or ``accelerate launch`` with the
    repo's DeepSpeed ZeRO-3 / FSDP config. Both through this interpreter (``-m``), so no PATH is assumed."""
    t = params.train
    if t.launcher == "single":
        raise ValueError("train.launcher is 'single': train in-process, no launch needed")
    if params.source_file is None:
        raise ValueError("a multi-process launch needs params loaded from a file")
    if t.launcher == "torchrun":
        nodes = (
            ["--standalone"]
            if t.num_machines == 1
            else [
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                "$MASTER_ADDR:$MASTER_PORT",
                "--rdzv-id",
                run_dir.name,
            ]
        )
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            *nodes,
            "--nnodes",
            str(t.num_machines),
            "--nproc-per-node",
            str(t.num_gpus),
        ]
    else:
        # the precision the Trainer uses, so the engine's agrees (DeepSpeed refuses "ds bf16.enabled=True vs hf bf16=False")
        mixed = {"bf16": "bf16", "fp16": "fp16"}.get(resolve_precision(params), "no")
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(CONFIGS_DIR / LAUNCHER_CONFIGS[t.launcher]),
            "--num_processes",
            str(t.processes),
            "--num_machines",
            str(t.num_machines),
            "--mixed_precision",
            mixed,
        ]
    cmd += ["-m", "arabic_r1.train", "--params", str(params.source_file), "--run-dir", str(run_dir)]
    for item in params.overrides:
        cmd += ["-o", item]
    return cmd


def launch(params: Params, run_dir: Path) -> None:
    """Run :func:`launch_command` here, its output streamed to this process's stdout (the notebook's cell).

    The launch is a sub-run owned by this process (:mod:`arabic_r1.run_owner`): its own token and watchdog, so the
    ranks end when this process ends, however it ends (the runner ending the kernel included), or when it is
    interrupted. A rank that exits non-zero makes torchrun stop the others; the error names that rank."""
    t = params.train
    cmd = launch_command(params, run_dir)
    if t.num_machines > 1:
        raise LaunchFailed(
            f"train.num_machines={t.num_machines}: this process starts the ranks of its own machine only; run on "
            f"every machine (e.g. srun, with MASTER_ADDR / MASTER_PORT set): {' '.join(cmd)}"
        )
    token = new_token()
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}  # a launch from a rank: a new world
    env |= {RUN_ENV: token, "PYTHONUNBUFFERED": "1"}
    log.info("launching %d ranks: %s", t.processes, " ".join(cmd))
    proc = subprocess.Popen(
        owned_command(cmd, token),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,
    )
    tail: deque[str] = deque(maxlen=300)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            sys.stdout.write(line)
            tail.append(line)
        rc = proc.wait()
    except BaseException:  # an interrupt: the watchdog ends every process of the launch
        proc.terminate()
        proc.wait()
        raise
    sys.stdout.flush()
    if rc != 0:
        raise LaunchFailed(failure_message("".join(tail), rc, t.processes))


# one failed rank in torchrun's failure summary: rank, local rank, exit code, the rest of its block
FAILED_RANK = re.compile(
    r"rank\s*:\s*(\d+)\s*\(local_rank:\s*(\d+)\)\s*exitcode\s*:\s*(-?\d+)(.*?)(?=^\s*\[\d+\]:|^[-=]{8}|\Z)",
    re.S | re.M,
)


def failure_message(output: str, rc: int, world: int) -> str:
    """Which rank failed, how, and its traceback, from the failure summary torchrun prints (accelerate launches
    through it too); the lines of the launch otherwise.

    torchrun's "Root Cause" is the failure with the earliest time, and a rank killed from outside (the OOM killer's
    SIGKILL) has no error file, so its time is when torchrun noticed: on a busy machine a surviving rank's "connection
    reset by peer" can come first. torchrun stops survivors with SIGTERM, so a rank ended by any other signal is the
    cause; otherwise the Root Cause is."""
    failures = list(FAILED_RANK.finditer(output))
    if not failures:
        last = "".join(output.splitlines(keepends=True)[-20:])
        return f"phase 04: the launch exited with code {rc} without naming a failed rank; its last output:\n{last}"
    root_at = output.find("Root Cause")
    killed = [m for m in failures if int(m.group(3)) < 0 and -int(m.group(3)) != signal.SIGTERM]
    root = [m for m in failures if 0 <= root_at < m.start()]
    m = (killed or root or failures)[0]
    rank, local, code = int(m.group(1)), int(m.group(2)), int(m.group(3))
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    cause = re.search(r"traceback\s*:\s*(.*)", m.group(4), re.S)
    return (
        f"phase 04: rank {rank} of {world} (local rank {local}) {how}; torchrun stopped the other ranks, and "
        f"running the phase again resumes from its last complete checkpoint, if it has one. "
        f"{cause.group(1).strip()[-2000:] if cause else ''}"
    ).rstrip()
