"""What keeps the numbered notebooks thin: one call sets a phase up.

Every notebook starts with a ``parameters`` cell (``params_path``, ``overrides``, ``run_dir``) that papermill
overrides, then calls :func:`open_phase`.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from arabic_r1.manifest import PhaseRun, start_phase
from arabic_r1.params import Params
from arabic_r1.params_loading import apply_overrides, load_params, profile_path, read_yaml
from arabic_r1.progress import configure_output

log = logging.getLogger(__name__)


def auto_threads(sample_s: float = 0.5, busy_percent: float = 60.0) -> int:
    """The cores this process may use (its CPU affinity) that no other work keeps busy right now, at least 1: torch
    threads sharing a core with a busy neighbour wait on each other at every parallel region (phase 00 of the smoke
    run: 64 s quiet, 782 s with two threads beside one busy process). ``OMP_NUM_THREADS``, when set, caps it, as it
    caps torch's own default."""
    import psutil

    cores = (
        sorted(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else list(range(os.cpu_count() or 1))
    )
    load = psutil.cpu_percent(interval=sample_s, percpu=True)
    busy = [c for c in cores if c < len(load) and load[c] > busy_percent]
    free = max(1, len(cores) - len(busy))
    # a scheduler's cap (Slurm's --cpus-per-task sets it) or the user's own
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return min(free, int(omp)) if omp.isdigit() and int(omp) > 0 else free


def apply_runtime(params: Params) -> None:
    """Seed and thread settings from params (``run.torch_threads``; ``auto``: :func:`auto_threads`)."""
    random.seed(params.run.seed)
    try:
        import numpy as np

        np.random.seed(params.run.seed)
    except ImportError:
        pass
    import torch

    torch.manual_seed(params.run.seed)
    threads = params.run.torch_threads
    if threads == "auto":
        threads = auto_threads()
        log.info("torch threads: %d (run.torch_threads: auto)", threads)
    if threads:
        torch.set_num_threads(threads)


# the phases that can run through Unsloth, and the key that says whether they do
UNSLOTH_BACKEND_KEYS = {"moe_lora_sft": ("train", "backend"), "oall_evaluation": ("eval", "backend")}


def unsloth_first(phase: str, params_path: str | Path | None, overrides: Sequence[str] = ()) -> bool:
    """Import Unsloth before anything else when this phase runs through it: Unsloth patches transformers, TRL and
    PEFT as it is imported, and a process that imported them first runs the unpatched versions (slower, more
    memory). Setting up output and validating params (TRL's SFTConfig check) would import them, so the backend is
    read from the raw YAML; a file that does not read is left for :func:`load_params` to report."""
    table, key = UNSLOTH_BACKEND_KEYS.get(phase, (None, None))
    if table is None or "unsloth" in sys.modules:
        return "unsloth" in sys.modules
    try:
        raw = apply_overrides(read_yaml(profile_path(params_path).read_text(encoding="utf-8")), overrides)
        wanted = (raw.get(table) or {}).get(key) == "unsloth"
    except Exception:  # noqa: BLE001 - load_params says what is wrong with the file, with its key path
        return False
    if wanted:
        import unsloth  # noqa: F401
    return wanted


def open_phase(
    phase: str,
    params_path: str | Path | None,
    overrides: Sequence[str] = (),
    run_dir: str | Path | None = None,
) -> tuple[Params, PhaseRun]:
    """Load + validate params, set output (logging, warnings, bars)/seed/threads, and start the phase's manifest."""
    unsloth_first(phase, params_path, overrides)
    configure_output()
    params = load_params(params_path, overrides)
    apply_runtime(params)
    return params, start_phase(phase, params, run_dir)
