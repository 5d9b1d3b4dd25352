"""Phase 03: run every check of trace_checks.py (and the optional LLM judge) on each teacher trace, keep the ones
that pass everything as SFT data, and write the funnel that attributes every rejection to its checks.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from arabic_r1.cot import read_traces
from arabic_r1.jsonl import write_json_atomic
from arabic_r1.judge import make_norms_judge
from arabic_r1.manifest import PhaseRun, upstream_artifact
from arabic_r1.params import Params, VerifyParams
from arabic_r1.progress import Progress
from arabic_r1.reasoning_format import ReasoningFormat, assistant_turn
from arabic_r1.trace_checks import Trace, Verdict, morphology_cache, verify_trace

log = logging.getLogger(__name__)

VERIFIED_FILE = "verified.jsonl"
VERDICTS_FILE = "verdicts.jsonl"
FUNNEL_FILE = "funnel.json"


# -------------------------------------------------------------------------------------------- the phase
def sft_messages(t: Trace, fmt: ReasoningFormat = "think_tags") -> list[dict[str, str]]:
    """user prompt; the teacher's four-phase reasoning and answer in the student's reasoning format."""
    return [{"role": "user", "content": t.prompt}, assistant_turn(t.raw_text, fmt)]


@dataclass
class VerifyResult:
    verified_path: Path
    verdicts_path: Path
    funnel: dict[str, Any]
    rejected_examples: dict[str, dict[str, Any]] = field(default_factory=dict)


def verify_traces(
    records: list[dict[str, Any]],
    p: VerifyParams,
    out_dir: Path,
    judge=None,
    reasoning_format: ReasoningFormat = "think_tags",
) -> VerifyResult:
    """Verdicts for every ok trace, the funnel, and the survivors as chat messages."""
    out_dir.mkdir(parents=True, exist_ok=True)
    traces = [Trace.from_record(r) for r in records if r.get("status") == "ok"]
    checks = list(p.checks) + (["llm_judge"] if judge is not None else [])
    all_verdicts: list[list[Verdict]] = []
    with Progress(len(traces), "verified", unit="traces", logger=log) as bar:
        for t in traces:
            all_verdicts.append(verify_trace(t, p))
            bar.update()
    if judge is not None:
        for verdicts, jv in zip(all_verdicts, judge(traces), strict=True):
            verdicts.append(jv)
    kept = []
    rejected_examples: dict[str, dict[str, Any]] = {}
    with (out_dir / VERDICTS_FILE).open("w", encoding="utf-8") as f:
        for t, verdicts in zip(traces, all_verdicts, strict=True):
            for v in verdicts:
                f.write(json.dumps({"prompt_id": t.prompt_id, **asdict(v)}, ensure_ascii=False) + "\n")
                if not v.passed and v.check not in rejected_examples:
                    rejected_examples[v.check] = {
                        "prompt_id": t.prompt_id,
                        "lang": t.lang,
                        "reason": v.reason,
                        "text": t.raw_text,
                    }
            if all(v.passed for v in verdicts):
                kept.append(t)
    with (out_dir / VERIFIED_FILE).open("w", encoding="utf-8") as f:
        for t in kept:
            f.write(
                json.dumps(
                    {
                        "id": t.prompt_id,
                        "lang": t.lang,
                        "category": t.category,
                        "messages": sft_messages(t, reasoning_format),
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    funnel = build_funnel(traces, all_verdicts, checks, excluded=len(records) - len(traces))
    write_json_atomic(out_dir / FUNNEL_FILE, funnel)
    return VerifyResult(out_dir / VERIFIED_FILE, out_dir / VERDICTS_FILE, funnel, rejected_examples)


def build_funnel(
    traces: list[Trace], verdicts: list[list[Verdict]], checks: list[str], excluded: int = 0
) -> dict[str, Any]:
    """generated -> survivors after each check in order -> kept; plus failures per check (independent) and reasons,
    overall and by language and category."""

    def funnel_of(idx: list[int]) -> dict[str, Any]:
        alive = set(idx)
        steps = [{"step": "generated", "remaining": len(alive)}]
        for c, name in enumerate(checks):
            alive = {i for i in alive if verdicts[i][c].passed}
            steps.append({"step": name, "remaining": len(alive)})
        fails = {name: sum(not verdicts[i][c].passed for i in idx) for c, name in enumerate(checks)}
        return {"steps": steps, "failed_per_check": fails, "kept": len(alive)}

    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(traces):
        groups[f"{t.lang}/{t.category}"].append(i)
        groups[t.lang].append(i)
    reasons: dict[str, Counter] = {name: Counter() for name in checks}
    examples: dict[str, dict[str, str]] = {
        name: {} for name in checks
    }  # reason kind -> its first real wording
    for v_list in verdicts:
        for c, v in enumerate(v_list):
            if not v.passed:
                first = v.reason.split(";")[0]
                kind = re.sub(r"\d+", "N", first)[:90]  # counted by kind: "N% > N%" groups every share
                reasons[checks[c]][kind] += 1
                examples[checks[c]].setdefault(kind, first[:160])
    return {
        "checks": checks,
        "overall": funnel_of(list(range(len(traces)))),
        "by_group": {g: funnel_of(ix) for g, ix in sorted(groups.items())},
        "reasons": {name: dict(c.most_common(10)) for name, c in reasons.items()},
        "reason_examples": {name: {k: examples[name][k] for k in reasons[name]} for name in checks},
        "not_verified_failed_generation": excluded,
    }


def run_trace_verification(params: Params, phase: PhaseRun) -> VerifyResult:
    """Phase 03 entry point for the notebook: reads phase 02's traces, writes verdicts and SFT data."""
    records = read_traces(upstream_artifact(phase.run_dir, "trace_verification", "cot_distillation/traces"))
    judge = None
    if params.verify.llm_judge:
        judge = make_norms_judge(params.verify)
    with morphology_cache(params.verify.morphology_cache):
        result = verify_traces(records, params.verify, phase.dir, judge, params.model.reasoning_format)
    o = result.funnel["overall"]
    phase.finish(
        {
            "verified": result.verified_path,
            "verdicts": result.verdicts_path,
            "funnel": phase.dir / FUNNEL_FILE,
        },
        {"traces": o["steps"][0]["remaining"], "kept": o["kept"], "failed_per_check": o["failed_per_check"]},
    )
    return result
