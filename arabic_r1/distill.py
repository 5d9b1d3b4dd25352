"""Phase 02: four-phase chain-of-thought traces from a teacher for every prompt of the pool.

Safe for a long paid run:
- a content-addressed cache (teacher id + template version + messages + sampling -> response), written the
  moment a response arrives: re-runs are free, and a killed run resumes with nothing lost or generated twice
  (completions.py, shared with the LLM judges of phases 03 and 05);
- ``traces.jsonl`` is append-only, one whole line per trace (a torn last line is cut off on resume);
- a request and token budget (tokens reserved before each request), bounded concurrency, retries (teachers.py);
- usage per trace and in total: prompt/completion tokens, latency, estimated cost from params prices.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arabic_r1.completions import Budget, ResponseCache, cache_key, make_request, make_teacher, utc_now
from arabic_r1.cot import gold_index, gold_labels, named_option, parse_trace, read_traces, teacher_messages
from arabic_r1.jsonl import append_jsonl, read_jsonl, write_json_atomic, write_jsonl
from arabic_r1.manifest import PhaseRun, base_model_path, upstream_artifact
from arabic_r1.params import DistillParams, Params
from arabic_r1.progress import Progress
from arabic_r1.teachers import Request, Result, TeacherError, sampling_of

log = logging.getLogger(__name__)

TRACES_FILE = "traces.jsonl"
SUMMARY_FILE = "distill_summary.json"


# --------------------------------------------------------------------------------------------- traces
class TraceLog:
    """Append-only JSONL of traces; the last record per prompt id wins (a failed one is retried later)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if self.path.exists():  # a torn last line is cut off: the response cache still has its response
            self.records = {r["prompt_id"]: r for r in read_traces(self.path, repair=True)}

    def retain(self, prompt_ids: set[str]) -> None:
        """Drop records of prompts no longer in the pool (phase 01 was re-run), rewriting the file atomically."""
        stale = set(self.records) - prompt_ids
        if not stale:
            return
        keep = [rec for pid, rec in self.records.items() if pid in prompt_ids]
        write_jsonl(self.path, keep)
        self.records = {r["prompt_id"]: r for r in keep}
        log.info("%s: dropped %d traces of prompts no longer in the pool", self.path, len(stale))

    def done(self, prompt_id: str, key: str) -> bool:
        """A trace of this request is in: the same prompt *and* the same teacher, template and sampling (the
        request's cache key), so that a phase re-run with another teacher never keeps the old teacher's traces."""
        rec = self.records.get(prompt_id)
        return rec is not None and rec["status"] == "ok" and rec.get("cache_key") == key

    def append(self, record: dict[str, Any]) -> None:
        with self._lock:
            append_jsonl(self.path, [record], fsync=True)
            self.records[record["prompt_id"]] = record


# -------------------------------------------------------------------------------------------- running
def load_pool(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path)


def _trace_record(
    item: dict[str, Any],
    req: Request,
    p: DistillParams,
    teacher_id: str,
    text: str,
    usage: dict[str, Any],
    cached: bool,
) -> dict[str, Any]:
    parsed = parse_trace(text)
    mc = item.get("answer") is not None and gold_index(item.get("answer")) is not None
    choice = named_option(parsed.answer, gold_labels(item.get("answer"), item["lang"])) if mc else None
    return {
        "prompt_id": item["id"],
        "lang": item["lang"],
        "category": item["category"],
        "source": item.get("source"),
        "gold": item.get("answer"),
        "multiple_choice": mc,
        "messages": req.messages,
        "teacher": teacher_id,
        "backend": p.backend,
        "template_version": p.template_version,
        "sampling": sampling_of(p),
        "cache_key": req.key,
        "cached": cached,
        "status": "ok",
        "raw_text": text,
        "parsed": parsed.to_dict(),
        "choice": choice,
        "gold_match": (choice == gold_index(item.get("answer"))) if mc else None,
        "usage": usage,
        "created_at": utc_now(),
    }


def _cost(p: DistillParams, prompt_tokens: int, completion_tokens: int) -> float:
    return round(
        prompt_tokens * p.price_per_m_input / 1e6 + completion_tokens * p.price_per_m_output / 1e6, 6
    )


@dataclass
class DistillResult:
    traces_path: Path
    summary: dict[str, Any]


def distill(params: Params, pool_path: Path, out_dir: Path, base_model: str | None = None) -> DistillResult:
    """Generate (or replay) a trace for every pool item not already done in ``out_dir``."""
    p = params.distill
    out_dir.mkdir(parents=True, exist_ok=True)
    items = load_pool(pool_path)[: p.max_items]
    traces = TraceLog(out_dir / TRACES_FILE)
    traces.retain({i["id"] for i in items})
    cache = ResponseCache(p.cache_dir)
    teacher = make_teacher(p, cache, base_model)
    sampling = sampling_of(p)
    by_key: dict[str, dict[str, Any]] = {}
    pending: list[Request] = []
    hits = 0
    for item in items:
        mc = gold_index(item.get("answer")) is not None
        messages = teacher_messages(item["text"], item["lang"], p.template_version, mc, item.get("messages"))
        key = cache_key(teacher.teacher_id, p.template_version, messages, sampling)
        if traces.done(item["id"], key):
            continue
        req = make_request(key, item["id"], messages)
        entry = cache.get(key)
        if entry is not None:
            hits += 1
            traces.append(
                _trace_record(
                    item,
                    req,
                    p,
                    teacher.teacher_id,
                    entry["text"],
                    {**entry["usage"], "cost_usd": 0.0, "attempts": 0},
                    True,
                )
            )
        else:
            by_key[key] = item
            pending.append(req)
    budget = Budget(p.max_requests, p.max_total_tokens, p.max_new_tokens)
    failures: Counter = Counter()
    run_usage = {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "latencies": [], "retries": 0}
    lock = threading.Lock()
    bar = Progress(len(pending), "teacher replies", logger=log)

    def on_result(req: Request, outcome: Result | TeacherError) -> None:
        item = by_key[req.key]
        with lock:
            if isinstance(outcome, TeacherError):
                budget.settle(req, 0)
                failures[outcome.kind] += 1
                run_usage["retries"] += max(outcome.attempts - 1, 0)
                traces.append(
                    {
                        "prompt_id": item["id"],
                        "lang": item["lang"],
                        "category": item["category"],
                        "status": "error",
                        "error_kind": outcome.kind,
                        "error": str(outcome),
                        "cache_key": req.key,
                        "created_at": utc_now(),
                    }
                )
                bar.update(failed=sum(failures.values()))
                return
            usage = {
                "prompt_tokens": outcome.prompt_tokens,
                "completion_tokens": outcome.completion_tokens,
                "latency_s": outcome.latency_s,
                "attempts": outcome.attempts,
                "finish_reason": outcome.finish_reason,
                "cost_usd": _cost(p, outcome.prompt_tokens, outcome.completion_tokens),
            }
            cache.put(
                req.key,
                {
                    "key": req.key,
                    "teacher": teacher.teacher_id,
                    "template_version": p.template_version,
                    "sampling": sampling,
                    "messages": req.messages,
                    "text": outcome.text,
                    "usage": {
                        k: usage[k]
                        for k in ("prompt_tokens", "completion_tokens", "latency_s", "finish_reason")
                    },
                    "created_at": utc_now(),
                },
            )
            budget.settle(req, outcome.prompt_tokens + outcome.completion_tokens)
            run_usage["prompt_tokens"] += outcome.prompt_tokens
            run_usage["completion_tokens"] += outcome.completion_tokens
            run_usage["cost_usd"] += usage["cost_usd"]
            run_usage["latencies"].append(outcome.latency_s)
            run_usage["retries"] += outcome.attempts - 1
            traces.append(_trace_record(item, req, p, teacher.teacher_id, outcome.text, usage, False))
            bar.update(tokens=budget.tokens)

    t0 = time.monotonic()
    if pending:
        log.info(
            "%d items: %d from cache, %d to generate with %s (%s)",
            len(items),
            hits,
            len(pending),
            teacher.teacher_id,
            p.backend,
        )
        with bar:
            teacher.generate(pending, on_result, budget.reserve)
    elif items:
        log.info("%d items: all done or cached, nothing sent to the teacher", len(items))
    summary = summarize(traces, items, p, hits, failures, run_usage, budget, time.monotonic() - t0)
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    return DistillResult(out_dir / TRACES_FILE, summary)


def summarize(
    traces: TraceLog,
    items,
    p: DistillParams,
    hits: int,
    failures: Counter,
    run_usage: dict,
    budget: Budget,
    seconds: float,
) -> dict[str, Any]:
    """What the notebook shows and the manifest keeps: counts, tokens, cost, failures, parse problems."""
    ids = [i["id"] for i in items]
    recs = [traces.records[i] for i in ids if i in traces.records]
    ok = [r for r in recs if r["status"] == "ok"]
    by_cell: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    problems: Counter = Counter()
    for r in ok:
        by_cell[r["lang"]][r["category"]] += 1
        for prob in r["parsed"]["problems"]:
            problems[prob.split(":")[0]] += 1
    lat = run_usage["latencies"]
    not_attempted = len(ids) - len(recs)
    status = "complete" if len(ok) == len(ids) else ("budget_reached" if budget.reached else "incomplete")
    mc = [r for r in ok if r["multiple_choice"]]
    return {
        "status": status,
        "budget_reached": budget.reached,
        "items": len(ids),
        "traces_ok": len(ok),
        "not_attempted": not_attempted,
        "failed": sum(1 for r in recs if r["status"] == "error"),
        "failures_this_run": dict(failures),
        "from_cache_this_run": hits,
        "requests_sent_this_run": budget.requests,
        "retries_this_run": run_usage["retries"],
        "tokens_this_run": {
            "prompt": run_usage["prompt_tokens"],
            "completion": run_usage["completion_tokens"],
        },
        "cost_usd_this_run": round(run_usage["cost_usd"], 4),
        "tokens_all_traces": {
            "prompt": sum(r["usage"].get("prompt_tokens", 0) for r in ok),
            "completion": sum(r["usage"].get("completion_tokens", 0) for r in ok),
        },
        "cost_usd_all_traces_at_params_prices": round(
            sum(
                _cost(p, r["usage"].get("prompt_tokens", 0), r["usage"].get("completion_tokens", 0))
                for r in ok
            ),
            4,
        ),
        "latency_s_this_run": {
            "mean": round(statistics.mean(lat), 3),
            "p50": round(statistics.median(lat), 3),
            "p95": round(sorted(lat)[int(0.95 * (len(lat) - 1))], 3),
        }
        if lat
        else None,
        "by_language_category": {lang: dict(c) for lang, c in by_cell.items()},
        "parse_problems": dict(problems),
        "well_formed": sum(1 for r in ok if not r["parsed"]["problems"]),
        "gold_match": {"multiple_choice": len(mc), "matching": sum(1 for r in mc if r["gold_match"])},
        "seconds": round(seconds, 2),
        "teacher": p.teacher,
        "backend": p.backend,
        "template_version": p.template_version,
    }


def write_cache_pack(p: DistillParams, responses: list[tuple[dict[str, Any], str]], path: Path) -> Path:
    """Import responses produced elsewhere (hand-written traces, a provider's batch API output) as a read-only
    cache pack for ``p.teacher``: ``[(pool item, response text), ...]`` -> ``path`` (a ``.jsonl`` in cache_dir).
    Replay then answers exactly the prompts, template and sampling these keys encode."""
    sampling = sampling_of(p)
    entries = []
    for item, text in responses:
        mc = gold_index(item.get("answer")) is not None
        messages = teacher_messages(item["text"], item["lang"], p.template_version, mc, item.get("messages"))
        key = cache_key(p.teacher, p.template_version, messages, sampling)
        entries.append(
            {
                "key": key,
                "teacher": p.teacher,
                "template_version": p.template_version,
                "sampling": sampling,
                "messages": messages,
                "text": text,
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0},
                "prompt_id": item["id"],
            }
        )
    write_jsonl(path, entries)
    return path


def run_cot_distillation(params: Params, phase: PhaseRun) -> DistillResult:
    """Phase 02 entry point for the notebook: reads phase 01's pool, writes traces, finishes the phase."""
    pool = upstream_artifact(phase.run_dir, "cot_distillation", "data_mixture/pool")
    base = (
        base_model_path(params, phase.run_dir, "cot_distillation")
        if params.distill.teacher == "embedded"
        else None
    )
    result = distill(params, pool, phase.dir, base)
    s = result.summary
    metrics = {
        k: s[k]
        for k in (
            "status",
            "items",
            "traces_ok",
            "failed",
            "not_attempted",
            "requests_sent_this_run",
            "cost_usd_this_run",
            "well_formed",
        )
    }
    phase.finish({"traces": result.traces_path, "summary": phase.dir / SUMMARY_FILE}, metrics)
    return result
