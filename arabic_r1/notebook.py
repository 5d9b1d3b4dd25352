"""Helpers that keep the numbered notebooks thin: one call to set a phase up, one to show a table.

Every notebook starts with a ``parameters`` cell (``params_path``, ``overrides``, ``run_dir``) that papermill
overrides, then calls :func:`open_phase`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arabic_r1.manifest import PhaseRun, start_phase
from arabic_r1.params import Params, load_params


def configure_logging(level: int = logging.INFO, rank: int | None = None) -> None:
    """One concise line per event: papermill keeps every line, so no per-step chatter. ``rank``: the lines of a
    launched training rank say which rank wrote them (the ranks share one output stream)."""
    where = "" if rank is None else f" rank{rank}"
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s{where} %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:  # per-map progress bars of datasets: hundreds of lines in an executed notebook
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


def apply_runtime(params: Params) -> None:
    """Seed and thread settings from params (1 torch thread is fastest for the tiny MoE on 2 cores)."""
    random.seed(params.run.seed)
    try:
        import numpy as np

        np.random.seed(params.run.seed)
    except ImportError:
        pass
    import torch

    torch.manual_seed(params.run.seed)
    if params.run.torch_threads:
        torch.set_num_threads(params.run.torch_threads)


def open_phase(
    phase: str,
    params_path: str | Path | None,
    overrides: Sequence[str] = (),
    run_dir: str | Path | None = None,
) -> tuple[Params, PhaseRun]:
    """Load + validate params, set logging/seed/threads, and start the phase's manifest."""
    configure_logging()
    params = load_params(params_path, overrides)
    apply_runtime(params)
    return params, start_phase(phase, params, run_dir)


def show_records(records: Sequence[dict[str, Any]] | Any) -> Any:
    """A DataFrame for display (Jupyter renders it; papermill stores it as HTML + text)."""
    import pandas as pd

    return pd.DataFrame(list(records))
