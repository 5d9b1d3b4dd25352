"""Phase 05: audit the student's own reasoning with phase 03's checks - the same code, the same thresholds.

Phase 03 keeps a teacher trace only if it is four phases in order, correct, in the prompt's language, clean in
orthography and morphology, not degenerate, and within the regional norms. The paper's claim is that a student trained
on such traces writes them too. This module runs those checks (:func:`arabic_r1.trace_checks.verify_trace`) on every
reasoning output of every evaluated model, so a report can say "the adapted model writes four-phase Arabic reasoning
in N% of ArabicMMLU answers, the base in M%" - and a broken link anywhere in data -> traces -> chat template ->
LoRA -> merge -> generation -> parser shows up as a number, not as chance-level accuracy.

Correctness is the benchmark's gold option (the document's own labels: أ-د, 1-4 or 0-3); the other checks read the
output as phase 03 reads a teacher's.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arabic_r1.arabic_text import normalized_words
from arabic_r1.benchmarks import BENCHMARKS, AnswerKind
from arabic_r1.cot import named_option, parse_trace
from arabic_r1.jsonl import write_json_atomic
from arabic_r1.params import VerifyParams
from arabic_r1.reasoning_format import ReasoningFormat, to_think_tags
from arabic_r1.trace_checks import Trace, Verdict, verify_trace

AUDIT_FILE, AUDIT_CSV = "student_audit.json", "student_audit.csv"
PARSED, FOUR_PHASE = "parsed", "four_phase"  # the two headline rates
TRUNCATED = "truncated"  # no option named because the token budget ran out: counted apart from parse failures


@dataclass(frozen=True)
class Output:
    """One generated answer to one benchmark document."""

    id: str
    benchmark: str
    text: str  # the raw output (harmony or think tags)
    gold: str | None  # the gold option's label as the document writes it
    labels: tuple[str, ...]  # the document's option labels
    lang: str = "ar"
    tokens: int | None = None  # output length in the model's tokens
    truncated: bool = False  # stopped by the token budget, not by the model


def as_trace(o: Output, fmt: ReasoningFormat) -> Trace:
    text = to_think_tags(o.text, fmt)
    return Trace(o.id, o.lang, o.benchmark, "", text, o.gold, parse_trace(text), o.labels)


def reasoning_answer(
    text: str,
    labels: list[str] | tuple[str, ...],
    fmt: ReasoningFormat = "think_tags",
    answers: AnswerKind = "labels",
) -> tuple[int | None, str | None]:
    """The option a reasoning output names after its reasoning (``</think>``, or harmony's final channel), and why
    there is none: an unclosed reasoning block is no answer (a truncated output must not be read as one).
    ``answers`` is the benchmark's kind of choices: option labels (أ, B, 1) or answer texts (صح / خطأ)."""
    parsed = parse_trace(to_think_tags(text, fmt))
    if "unclosed think block" in parsed.problems:
        return None, "unclosed think block"
    if parsed.answer is None:
        return None, "no final answer"
    choice = named_option(parsed.answer, labels) if answers == "labels" else named_text(parsed.answer, labels)
    return choice, None if choice is not None else "answer names no option"


def named_text(answer: str, choices: list[str] | tuple[str, ...]) -> int | None:
    """The choice an answer states in words, for benchmarks whose choices are texts: the choice whose folded words
    run whole inside the answer's; the longest wins ("غير صحيح" over "صحيح"), then the first stated."""
    said = f" {' '.join(normalized_words(answer))} "
    found = []
    for i, choice in enumerate(choices):
        words = normalized_words(choice)
        at = said.find(f" {' '.join(words)} ") if words else -1
        if at >= 0:
            found.append((-len(words), at, i))
    return min(found)[2] if found else None


def audit(
    outputs: Iterable[Output], vp: VerifyParams, fmt: ReasoningFormat = "think_tags"
) -> list[dict[str, Any]]:
    """Per output: every enabled phase-03 check's verdict, whether it names an option (the scoring's parse), and
    whether it is four-phase valid (that, and the structure check passed)."""
    rows = []
    for o in outputs:
        t = as_trace(o, fmt)
        verdicts = verify_trace(t, vp)
        spec = BENCHMARKS.get(o.benchmark)  # None for a teacher trace audited by its category
        answers = spec.answers if spec else "labels"
        parsed = reasoning_answer(o.text, o.labels, fmt, answers)[1] is None
        rows.append(
            {
                "id": o.id,
                "benchmark": o.benchmark,
                "tokens": o.tokens,
                "verdicts": verdicts,
                PARSED: parsed,
                TRUNCATED: o.truncated and not parsed,
                FOUR_PHASE: parsed and not t.parsed.problems,
            }
        )
    return rows


def _reason(v: Verdict) -> str:
    return re.sub(r"\d+", "N", v.reason.split(";")[0])[:90]


def summarize(rows: list[dict[str, Any]], checks: list[str], top: int = 3) -> dict[str, Any]:
    """Pass rates per check, the two headline rates, mean output tokens and the top failure reasons."""
    n = len(rows)
    out: dict[str, Any] = {"n": n}
    if not n:
        return out
    out[PARSED] = round(sum(r[PARSED] for r in rows) / n, 4)
    out[TRUNCATED] = round(sum(r[TRUNCATED] for r in rows) / n, 4)
    out[FOUR_PHASE] = round(sum(r[FOUR_PHASE] for r in rows) / n, 4)
    passes: dict[str, int] = defaultdict(int)
    reasons: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        for v in r["verdicts"]:
            passes[v.check] += v.passed
            if not v.passed:
                reasons[v.check][_reason(v)] += 1
    out["pass_rate"] = {c: round(passes[c] / n, 4) for c in checks}
    out["all_checks"] = round(sum(all(v.passed for v in r["verdicts"]) for r in rows) / n, 4)
    tokens = [r["tokens"] for r in rows if r["tokens"] is not None]
    out["mean_output_tokens"] = round(sum(tokens) / len(tokens), 1) if tokens else None
    out["top_failures"] = {c: dict(reasons[c].most_common(top)) for c in checks if reasons[c]}
    return out


def audit_models(outputs: dict[str, list[Output]], vp: VerifyParams, fmt: ReasoningFormat) -> dict[str, Any]:
    """model -> {"overall": summary, "benchmarks": {benchmark: summary}}, with the checks and thresholds used."""
    checks = list(vp.checks)
    models = {}
    for label, outs in outputs.items():
        rows = audit(outs, vp, fmt)
        by_b: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            by_b[r["benchmark"]].append(r)
        models[label] = {
            "overall": summarize(rows, checks),
            "benchmarks": {b: summarize(rs, checks) for b, rs in by_b.items()},
        }
    return {
        "checks": checks,
        "thresholds": vp.model_dump(mode="json", exclude={"judge", "llm_judge", "morphology_cache"}),
        "models": models,
    }


def write_audit(audit_result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``student_audit.json`` and a flat CSV (model x benchmark, one column per rate)."""

    write_json_atomic(out_dir / AUDIT_FILE, audit_result)
    checks = audit_result["checks"]
    fields = [
        "model",
        "benchmark",
        "n",
        PARSED,
        TRUNCATED,
        FOUR_PHASE,
        "all_checks",
        *checks,
        "mean_output_tokens",
    ]
    with (out_dir / AUDIT_CSV).open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for label, m in audit_result["models"].items():
            for b, s in [*m["benchmarks"].items(), ("all", m["overall"])]:
                if s.get("n"):
                    w.writerow(
                        {
                            "model": label,
                            "benchmark": b,
                            "n": s["n"],
                            PARSED: s[PARSED],
                            TRUNCATED: s[TRUNCATED],
                            FOUR_PHASE: s[FOUR_PHASE],
                            "all_checks": s["all_checks"],
                            **s["pass_rate"],
                            "mean_output_tokens": s["mean_output_tokens"],
                        }
                    )
    return out_dir / AUDIT_FILE, out_dir / AUDIT_CSV


# The smoke student's bars (what the CPU smoke run meets; tests/test_student.py and the GPU check hold every run to
# them): on the six multiple-choice benchmarks (>= 10 reasoning prompts each) the fine-tuned student names an option
# after its reasoning in >= 90% of its outputs (>= 75% on each benchmark) and writes the four phases in order with a
# parseable answer in >= 80%; the unadapted base does the latter in <= 10%.
MC = ("arabic_mmlu", "arabic_exams", "arabic_mmlu_ht", "madinah_qa", "aratrust", "alghafa")
BAR_PARSED, BAR_PARSED_EACH, BAR_FOUR_PHASE, BAR_BASE_FOUR_PHASE = 0.90, 0.75, 0.80, 0.10


def shortfalls(audit_result: dict[str, Any]) -> list[str]:
    """Every threshold the run misses, in words (empty: the student learned the format)."""
    ft, base = audit_result["models"]["finetuned"], audit_result["models"]["base"]
    out = [
        f"{b}: {ft['benchmarks'].get(b, {}).get('n', 0)} reasoning prompts < 10"
        for b in MC
        if ft["benchmarks"].get(b, {}).get("n", 0) < 10
    ]
    if ft["overall"]["parsed"] < BAR_PARSED:
        out.append(
            f"fine-tuned names an option in {ft['overall']['parsed']:.0%} of its outputs < {BAR_PARSED:.0%}"
        )
    out += [
        f"fine-tuned names an option in {ft['benchmarks'][b]['parsed']:.0%} of {b} < {BAR_PARSED_EACH:.0%}"
        for b in MC
        if b in ft["benchmarks"] and ft["benchmarks"][b]["parsed"] < BAR_PARSED_EACH
    ]
    if ft["overall"]["four_phase"] < BAR_FOUR_PHASE:
        out.append(
            f"fine-tuned writes four phases + an answer in {ft['overall']['four_phase']:.0%} < {BAR_FOUR_PHASE:.0%}"
        )
    if base["overall"]["four_phase"] > BAR_BASE_FOUR_PHASE:
        out.append(
            f"the base writes four phases in {base['overall']['four_phase']:.0%} > {BAR_BASE_FOUR_PHASE:.0%}"
        )
    if out:
        out.append(
            f"fine-tuned's top failures: {json.dumps(ft['overall'].get('top_failures', {}), ensure_ascii=False)}"
        )
    return out
