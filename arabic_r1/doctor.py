"""``arabic-r1 doctor``: can this machine run the chosen profile, and with which backends?

Each check is a small function returning a :class:`Check` (status ok / warn / fail, value, hint), so the
notebook shows a table and the CLI prints the same rows. Unsloth is probed in a subprocess: importing it
patches transformers, which the doctor's own process must not inherit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.version import Version

from arabic_r1.params import Params

UNSLOTH_PROBE_TIMEOUT_S = 180


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    value: str
    hint: str = ""


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_python(params: Params) -> Check:
    v = platform.python_version()
    ok = (3, 10) <= sys.version_info[:2] <= (3, 12)
    return Check(
        "python",
        "ok" if ok else "warn",
        f"{v} ({params.shown(sys.executable)})",
        "" if ok else "tested on 3.10-3.12",
    )


def check_torch(params: Params) -> list[Check]:
    import torch

    rows = [Check("torch", "ok", f"{torch.__version__} (threads: {torch.get_num_threads()})")]
    if torch.cuda.is_available():
        gpus = [
            f"{torch.cuda.get_device_name(i)} ({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
            for i in range(torch.cuda.device_count())
        ]
        bf16 = torch.cuda.is_bf16_supported()
        rows.append(
            Check(
                "gpu", "ok", "; ".join(gpus) + f"; bf16={'yes' if bf16 else 'no'}; CUDA {torch.version.cuda}"
            )
        )
    else:
        needs_gpu = params.run.device == "cuda"
        rows.append(
            Check(
                "gpu",
                "fail" if needs_gpu else "ok",
                "none (CPU only)",
                f"profile '{params.profile}' sets run.device=cuda" if needs_gpu else "",
            )
        )
    return rows


def _probe_unsloth() -> tuple[bool, str]:
    code = "import unsloth, json; print(json.dumps({'version': unsloth.__version__}))"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=UNSLOTH_PROBE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return False, f"import unsloth took over {UNSLOTH_PROBE_TIMEOUT_S}s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return False, last
    version = json.loads(proc.stdout.strip().splitlines()[-1])["version"]
    return True, version


def check_unsloth(params: Params) -> Check:
    if importlib.util.find_spec("unsloth") is None:
        status = "fail" if params.train.backend == "unsloth" else "warn"
        return Check(
            "unsloth",
            status,
            "not installed",
            "GPU: pip install '.[gpu]'; CPU: make install (adds it --no-deps)",
        )
    ok, detail = _probe_unsloth()
    if not ok:
        status = "fail" if params.train.backend == "unsloth" else "warn"
        return Check(
            "unsloth", status, f"installed, import fails: {detail}", "train.backend=transformers avoids it"
        )
    import torch

    backend = (
        "GPU kernels (MoE grouped GEMM)"
        if torch.cuda.is_available()
        else "CPU fallback (stock transformers/PEFT/TRL)"
    )
    return Check(
        "unsloth",
        "ok",
        f"{detail}; would train with its {backend}; profile uses train.backend={params.train.backend}",
    )


def check_lighteval(params: Params) -> list[Check]:
    version = _version("lighteval")
    if version is None:
        return [Check("lighteval", "fail", "not installed", "pip install lighteval==0.13.0")]
    rows = [
        Check(
            "lighteval",
            "ok" if version == "0.13.0" else "warn",
            version,
            "" if version == "0.13.0" else "tested with 0.13.0",
        )
    ]
    hub, xx = _version("huggingface_hub"), _version("xxhash")
    hub_ok = hub is not None and Version(hub) < Version("2")
    xx_ok = xx is not None and Version(xx) < Version("4")
    rows.append(
        Check(
            "lighteval deps",
            "ok" if hub_ok and xx_ok else "fail",
            f"huggingface_hub {hub}, xxhash {xx}",
            "" if hub_ok and xx_ok else "lighteval 0.13 needs huggingface_hub<2 and xxhash<4",
        )
    )
    spec = importlib.util.find_spec("lighteval")
    pkl = (
        Path(spec.origin).parent / "tasks" / "tasks" / "tinyBenchmarks.pkl" if spec and spec.origin else None
    )
    offline_ready = pkl is not None and pkl.exists()
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    mirror = params.eval.source == "mirror"
    status = "ok" if offline_ready or not (offline or mirror) else "warn"
    rows.append(
        Check(
            "lighteval offline",
            status,
            f"tinyBenchmarks.pkl placeholder {'present' if offline_ready else 'absent'}; eval.source={params.eval.source}; HF_HUB_OFFLINE={'1' if offline else 'unset'}",
            ""
            if offline_ready
            else "its task registry downloads tinyBenchmarks.pkl at import; the evaluation phase places a placeholder",
        )
    )
    return rows


def check_data_engine(_: Params) -> Check:
    dt, sp = _version("datatrove"), _version("spacy")
    ok = dt is not None and sp is not None
    return Check(
        "datatrove",
        "ok" if ok else "fail",
        f"datatrove {dt}, spacy {sp}",
        "" if ok else "pip install 'datatrove[processing]==0.10.1' spacy",
    )


def check_profile_packages(params: Params) -> list[Check]:
    """What the profile needs beyond the base install (arabic_r1/needs.py), installed here and in its extra's range:
    a profile that needs vLLM or DeepSpeed fails here, on the machine, before any phase runs. Unsloth has its own
    check (an import probe)."""
    from arabic_r1.needs import installed_problem, needs_of

    rows = []
    for need in needs_of(params):
        if need.dist == "unsloth":
            continue
        problem = installed_problem(need.dist)
        rows.append(
            Check(
                need.dist,
                "fail" if problem else "ok",
                problem or _version(need.dist) or "",
                f"needed by {need.why}" if problem else "",
            )
        )
    return rows or [Check("profile packages", "ok", "nothing beyond the base install")]


def check_disk(params: Params) -> Check:
    root = params.run.root
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free / 2**30
    need = 2.0 if params.model.is_embedded else 50.0
    return Check(
        "disk",
        "ok" if free >= need else "warn",
        f"{free:.1f} GiB free at {params.shown(probe)}",
        "" if free >= need else f"this profile wants >= {need:.0f} GiB",
    )


def check_memory(_: Params) -> Check:
    import psutil

    vm = psutil.virtual_memory()
    return Check(
        "memory",
        "ok",
        f"{vm.total / 2**30:.1f} GiB total, {vm.available / 2**30:.1f} GiB available, {os.cpu_count()} CPUs",
    )


CHECKS: tuple[Callable[[Params], Check | list[Check]], ...] = (
    check_python,
    check_torch,
    check_unsloth,
    check_lighteval,
    check_data_engine,
    check_profile_packages,
    check_disk,
    check_memory,
)


def run_doctor(params: Params) -> list[Check]:
    """All checks in a fixed order; a check that crashes is reported, not raised."""
    rows: list[Check] = []
    for check in CHECKS:
        try:
            out = check(params)
        except Exception as exc:  # a broken install is exactly what the doctor must report
            out = Check(check.__name__.removeprefix("check_"), "fail", f"{type(exc).__name__}: {exc}")
        rows.extend(out if isinstance(out, list) else [out])
    return rows


def as_records(rows: list[Check]) -> list[dict[str, str]]:
    return [asdict(r) for r in rows]


def doctor_frame(rows: list[Check]) -> Any:
    """The report as a notebook shows it: one row per check, the hint column only when a check has a hint."""
    import pandas as pd

    frame = pd.DataFrame(as_records(rows)).set_index("name")
    return frame if frame["hint"].astype(bool).any() else frame.drop(columns="hint")


def format_table(rows: list[Check]) -> str:
    width = max(len(r.name) for r in rows)
    lines = []
    for r in rows:
        mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[r.status]
        lines.append(
            f"[{mark}] {r.name:<{width}}  {r.value}"
            + (f"\n       {'':<{width}}  -> {r.hint}" if r.hint else "")
        )
    return "\n".join(lines)
