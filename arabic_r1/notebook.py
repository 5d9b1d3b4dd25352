"""What keeps the numbered notebooks thin: one call sets a phase up.

Every notebook starts with a ``parameters`` cell (``params_path``, ``overrides``, ``run_dir``) that papermill
overrides, then calls :func:`open_phase`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from arabic_r1.manifest import PhaseRun, start_phase
from arabic_r1.params import Params
from arabic_r1.params_loading import load_params
from arabic_r1.progress import configure_output


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
    """Load + validate params, set output (logging, warnings, bars)/seed/threads, and start the phase's manifest."""
    configure_output()
    params = load_params(params_path, overrides)
    apply_runtime(params)
    return params, start_phase(phase, params, run_dir)
