"""Colab and Kaggle: detect the runtime, install the package, pick a profile from the GPU, keep runs on storage
that outlives the session.

Every notebook has a setup cell right after its parameters cell. On a laptop, a workstation or under papermill it
does nothing. On Colab or Kaggle it clones ``repo_url`` (notebooks opened from GitHub arrive alone), installs it
without touching the runtime's own packages (:mod:`arabic_r1.hosted_install`), then calls :func:`setup`, which
returns the params file and overrides the rest of the notebook uses: the profile chosen for the GPU it finds, and
``run.root`` on Google Drive or Kaggle's working folder, so a disconnected session re-opened later finds every
finished phase (and phase 04's last checkpoint) in place.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from arabic_r1.errors import ExplainedError

log = logging.getLogger(__name__)

REPO_URL = (
    "https://github.com/arabic-r1/arabic_r1"  # the project's canonical repository: the default of repo_url
)
PIPELINE_ENV = "ARABIC_R1_PIPELINE"  # set by `arabic-r1 reproduce` for its notebooks: their params are final
# The setup cell of every notebook (tests check each notebook carries it verbatim). It runs before the package is
# installed: it clones `repo_url` (a parameters-cell knob, so a fork's notebook takes one edit) and imports the
# stdlib-only installer from the clone (arabic_r1/hosted_install.py).
SETUP_CELL = """\
#@title Colab / Kaggle setup (elsewhere this cell does nothing)
# On Colab or Kaggle: clones `repo_url` and installs the package without replacing the runtime's own torch, numpy or
# Jupyter stack (if something already imported had to be replaced, the runtime restarts: run this cell again), picks
# the profile from the GPU (the `profile` parameter) and keeps runs on Google Drive / Kaggle's working folder.
import os, subprocess, sys  # noqa: E401,E402

if ("COLAB_RELEASE_TAG" in os.environ or "KAGGLE_KERNEL_RUN_TYPE" in os.environ) and "ARABIC_R1_PIPELINE" not in os.environ:
    if not os.path.isdir("arabic_r1_repo"):
        subprocess.run(["git", "clone", "--depth", "1", repo_url, "arabic_r1_repo"], check=True)
    sys.path.insert(0, os.path.abspath("arabic_r1_repo"))
    from arabic_r1.hosted_install import ensure_installed, restart_runtime

    installed = ensure_installed("arabic_r1_repo")
    if installed.replaced:
        restart_runtime(installed.replaced)
    from arabic_r1.hosted import setup

    hosted = setup(params_path, overrides, profile)
    params_path, overrides = hosted.params_path, hosted.overrides
    print(hosted.describe())"""
# the setup cell's metadata: input collapsed in JupyterLab (source_hidden) and shown as a titled form in Colab
SETUP_CELL_METADATA = {"tags": ["hosted-setup"], "jupyter": {"source_hidden": True}, "cellView": "form"}
PROFILE_PARAMETER = (
    'profile = "auto"  # Colab/Kaggle only: auto (from the GPU) | smoke | colab_t4 | single_gpu'
)
REPO_PARAMETER = (
    f'repo_url = "{REPO_URL}"  # Colab/Kaggle only: the repository the setup cell installs (a fork: its URL)'
)

Runtime = Literal["colab", "kaggle", "local"]
# where each hosted runtime keeps files across sessions
STORAGE = {"colab": Path("/content/drive/MyDrive/arabic_r1"), "kaggle": Path("/kaggle/working/arabic_r1")}
# smallest GPU memory (GiB) each GPU profile is planned for (arabic-r1 plan); the first that fits is chosen
GPU_PROFILES = (("single_gpu", 70.0), ("colab_t4", 14.5))


class HostedSetupError(ExplainedError, RuntimeError):
    """The runtime cannot run what was asked (e.g. a GPU profile on a CPU runtime)."""


def detect_runtime(environ: Mapping[str, str] | None = None, modules: Sequence[str] | None = None) -> Runtime:
    """Colab sets COLAB_RELEASE_TAG (and has google.colab); Kaggle sets KAGGLE_KERNEL_RUN_TYPE."""
    env = os.environ if environ is None else environ
    mods = sys.modules if modules is None else modules
    if PIPELINE_ENV in env:
        return "local"
    if "COLAB_RELEASE_TAG" in env or "COLAB_GPU" in env or "google.colab" in mods:
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in env or "KAGGLE_URL_BASE" in env:
        return "kaggle"
    return "local"


def gpu_memory_gib() -> float | None:
    """Memory of GPU 0, or None on a CPU runtime."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**30


def choose_profile(requested: str, gpu_gib: float | None) -> str:
    """``auto``: the largest GPU profile this GPU holds, smoke on a CPU runtime; a named GPU profile on a CPU
    runtime is refused with what to change."""
    from arabic_r1.params_loading import load_params

    if requested == "auto":
        if gpu_gib is None:
            log.warning(
                "no GPU in this runtime: running the CPU smoke profile (Runtime > Change runtime type > GPU)"
            )
            return "smoke"
        for name, need in GPU_PROFILES:
            if gpu_gib >= need:
                return name
        raise HostedSetupError(
            f"this GPU has {gpu_gib:.1f} GiB; the smallest GPU profile (colab_t4) is planned for "
            f"{GPU_PROFILES[-1][1]} GiB. Choose a T4 or larger, or profile='smoke'"
        )
    params = load_params(requested, check_paths=False)
    if params.run.device == "cuda" and gpu_gib is None:
        raise HostedSetupError(
            f"profile {requested!r} needs a GPU (run.device: cuda) but this runtime has none: Colab: Runtime > "
            "Change runtime type > T4 GPU; Kaggle: Settings > Accelerator > GPU T4. Or use profile='smoke'"
        )
    return requested


@dataclass
class Hosted:
    runtime: Runtime
    params_path: str
    overrides: list[str] = field(default_factory=list)
    storage: Path | None = None

    def describe(self) -> str:
        where = f"runs on {self.storage}" if self.storage else "runs in the repository's runs/"
        return f"{self.runtime}: params {self.params_path} {' '.join(map(shlex.quote, self.overrides))} ({where})"


def mount_storage(runtime: Runtime) -> Path | None:
    """Google Drive on Colab (asks for permission once per session); Kaggle's working folder (kept with a saved
    version: add that output as an input of the next session to resume)."""
    if runtime == "local":
        return None
    if runtime == "colab":
        from google.colab import drive  # type: ignore[import-not-found]

        drive.mount("/content/drive")
    root = STORAGE[runtime]
    root.mkdir(parents=True, exist_ok=True)
    return root


def setup(
    params_path: str,
    overrides: Sequence[str] = (),
    profile: str = "auto",
    runtime: Runtime | None = None,
    gpu_gib: float | None | Literal["detect"] = "detect",
    storage: Path | None | Literal["mount"] = "mount",
) -> Hosted:
    """What the notebook should run with. Locally: exactly the parameters cell's values."""
    runtime = runtime or detect_runtime()
    if runtime == "local":
        return Hosted("local", params_path, list(overrides))
    name = choose_profile(profile, gpu_memory_gib() if gpu_gib == "detect" else gpu_gib)
    root = mount_storage(runtime) if storage == "mount" else storage
    extra = storage_overrides(name, root) if root else []
    hosted = Hosted(runtime, name, [*overrides, *extra], root)
    log.info("hosted setup: %s", hosted.describe())
    return hosted


def storage_overrides(profile: str, root: Path) -> list[str]:
    """run.root and every cache the profile keeps under the repository's runs/ (teacher and judge responses cost
    money) moved onto persistent storage."""
    from arabic_r1.params import REPO_DIR
    from arabic_r1.params_loading import load_params

    params = load_params(profile, check_paths=False)
    out = [f"run.root={root / 'runs'}", f"report.dir={root / 'reports'}"]
    repo_runs = REPO_DIR / "runs"
    caches = {
        "distill.cache_dir": params.distill.cache_dir,
        "verify.morphology_cache": params.verify.morphology_cache,
    }
    for section in ("verify", "eval"):
        judge = getattr(params, section).judge
        if judge is not None:
            caches[f"{section}.judge.cache_dir"] = judge.cache_dir
    for key, path in caches.items():
        if path is not None and Path(path).is_relative_to(repo_runs):
            out.append(f"{key}={root / 'runs' / Path(path).relative_to(repo_runs)}")
    return out
