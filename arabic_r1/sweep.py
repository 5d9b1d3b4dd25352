"""Sweeps: one profile, several override sets (LoRA rank 16/32/64, Arabic share 0.7/0.8/0.9, ...), each a separate
named run, compared in one table.

A phase whose inputs and params are the same as in a run that already has it (the profile's own run or an earlier
run of the sweep) is not recomputed: its folder is hard-linked into the new run (copied where links cannot be made),
and the runner then finds it fresh — the same freshness rule as ``arabic-r1 reproduce``. So a LoRA-rank sweep trains
and evaluates once per rank but builds the data mixture, distils and verifies once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from arabic_r1.jsonl import write_json_atomic
from arabic_r1.manifest import check_fresh, completed_manifest
from arabic_r1.params import Params, ParamsError
from arabic_r1.params_loading import load_params, parse_override
from arabic_r1.phases import PHASES, Phase, find_phase
from arabic_r1.pipeline import NOTEBOOKS_DIR, PhaseFailed, RunSummary, reproduce

log = logging.getLogger(__name__)


@dataclass
class SweepRun:
    name: str
    overrides: list[str]
    run_dir: Path
    reused: dict[str, str] = field(default_factory=dict)  # phase slug -> run it was linked from
    summary: RunSummary | None = None
    error: str | None = None


def parse_sets(sets: Sequence[str]) -> list[list[str]]:
    """Each ``-s`` value is one run: whitespace-separated ``key=value`` overrides (quoted values allowed)."""
    out = []
    for i, s in enumerate(sets, 1):
        items = shlex.split(s)
        if not items:
            raise ParamsError(
                f"sweep set {i} is empty: expected KEY=VALUE [KEY=VALUE ...], e.g. train.lora.r=32"
            )
        for item in items:
            parse_override(item)
        out.append(items)
    if len(out) < 2:
        raise ParamsError("a sweep needs at least two override sets (-s ... -s ...)")
    return out


def run_name(base: str, overrides: Sequence[str]) -> str:
    """``smoke`` + [train.lora.r=32, data.arabic_share=0.7] -> ``smoke-r32-arabic_share0.7``; run.name= wins."""
    for o in overrides:
        key, _, value = o.partition("=")
        if key.strip() == "run.name":
            return value.strip()
    parts = []
    for o in overrides:
        key, _, value = o.partition("=")
        leaf = key.strip().rsplit(".", 1)[-1]
        parts.append(re.sub(r"[^A-Za-z0-9_.]+", "", f"{leaf}{value.strip()}"))
    return f"{base}-{'-'.join(parts)}"


def link_tree(src: Path, dst: Path) -> None:
    """Hard links (instant, no extra disk for a 60 GB merged model); a copy across file systems."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=link, symlinks=True)


def reuse_phases(
    params: Params, run_dir: Path, sources: Sequence[Path], phases: Sequence[Phase] = PHASES
) -> dict[str, str]:
    """Link, in order, every phase that a source run has fresh for these params; stop at the first that none has
    (later phases read its outputs, so they cannot be fresh either)."""
    reused: dict[str, str] = {}
    for phase in phases:
        if check_fresh(phase, params, run_dir, tuple(phases))[0]:
            continue
        src = next(
            (s for s in sources if s != run_dir and check_fresh(phase, params, s, tuple(phases))[0]), None
        )
        if src is None:
            break
        link_tree(src / phase.slug, run_dir / phase.slug)
        reused[phase.slug] = src.name
        log.info("sweep: %s/%s reused from run %s", run_dir.name, phase.slug, src.name)
    return reused


def run_sweep(
    profile: str | Path,
    sets: Sequence[Sequence[str]],
    common: Sequence[str] = (),
    *,
    name: str | None = None,
    notebooks_dir: Path = NOTEBOOKS_DIR,
) -> list[SweepRun]:
    """Every set as its own run (``<run name>-<slug>``), then the comparison table next to the runs."""
    base = load_params(profile, common)
    planned = []  # every set validated before the first one runs
    for overrides in sets:
        label = run_name(base.run_dir.name, overrides)
        planned.append((overrides, load_params(profile, [*common, *overrides, f"run.name={label}"])))
    names = [p.run_dir.name for _, p in planned]
    if len(set(names)) < len(names):
        raise ParamsError(
            f"sweep sets give the same run name twice ({', '.join(names)}): add run.name=... to a set"
        )
    name = name or f"{base.run_dir.name}-sweep"
    runs = [SweepRun(p.run_dir.name, list(o), p.run_dir) for o, p in planned]
    write_sweep(
        base, runs, name
    )  # written first, so notebook 06 of each run finds the runs finished before it
    sources = [base.run_dir]
    for run, (_, params) in zip(runs, planned, strict=True):
        params.run_dir.mkdir(parents=True, exist_ok=True)
        run.reused = reuse_phases(params, params.run_dir, sources, PHASES)
        try:
            run.summary = reproduce(params, notebooks_dir=notebooks_dir)
        except PhaseFailed as exc:  # the finished runs are still recorded and compared
            run.error = str(exc)
            raise
        finally:
            write_sweep(base, runs, name)
        sources.append(params.run_dir)
    return runs


def sweep_file(base: Params, name: str) -> Path:
    return base.run.root / "sweeps" / f"{name}.json"


def write_sweep(base: Params, runs: Sequence[SweepRun], name: str) -> Path:
    """The sweep record (runs, overrides, what was reused) and its comparison table in md + csv."""
    from arabic_r1.paper_tables import compare_runs
    from arabic_r1.uncertainty_tables import sweep_paired_table

    path = sweep_file(base, name)
    record = {
        "name": name,
        "profile": base.profile,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": [
            {
                "name": r.name,
                "overrides": r.overrides,
                "run_dir": str(r.run_dir),
                "reused": r.reused,
                "status": "failed" if r.error else "done" if r.summary else "pending",
                "error": r.error,
            }
            for r in runs
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    done = [r for r in runs if r.summary is not None]
    if done:
        table = compare_runs([r.run_dir for r in done], {r.name: r.overrides for r in done})
        tables = [table]
        if len(done) > 1:
            tables.append(
                sweep_paired_table([r.run_dir for r in done], base.report.bootstrap_resamples, base.run.seed)
            )
        path.with_suffix(".md").write_text("\n".join(t.markdown() for t in tables), encoding="utf-8")
        path.with_suffix(".csv").write_text(table.csv(), encoding="utf-8")
        if len(tables) > 1:
            path.with_name(f"{path.stem}_paired.csv").write_text(tables[1].csv(), encoding="utf-8")
    return path


def sweeps_including(run_dir: Path) -> list[dict]:
    """The sweep records (under ``<run root>/sweeps``) that list ``run_dir``: notebook 06 compares them."""
    folder = Path(run_dir).parent / "sweeps"
    out = []
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        rec = json.loads(f.read_text(encoding="utf-8"))
        if any(Path(r["run_dir"]).resolve() == Path(run_dir).resolve() for r in rec.get("runs", [])):
            out.append(rec)
    return out


def comparable_runs(run_dir: Path, extra: Sequence[str | Path] = ()) -> list[Path]:
    """This run, the other runs of every sweep it belongs to, and ``extra`` — those with phases 04 and 05 done."""
    candidates = [Path(run_dir)] + [Path(r["run_dir"]) for s in sweeps_including(run_dir) for r in s["runs"]]
    candidates += [Path(e) for e in extra]
    out: list[Path] = []
    for c in candidates:
        done = all(completed_manifest(c, find_phase(p)) for p in ("moe_lora_sft", "oall_evaluation"))
        if done and c.resolve() not in [o.resolve() for o in out]:
            out.append(c)
    return out
