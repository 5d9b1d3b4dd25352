"""Phase 01: the token-budgeted, deduplicated, decontaminated 80/20 Arabic/English prompt pool, on datatrove.

Stages (each a datatrove executor; local by default, Slurm or Ray from params):
1. read every source -> reject unusable rows -> declared-language check -> Gopher quality -> Gopher repetition
   -> OALL decontamination -> write survivors + exact-dedup signatures;
2. find exact duplicates (Arabic-normalised text);            3. drop them, write MinHash signatures;
4. MinHash buckets;   5. MinHash clusters;   6. drop near duplicates, count tokens with the student tokenizer.
Then the driver selects items per (language, category) cell to hit the token budget and writes the pool and the
reports. Every row read ends up either in the candidates or in ``removed/<step>/`` with its reason.

The parts: data_readers.py (sources -> Documents), data_filters.py (the Arabic-aware filters and the token counter),
data_executors.py (local, Slurm or Ray); this module builds the stages, runs them and selects the pool.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.pipeline.dedup import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.dedup.exact_dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
)
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import TextNormConfig

from arabic_r1.arabic_text import (
    STOP_WORDS,
    ArabicWordTokenizer,
    normalized_text,
)
from arabic_r1.benchmark_mirrors import iter_benchmark_rows, mirror_digests
from arabic_r1.budget import Cell, cell_targets, select_to_budget
from arabic_r1.data_executors import datatrove_logs_to, make_executor
from arabic_r1.data_filters import (
    ArabicQualityFilter,
    DeclaredLanguageFilter,
    PromptRepetitionFilter,
    RejectFilter,
    StudentTokenCounter,
    normalized_content,
)
from arabic_r1.data_readers import RankFileJsonlReader, source_reader
from arabic_r1.decontam import DecontaminationFilter, DecontaminationIndex, build_index, contamination_report
from arabic_r1.jsonl import read_jsonl, write_json_atomic
from arabic_r1.manifest import PhaseRun, base_model_path
from arabic_r1.params import Params
from arabic_r1.ray_cluster import collect_task_logs, ray_cluster
from arabic_r1.slurm import run_slurm

log = logging.getLogger(__name__)

POOL_FILE = "pool.jsonl"
STATS_FILE = "mixture_stats.json"
DEDUP_REPORT = "dedup_report.json"
DECONT_REPORT = "decontamination_report.json"
FILTER_REPORT = "filter_report.json"
REMOVED_DIR = "removed"
# Removal steps, in pipeline order; each writes the removed documents (with the reason) to removed/<step>/.
STEPS = ("source_rows", "language", "quality", "repetition", "decontamination", "exact_dedup", "near_dedup")


# --------------------------------------------------------------------------------------------- driver
@dataclass
class MixtureResult:
    pool_path: Path
    stats: dict[str, Any]
    decontamination: dict[str, Any]
    dedup: dict[str, Any]
    filters: dict[str, Any]
    outputs: dict[str, Path] = field(default_factory=dict)


def build_decontamination_index(params: Params, out: Path) -> DecontaminationIndex:
    """Index every benchmark the params name, from the mirror (or hub) the evaluation phase reads too."""
    d = params.data.decontamination

    def rows():
        for key in d.benchmarks:
            yield from iter_benchmark_rows(key, params.eval.source, params.eval.mirror_dir)

    index = build_index(
        rows(),
        n=d.ngram,
        min_short_words=d.min_short_words,
        max_items_per_ngram=d.max_items_per_ngram,
        min_content_words=d.min_content_words,
    )
    missing = [b for b in d.benchmarks if b not in index.stats]
    if missing:
        raise RuntimeError(
            f"decontamination: no items found for {', '.join(missing)} in {params.eval.mirror_dir or 'the hub'}"
        )
    index.save(out)
    return index


def stage_pipelines(
    params: Params, work: Path, index_path: Path, tokenizer_path: str
) -> list[tuple[str, list, int]]:
    """(name, pipeline, tasks) for the six datatrove stages."""
    data = params.data
    q = data.quality
    tokenizer = ArabicWordTokenizer()
    removed = work / REMOVED_DIR

    def excl(step: str) -> JsonlWriter:
        return JsonlWriter(str(removed / step), output_filename="${rank}.jsonl", compression=None)

    exact_cfg = ExactDedupConfig(content_getter=normalized_content, hash_config=HashConfig(precision=64))
    mh_cfg = MinhashConfig(
        n_grams=data.dedup.minhash_ngram,
        num_buckets=data.dedup.minhash_buckets,
        hashes_per_bucket=data.dedup.minhash_hashes_per_bucket,
        # the Arabic tokenizer already folds, lower-cases and drops punctuation; keep only number folding
        norm_config=TextNormConfig(
            lowercase=False, norm_whitespace=False, remove_punctuation=False, norm_unicode_diacritics=False
        ),
    )
    filtering: list = [source_reader(s) for s in data.sources]
    filtering += [
        RejectFilter(exclusion_writer=excl("source_rows")),
        DeclaredLanguageFilter(exclusion_writer=excl("language")),
        ArabicQualityFilter(
            min_doc_words=q.min_words,
            max_doc_words=q.max_words,
            min_avg_word_length=q.min_avg_word_length,
            max_avg_word_length=q.max_avg_word_length,
            min_stop_words=q.min_stop_words,
            stop_words=sorted(STOP_WORDS),
            max_non_alpha_words_ratio=q.max_non_alpha_words_ratio,
            language=tokenizer,
            exclusion_writer=excl("quality"),
        ),
    ]
    if q.repetition:
        filtering.append(PromptRepetitionFilter(language=tokenizer, exclusion_writer=excl("repetition")))
    filtering += [
        DecontaminationFilter(index_path, exclusion_writer=excl("decontamination")),
        JsonlWriter(str(work / "filtered"), output_filename="${rank}.jsonl", compression=None),
    ]
    if data.dedup.exact:
        filtering.append(ExactDedupSignature(str(work / "exact_sigs"), config=exact_cfg))
    tasks = data.tasks
    stages: list[tuple[str, list, int]] = [("filter", filtering, tasks)]
    after_exact: list = [RankFileJsonlReader(str(work / "filtered"), compression=None)]
    if data.dedup.exact:
        stages.append(
            (
                "exact_find",
                [ExactFindDedups(str(work / "exact_sigs"), str(work / "exact_dups"), config=exact_cfg)],
                1,
            )
        )
        after_exact.append(
            ExactDedupFilter(str(work / "exact_dups"), config=exact_cfg, exclusion_writer=excl("exact_dedup"))
        )
    final_input = "deduped_exact"
    after_exact.append(
        JsonlWriter(str(work / final_input), output_filename="${rank}.jsonl", compression=None)
    )
    last: list = [RankFileJsonlReader(str(work / final_input), compression=None)]
    if data.dedup.near:
        after_exact.append(MinhashDedupSignature(str(work / "mh_sigs"), config=mh_cfg, language=tokenizer))
        stages.append(("exact_filter+minhash_sigs", after_exact, tasks))
        stages.append(
            (
                "minhash_buckets",
                [MinhashDedupBuckets(str(work / "mh_sigs"), str(work / "mh_buckets"), config=mh_cfg)],
                mh_cfg.num_buckets,
            )
        )
        stages.append(
            (
                "minhash_clusters",
                [
                    MinhashDedupCluster(
                        str(work / "mh_buckets"),
                        str(work / "mh_clusters"),
                        config=mh_cfg,
                        save_cluster_id=True,
                    )
                ],
                1,
            )
        )
        last.append(
            MinhashDedupFilter(
                str(work / "mh_clusters"), exclusion_writer=excl("near_dedup"), load_cluster_ids=True
            )
        )
    else:
        stages.append(("exact_filter", after_exact, tasks))
    last += [
        StudentTokenCounter(tokenizer_path),
        JsonlWriter(str(work / "candidates"), output_filename="${rank}.jsonl", compression=None),
    ]
    stages.append(("near_filter+tokens", last, tasks))
    return stages


def run_stages(params: Params, stages: list[tuple[str, list, int]], work: Path) -> dict[str, float]:
    """Run the stages in order on the chosen executor; returns seconds per stage (local/ray)."""
    timings: dict[str, float] = {}
    previous = None
    executors = []
    for i, (name, pipeline, tasks) in enumerate(stages):
        ex = make_executor(
            params.data, pipeline, tasks, work / "logs" / f"{i + 1}_{name}", depends=previous, name=name
        )
        executors.append((name, ex))
        previous = ex
    if params.data.executor == "slurm":  # submits the whole chain with afterok dependencies
        return run_slurm(executors, work, params.data.slurm.poll_s)
    cluster = ray_cluster(params.data, work) if params.data.executor == "ray" else contextlib.nullcontext()
    with datatrove_logs_to(work / "logs" / "datatrove.log"), cluster:
        for i, (name, ex) in enumerate(executors):
            ex.depends = None  # already run, in order, below
            t0 = time.monotonic()
            ex.run()
            timings[name] = round(time.monotonic() - t0, 2)
            if incomplete := ex.get_incomplete_ranks(skip_completed=True):
                raise RuntimeError(
                    f"phase 01 stage {name!r}: tasks {incomplete} of {ex.world_size} did not complete on the "
                    f"{params.data.executor} executor; their logs: {ex.logging_dir.path}/logs/"
                )
            log.info("stage %d/%d %s: %.1fs", i + 1, len(executors), name, timings[name])
    if params.data.executor == "ray":
        collect_task_logs([Path(ex.logging_dir.path) for _, ex in executors], work / "logs" / "datatrove.log")
    return timings


def read_jsonl_dir(folder: Path) -> list[dict[str, Any]]:
    return [row for f in sorted(folder.glob("*.jsonl")) for row in read_jsonl(f)]


def rows_read(work: Path) -> Counter:
    """Raw rows per source as the readers counted them (datatrove stats of stage 1)."""
    counts: Counter = Counter()
    for f in (work / "logs").glob("1_*/stats/*.json"):
        for step in json.loads(f.read_text()):
            for key, value in step.get("stats", {}).items():
                if key.startswith("rows_"):
                    counts[key.removeprefix("rows_")] += value["total"] if isinstance(value, dict) else value
    return counts


def run_mixture(params: Params, phase_dir: Path, tokenizer_path: str) -> MixtureResult:
    """The whole phase: index, stages, budget, pool and reports under ``phase_dir``."""
    data = params.data
    if not data.sources:
        raise ValueError(f"{params.source_file}: data.sources is empty - nothing to build a pool from")
    work = phase_dir / "work"
    shutil.rmtree(work, ignore_errors=True)  # datatrove skips "completed" tasks; a phase run starts clean
    work.mkdir(parents=True)
    t0 = time.monotonic()
    index_path = work / "decontamination_index.pkl"
    index = build_decontamination_index(params, index_path)
    log.info(
        "decontamination index: %d items, %d n-grams (%s)",
        len(index.items),
        len(index.ngrams),
        ", ".join(f"{b} {s['items']}" for b, s in index.stats.items()),
    )
    timings = {"index": round(time.monotonic() - t0, 2)}
    timings |= run_stages(params, stage_pipelines(params, work, index_path, tokenizer_path), work)

    removed = {step: read_jsonl_dir(work / REMOVED_DIR / step) for step in STEPS}
    candidates = read_jsonl_dir(work / "candidates")
    read_counts = rows_read(work)

    targets = cell_targets(data.token_budget, data.arabic_share, data.category_shares)
    by_cell: dict[Cell, list[dict[str, Any]]] = defaultdict(list)
    for doc in sorted(candidates, key=lambda d: d["id"]):
        by_cell[Cell(doc["metadata"]["lang"], doc["metadata"]["category"])].append(doc)
    pool: list[dict[str, Any]] = []
    cells = []
    for cell, target in targets.items():
        docs = by_cell.get(cell, [])
        sel = select_to_budget(
            [d["metadata"]["n_tokens"] for d in docs], target, data.budget_tolerance, seed=params.run.seed
        )
        chosen = [docs[i] for i in sorted(sel.chosen)]
        pool.extend(chosen)
        sources = sorted(
            {s.name for s in data.sources if s.lang == cell.lang and s.category == cell.category}
        )
        cells.append(
            {
                "lang": cell.lang,
                "category": cell.category,
                "target": target,
                "lo": sel.lo,
                "hi": sel.hi,
                "tokens": sel.tokens,
                "items": len(chosen),
                "available_tokens": sel.available,
                "available_items": len(docs),
                "status": sel.status,
                "sources": sources,
            }
        )
    selected_ids = {d["id"] for d in pool}
    stats = _mixture_stats(params, targets, cells, candidates, removed, read_counts, selected_ids, timings)
    decont = contamination_report(
        index,
        [
            {"id": d["id"], "source": d["metadata"]["source"], **d["metadata"]["contamination"]}
            for d in removed["decontamination"]
        ],
    )
    dedup = _dedup_report(removed, candidates)
    filters = {step: _reasons(step, removed[step]) for step in STEPS}

    pool_path = phase_dir / POOL_FILE
    _write_pool(pool_path, pool)
    outputs = {"pool": pool_path}
    for name, payload in (
        (STATS_FILE, stats),
        (DEDUP_REPORT, dedup),
        (DECONT_REPORT, decont),
        (FILTER_REPORT, filters),
    ):
        write_json_atomic(phase_dir / name, payload)
        outputs[name.removesuffix(".json")] = phase_dir / name
    removed_out = phase_dir / REMOVED_DIR
    shutil.rmtree(removed_out, ignore_errors=True)
    if (work / REMOVED_DIR).exists():
        shutil.copytree(work / REMOVED_DIR, removed_out)
    else:
        removed_out.mkdir()
    outputs["removed"] = removed_out
    short = [c for c in cells if c["status"] != "ok"]
    if short:
        msg = "; ".join(
            f"{c['lang']}/{c['category']}: target {c['target']} tokens (+-{data.budget_tolerance:.0%}), "
            + (
                f"only {c['available_tokens']} available after filtering from {', '.join(c['sources']) or 'no source'} - source ran dry"
                if c["status"] == "dry"
                else f"got {c['tokens']} (items too coarse to land in [{c['lo']}, {c['hi']}])"
            )
            for c in short
        )
        if data.on_shortfall == "error":
            raise RuntimeError(
                f"token budget not met ({len(short)} of {len(cells)} cells): {msg}. Reports in {phase_dir}"
            )
        log.warning("token budget not met: %s", msg)
    return MixtureResult(pool_path, stats, decont, dedup, filters, outputs)


def _write_pool(path: Path, pool: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for d in pool:
            m = d["metadata"]
            row = {
                "id": d["id"],
                "text": d["text"],
                "lang": m["lang"],
                "category": m["category"],
                "source": m["source"],
                "n_tokens": m["n_tokens"],
                "answer": m.get("answer"),
            }
            if "messages" in m:
                row["messages"] = m["messages"]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _reasons(step: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    by_source: dict[str, Counter] = defaultdict(Counter)
    for d in docs:
        by_source[d["metadata"]["source"]][d["metadata"].get("filter_reason", step)] += 1
    return {"total": len(docs), "by_source": {s: dict(c) for s, c in sorted(by_source.items())}}


def _dedup_report(
    removed: dict[str, list[dict[str, Any]]], candidates: list[dict[str, Any]]
) -> dict[str, Any]:
    kept_by_cluster = {
        d["metadata"]["minhash_cluster_id"]: d["id"]
        for d in candidates
        if "minhash_cluster_id" in d["metadata"]
    }
    near = [
        {
            "id": d["id"],
            "source": d["metadata"]["source"],
            "cluster": d["metadata"].get("minhash_cluster_id"),
            "kept": kept_by_cluster.get(d["metadata"].get("minhash_cluster_id")),
            "text": d.get("text", "")[:200],
        }
        for d in removed["near_dedup"]
    ]
    survivors = {normalized_text(d["text"]): d["id"] for d in [*removed["near_dedup"], *candidates]}
    exact = [
        {
            "id": d["id"],
            "source": d["metadata"]["source"],
            "kept": survivors.get(normalized_text(d["text"])),
            "text": d.get("text", "")[:200],
        }
        for d in removed["exact_dedup"]
    ]
    return {"exact": {"removed": len(exact), "items": exact}, "near": {"removed": len(near), "items": near}}


def _mixture_stats(
    params, targets, cells, candidates, removed, read_counts, selected_ids, timings
) -> dict[str, Any]:
    data = params.data
    per_source: dict[str, dict[str, Any]] = {}
    for s in data.sources:
        per_source[s.name] = {
            "lang": s.lang,
            "category": s.category,
            "rows_read": read_counts.get(s.name, 0),
            "removed": {},
            "candidates": 0,
            "selected": 0,
            "selected_tokens": 0,
        }
    for step, docs in removed.items():
        for d in docs:
            entry = per_source[d["metadata"]["source"]]
            entry["removed"][step] = entry["removed"].get(step, 0) + 1
    for d in candidates:
        entry = per_source[d["metadata"]["source"]]
        entry["candidates"] += 1
        if d["id"] in selected_ids:
            entry["selected"] += 1
            entry["selected_tokens"] += d["metadata"]["n_tokens"]
    for entry in per_source.values():
        entry["accounted"] = sum(entry["removed"].values()) + entry["candidates"]
        entry["all_rows_accounted"] = entry["accounted"] == entry["rows_read"]
    tokens = {lang: sum(c["tokens"] for c in cells if c["lang"] == lang) for lang in ("ar", "en")}
    total = sum(tokens.values())
    return {
        "token_budget": data.token_budget,
        "tolerance": data.budget_tolerance,
        "tokens": total,
        "arabic_share": {
            "target": data.arabic_share,
            "achieved": round(tokens["ar"] / total, 4) if total else None,
        },
        "cells": cells,
        "steps": list(STEPS),  # the order rows are removed in: how readers of this file lay out the funnel
        "sources": per_source,
        "all_rows_accounted": all(e["all_rows_accounted"] for e in per_source.values()),
        "timings_s": timings,
    }


def run_data_mixture(params: Params, phase: PhaseRun) -> MixtureResult:
    """Phase 01 entry point for the notebook: builds the pool with the run's student tokenizer, finishes the phase."""
    result = run_mixture(params, phase.dir, base_model_path(params, phase.run_dir, "data_mixture"))
    s = result.stats
    metrics = {
        "pool_items": sum(c["items"] for c in s["cells"]),
        "pool_tokens": s["tokens"],
        "arabic_share": s["arabic_share"]["achieved"],
        "cells_ok": sum(c["status"] == "ok" for c in s["cells"]),
        "cells": len(s["cells"]),
        "removed": {step: f["total"] for step, f in result.filters.items()},
        "all_rows_accounted": s["all_rows_accounted"],
        "benchmark_digests": mirror_digests(params.eval.mirror_dir, params.data.decontamination.benchmarks)
        if params.eval.source == "mirror"
        else {},
    }
    phase.finish(result.outputs, metrics)
    return result
