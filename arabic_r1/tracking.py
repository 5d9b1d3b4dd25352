"""Experiment tracking for phase 04 through transformers' own integrations: ``train.report_to`` becomes
``SFTConfig.report_to``, and the Trainer's TensorBoard / Weights & Biases callbacks do the logging.

Both callbacks read their destination from the environment when the Trainer is built (TensorBoard) or when training
starts (W&B), which is what their documentation says to set; phase 04 runs in a kernel or launch of its own, so the
settings below last exactly as long as the phase. What the run writes stays inside the run folder:

- TensorBoard: event files in ``<phase folder>/tensorboard`` (``TENSORBOARD_LOGGING_DIR``);
- W&B: ``WANDB_DIR`` is the phase folder and ``WANDB_MODE`` defaults to ``offline`` (nothing leaves the machine;
  ``wandb sync <phase folder>/wandb/offline-run-*`` uploads later). Export ``WANDB_MODE=online`` to log live;
  ``WANDB_PROJECT`` defaults to ``arabic_r1``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

from arabic_r1.errors import ExplainedError

TENSORBOARD_DIR = "tensorboard"


class TrackingError(ExplainedError, RuntimeError):
    """A tracker named in ``train.report_to`` cannot run here; the message says what to install."""


def check_trackers(report_to: Sequence[str]) -> None:
    """Fail before the model loads when a requested tracker's package is missing (the Trainer would fail later)."""
    for tracker in report_to:  # each tracker's package has the tracker's name
        if importlib.util.find_spec(tracker) is None:
            raise TrackingError(
                f"train.report_to has {tracker!r} but the {tracker} package is not installed: pip install {tracker} "
                f"(or pip install 'arabic-r1[tracking]'), or remove it from train.report_to"
            )


def tracking_env(report_to: Sequence[str], phase_dir: Path) -> dict[str, str]:
    """The environment the requested trackers read, pointing them into the phase folder."""
    env: dict[str, str] = {}
    if "tensorboard" in report_to:
        env["TENSORBOARD_LOGGING_DIR"] = str(Path(phase_dir) / TENSORBOARD_DIR)
    if "wandb" in report_to:
        env["WANDB_DIR"] = str(phase_dir)
        env["WANDB_MODE"] = os.environ.get("WANDB_MODE", "offline")
        env["WANDB_PROJECT"] = os.environ.get("WANDB_PROJECT", "arabic_r1")
    return env


def start_tracking(report_to: Sequence[str], phase_dir: Path) -> None:
    """Check the trackers and set their environment in this process (phase 04's kernel or rank); the W&B run is
    named after the arabic_r1 run (``SFTConfig.run_name``)."""
    check_trackers(report_to)
    os.environ.update(tracking_env(report_to, phase_dir))


def finish_tracking(report_to: Sequence[str]) -> None:
    """Close the W&B run the Trainer opened (transformers leaves it open), so its files are complete when the
    phase ends and its service process ends with the phase."""
    if "wandb" in report_to:
        import wandb

        wandb.teardown()  # finishes the open run and stops the wandb-core service this process started
