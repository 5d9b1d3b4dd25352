"""Phase manifests: what a phase ran with, what it wrote, and whether that is still fresh.

A phase calls :func:`start_phase` at its top and :meth:`PhaseRun.finish` at its end, from a notebook run by
papermill or by hand in JupyterLab alike. The manifest records the params-section hash, the digests of the
input artifacts (upstream outputs), package versions, git commit, device, timings and peak memory. The
runner skips a phase whose manifest is fresh: same params sections, same inputs, same package version, and
outputs still on disk with the recorded digests.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import arabic_r1
from arabic_r1.code_digest import code_digests
from arabic_r1.digests import json_digest, path_digest
from arabic_r1.errors import ExplainedError
from arabic_r1.jsonl import write_json_atomic
from arabic_r1.params import Params
from arabic_r1.phases import PHASES, Phase, find_phase

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TRACKED_PACKAGES = (
    "torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers", "huggingface_hub",
    "lighteval", "datatrove", "unsloth", "unsloth_zoo", "vllm", "papermill", "pydantic",
)  # fmt: skip
RESOURCES = Path(arabic_r1.__file__).resolve().parent / "resources"


class PhaseError(ExplainedError, RuntimeError):
    """A phase cannot start or finish; the message says which phase and what is missing."""


# ------------------------------------------------------------------------------------------ provenance
def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions from metadata (no imports: cheap, and safe before unsloth patches anything)."""
    out = {"python": platform.python_version(), "arabic_r1": arabic_r1.__version__}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit(repo: Path | None = None) -> str | None:
    """``<sha>`` or ``<sha>-dirty``; None outside a git checkout (e.g. a pip install)."""
    cwd = repo or Path(arabic_r1.__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def device_summary() -> dict[str, Any]:
    """CPU/GPU facts; torch is consulted only if the phase already imported it."""
    info: dict[str, Any] = {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform()}
    torch = sys.modules.get("torch")
    if torch is not None:
        # CPU results depend on it (float sums in another order): the smoke student differs between 1 and 2 threads
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def peak_memory_mb() -> dict[str, float]:
    """Peak RSS of this process (the kernel) and of its finished children; GPU peak if CUDA was used."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20  # ru_maxrss is KiB on Linux, bytes on macOS
    out = {
        "rss_self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, 1),
        "rss_children": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale, 1),
    }
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out["gpu"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(run_dir: Path, phase: Phase) -> dict[str, Any] | None:
    path = Path(run_dir) / phase.slug / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s is not readable JSON (%s): treated as no manifest, the phase will run", path, exc)
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("outputs", {}), dict):
        log.warning("%s is not a manifest (a JSON object): treated as no manifest, the phase will run", path)
        return None
    return manifest


def completed_manifest(run_dir: Path, phase: Phase) -> dict[str, Any] | None:
    """The manifest of ``phase`` in ``run_dir`` if that phase completed there, else None."""
    m = read_manifest(run_dir, phase)
    return m if m is not None and m.get("status") == "complete" else None


def _declared_upstream(reader: str, spec: str, phases: tuple[Phase, ...]) -> Phase:
    """The phase ``spec`` (``"phase"`` or ``"phase/output"``) names, if ``reader`` declares it as an input: the
    whole phase, or that one output. Anything else would be read without being part of the freshness key."""
    name, _, output = spec.partition("/")
    upstream = find_phase(name, phases)
    declared = find_phase(reader, phases).inputs
    if upstream.name not in declared and not (output and f"{upstream.name}/{output}" in declared):
        raise ValueError(f"phase {reader} reads {spec} but the phase table does not list it among its inputs")
    return upstream


def _completed_outputs(run_dir: Path, reader: str, upstream: Phase, needed: str) -> dict[str, Path]:
    m = completed_manifest(run_dir, upstream)
    if m is None:
        raise PhaseError(
            f"phase {reader} needs {needed} of phase {upstream.slug}, which has not completed "
            f"in {run_dir}: run phase {upstream.number} first"
        )
    return {k: Path(run_dir) / v["path"] for k, v in m.get("outputs", {}).items()}


def upstream_outputs(
    run_dir: Path, reader: str, name: str, phases: tuple[Phase, ...] = PHASES
) -> dict[str, Path]:
    """Every output of an earlier phase in this run, by name, read from its manifest (``reader`` must declare the
    whole phase as an input): with :func:`upstream_artifact`, the one way a phase finds what another wrote."""
    return _completed_outputs(run_dir, reader, _declared_upstream(reader, name, phases), "the outputs")


def upstream_artifact(run_dir: Path, reader: str, spec: str, phases: tuple[Phase, ...] = PHASES) -> Path:
    """One earlier output, ``"phase/output"``, read from that phase's manifest in this run; ``reader`` must declare
    the output (or the whole phase) in the phase table, so that every artifact a phase reads is part of its
    freshness key."""
    upstream = _declared_upstream(reader, spec, phases)
    output = spec.partition("/")[2]
    outputs = _completed_outputs(run_dir, reader, upstream, f"output '{output}'")
    if output not in outputs:
        raise PhaseError(
            f"phase {reader} needs output '{output}' of phase {upstream.slug}, which its manifest in "
            f"{run_dir} does not list: re-run that phase"
        )
    return outputs[output]


def base_model_path(params: Params, run_dir: Path, reader: str) -> str:
    """What phase ``reader`` passes to ``from_pretrained``: the hub id or folder of ``model.name_or_path``, or the
    folder phase 00 wrote in this run (its ``base_model`` output): the embedded model, or a bf16 copy."""
    if not params.model.is_embedded and not params.model.bf16_copy:
        return params.model.name_or_path
    return str(upstream_artifact(run_dir, reader, "environment/base_model"))


# ---------------------------------------------------------------------------------------------- keys
def freshness_key(
    phase: Phase, params: Params, run_dir: Path, phases: tuple[Phase, ...] = PHASES
) -> dict[str, Any]:
    """What a phase's result depends on. Raises PhaseError if an input phase has not completed."""
    inputs = {}
    for spec in phase.inputs:
        name, _, output = spec.partition("/")
        upstream = find_phase(name, phases)
        m = read_manifest(run_dir, upstream)
        if not m or m.get("status") != "complete":
            raise PhaseError(
                f"phase {phase.slug} reads the outputs of phase {upstream.slug}, which has not completed in {params.shown(run_dir)}; "
                f"run it first: {params.command(f'run {upstream.number}')} (or {params.command('reproduce')}, which "
                "runs every phase that is missing, in order)"
            )
        if output and output not in m.get("outputs", {}):
            raise PhaseError(
                f"phase {phase.slug} reads output '{output}' of phase {upstream.slug}, which its manifest does not list"
            )
        inputs[spec] = m["outputs"][output]["digest"] if output else m["outputs_digest"]
    files = {_portable_path(f, params.base_dir): path_digest(f) for f in params.files(*phase.sections)}
    files |= {f"arabic_r1/resources/{r}": path_digest(RESOURCES / r) for r in phase.resources}
    return {
        "params_hash": params.section_hash(*phase.sections),
        "sections": list(phase.sections),
        "inputs": inputs,
        "files": files,
        "code": code_digests(phase.slug),
        "arabic_r1": arabic_r1.__version__,
    }


def _portable_path(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def check_fresh(
    phase: Phase, params: Params, run_dir: Path, phases: tuple[Phase, ...] = PHASES
) -> tuple[bool, str]:
    """(fresh?, reason) - the reason is shown to the user either way."""
    m = read_manifest(run_dir, phase)
    if m is None:
        return False, "no manifest (never ran)"
    if m.get("status") != "complete":
        return False, f"last run did not complete (status: {m.get('status')})"
    try:
        key = freshness_key(phase, params, run_dir, phases)
    except PhaseError as exc:
        return False, str(exc)
    old = m.get("key", {})
    if old.get("params_hash") != key["params_hash"]:
        return False, f"params changed in {', '.join(phase.sections)}"
    for name, digest in key["inputs"].items():
        if old.get("inputs", {}).get(name) != digest:
            return False, f"input '{name}' changed"
    for name, digest in key["files"].items():
        if old.get("files", {}).get(name) != digest:
            return False, f"input file {name} changed"
    if "code" not in old:
        return False, "code digests not recorded (a manifest written before arabic_r1 kept them)"
    changed = sorted(
        f for f in old["code"].keys() | key["code"].keys() if old["code"].get(f) != key["code"].get(f)
    )
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return False, f"code changed: {', '.join(changed[:3])}{more}"
    if old.get("arabic_r1") != key["arabic_r1"]:
        return False, f"arabic_r1 version changed ({old.get('arabic_r1')} -> {key['arabic_r1']})"
    for name, out in m.get("outputs", {}).items():
        path = Path(run_dir) / out["path"]
        if not path.exists():
            return False, f"output '{name}' is missing ({path})"
        if path_digest(path) != out["digest"]:
            return False, f"output '{name}' was modified ({path})"
    return True, f"fresh (completed {m.get('finished_at')})"


# ------------------------------------------------------------------------------------------- phase run
@dataclass
class PhaseRun:
    """One execution of a phase; create with :func:`start_phase`, end with :meth:`finish`."""

    phase: Phase
    params: Params
    run_dir: Path
    key: dict[str, Any]
    started_at: str
    t0: float

    @property
    def dir(self) -> Path:
        """The phase's own output folder."""
        return self.run_dir / self.phase.slug

    def _base(self, status: str) -> dict[str, Any]:
        p = self.params
        return {
            "phase": self.phase.slug,
            "status": status,
            "run_name": self.run_dir.name,
            "profile": p.profile,
            "params_file": str(p.source_file) if p.source_file else None,
            "overrides": list(p.overrides),
            "key": self.key,
            "versions": package_versions(),
            "git_commit": git_commit(),
            "device": device_summary(),
            "started_at": self.started_at,
        }

    def finish(self, outputs: dict[str, Path | str], metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record outputs (paths inside the run dir) and metrics; marks the phase complete."""
        recorded = {}
        for name, path in outputs.items():
            path = Path(path).resolve()
            if not path.exists():
                raise PhaseError(f"phase {self.phase.slug}: output '{name}' was not written ({path})")
            try:
                rel = path.relative_to(self.run_dir.resolve())
            except ValueError:
                raise PhaseError(
                    f"phase {self.phase.slug}: output '{name}' ({path}) is outside the run folder {self.run_dir}"
                ) from None
            recorded[name] = {"path": rel.as_posix(), "digest": path_digest(path)}
        manifest = self._base("complete") | {
            "outputs": recorded,
            "outputs_digest": json_digest({k: v["digest"] for k, v in recorded.items()}),
            "metrics": metrics or {},
            "finished_at": _now(),
            "duration_s": round(time.monotonic() - self.t0, 2),
            "peak_memory_mb": peak_memory_mb(),
        }
        write_json_atomic(self.dir / MANIFEST, manifest)
        log.info("phase %s complete in %.1fs", self.phase.slug, manifest["duration_s"])
        return manifest


def start_phase(
    phase: str | Phase, params: Params, run_dir: str | Path | None = None, phases: tuple[Phase, ...] = PHASES
) -> PhaseRun:
    """Begin a phase: check its inputs exist, create its folder, mark it running (a crash leaves it stale)."""
    phase = phase if isinstance(phase, Phase) else find_phase(phase, phases)
    run_dir = Path(run_dir) if run_dir else params.run_dir
    run_dir = run_dir.resolve()
    key = freshness_key(phase, params, run_dir, phases)
    pr = PhaseRun(phase, params, run_dir, key, _now(), time.monotonic())
    pr.dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(pr.dir / MANIFEST, pr._base("running"))
    return pr
