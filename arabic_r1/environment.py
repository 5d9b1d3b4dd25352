"""Phase 00: record the environment and materialise the backbone every later phase loads.

For ``model.name_or_path: embedded`` the tiny random MoE and its tokenizer are built here and saved into the
run folder; with ``model.bf16_copy`` an FP8 checkpoint is rewritten in bf16 into the run folder; otherwise nothing is
downloaded here - later phases load the hub id or folder by name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from arabic_r1.doctor import Check, as_records, run_doctor
from arabic_r1.jsonl import write_json_atomic
from arabic_r1.manifest import (
    PhaseError,
    PhaseRun,
    device_summary,
    package_versions,
)
from arabic_r1.params import Params
from arabic_r1.pretrain import materialise_backbone
from arabic_r1.tiny_model import BUILD_INFO

ENV_FILE = "env.json"
BASE_MODEL_DIR = "base_model"
BASE_MODEL_REF = "base_model.json"


def run_environment(params: Params, phase: PhaseRun) -> tuple[list[Check], dict[str, Any]]:
    """Doctor report + backbone; finishes the phase. Fails if a check the profile depends on failed."""
    rows = run_doctor(params)
    failed = [r for r in rows if r.status == "fail"]
    env = {
        "profile": params.profile,
        "versions": package_versions(),
        "device": device_summary(),
        "doctor": as_records(rows),
        "base_model": params.model.name_or_path,
    }
    outputs: dict[str, Path] = {}
    if failed:
        write_json_atomic(phase.dir / ENV_FILE, env)
        names = ", ".join(f"{r.name} ({r.value})" for r in failed)
        raise PhaseError(f"environment checks failed for profile '{params.profile}': {names}")
    metrics: dict[str, Any] = {
        "checks_ok": sum(r.status == "ok" for r in rows),
        "checks_warn": sum(r.status == "warn" for r in rows),
    }
    if params.model.is_embedded:
        shutil.rmtree(
            phase.dir / BASE_MODEL_DIR, ignore_errors=True
        )  # no stale shards from an earlier family
        model_dir = materialise_backbone(
            phase.dir / BASE_MODEL_DIR, params.model.family, params.model.tiny, params.run.seed
        )
        info = json.loads((model_dir / BUILD_INFO).read_text(encoding="utf-8"))
        env["base_model"] = {"embedded": info, "path": str(model_dir)}
        metrics["base_model_parameters"] = info["parameters"]
        if "pretrain" in info:
            metrics["pretrain_last_loss"] = info["pretrain"]["last_loss"]
        outputs["base_model"] = model_dir
    elif params.model.bf16_copy:
        model_dir = bf16_copy(params, phase.dir / BASE_MODEL_DIR)
        env["base_model"] = {
            "bf16_copy_of": params.model.name_or_path,
            "revision": params.model.revision,
            "path": str(model_dir),
        }
        outputs["base_model"] = model_dir
    else:  # a reference file, so later phases still have one input to depend on
        ref = {
            "name_or_path": params.model.name_or_path,
            "revision": params.model.revision,
            "family": params.model.family,
        }
        write_json_atomic(phase.dir / BASE_MODEL_REF, ref)
        outputs["base_model"] = phase.dir / BASE_MODEL_REF
    write_json_atomic(phase.dir / ENV_FILE, env)
    outputs["env"] = phase.dir / ENV_FILE
    phase.finish(outputs, metrics)
    return rows, env


def bf16_copy(params: Params, out: Path) -> Path:
    """``model.bf16_copy``: the FP8 checkpoint (a local folder, or downloaded here) rewritten in bf16 into ``out``."""
    from arabic_r1.model_loading import write_bf16_copy
    from arabic_r1.progress import Progress

    src = Path(params.model.name_or_path)
    if not src.is_dir():
        from huggingface_hub import snapshot_download

        src = Path(snapshot_download(params.model.name_or_path, revision=params.model.revision))
    shutil.rmtree(out, ignore_errors=True)
    bar: Progress | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        bar = bar or Progress(total, "shard")
        bar.update(done - bar.done)

    write_bf16_copy(src, out, progress)
    if bar is not None:
        bar.close()
    return out


def backbone_frame(params: Params, env: dict[str, Any]) -> Any:
    """What later phases will load, in a few rows (``env.json`` keeps the full build record and loss curve)."""
    import pandas as pd

    bm = env["base_model"]
    if not isinstance(bm, dict):
        rows = {
            "model": bm,
            "revision": params.model.revision or "main",
            "family": params.model.family,
            "loaded by": "phases 02-05 (from the hub or the folder; nothing downloaded here)",
        }
    elif "bf16_copy_of" in bm:
        rows = {
            "model": f"{bm['bf16_copy_of']} (FP8) as a bf16 copy",
            "revision": bm["revision"] or "main",
            "family": params.model.family,
            "folder": params.shown(bm["path"]),
            "loaded by": "phases 04-05 (transformers can neither train FP8 nor dequantize it correctly)",
        }
    else:
        info, shape = bm["embedded"], bm["embedded"]["shape"]
        rows = {
            "model": f"embedded tiny {info['family']} MoE, {info['parameters']:,} parameters",
            "layers / hidden": f"{shape['num_layers']} / {shape['hidden_size']} "
            f"({shape.get('dense_layers', 0)} dense first)",
            "experts": f"{shape['num_experts']} routed, top-{shape['experts_per_token']}, "
            f"{shape.get('shared_experts', 0)} shared",
            "tokenizer": f"byte-level BPE, {info.get('vocab_size', shape['vocab_size']):,} tokens",
            "folder": params.shown(bm["path"]),
        }
        if "pretrain" in info:
            pt = info["pretrain"]
            rows["pre-training"] = (
                f"{pt['steps']} steps on {pt['corpus_tokens']:,} tokens, "
                f"loss {pt['first_loss']:.2f} → {pt['last_loss']:.2f}"
            )
    return pd.DataFrame({"value": rows})
