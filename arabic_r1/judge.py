"""Optional LLM judge for regional norms (phase 03), through the same backends and cache as the teacher."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources

from arabic_r1.completions import complete_all
from arabic_r1.params import VerifyParams
from arabic_r1.teachers import TeacherError
from arabic_r1.trace_checks import Trace, Verdict

JUDGE_TEMPLATE = "judge_v1"
_VERDICT = re.compile(r"VERDICT\s*:\s*(PASS|FAIL)\b\s*[-–:]?\s*(.*)", re.IGNORECASE)


def judge_messages(t: Trace) -> list[dict[str, str]]:
    rubric = (
        resources.files("arabic_r1")
        .joinpath("resources", "templates", f"{JUDGE_TEMPLATE}.txt")
        .read_text(encoding="utf-8")
    )
    body = f"Question:\n{t.prompt}\n\nResponse:\n{t.raw_text}"
    return [{"role": "system", "content": rubric.strip()}, {"role": "user", "content": body}]


def parse_judgement(text: str) -> Verdict:
    """'VERDICT: PASS' / 'VERDICT: FAIL - category: reason'; anything else fails as unparseable (counted)."""
    m = _VERDICT.search(text or "")
    if m is None:
        return Verdict("llm_judge", False, f"judge output unparseable: {(text or '')[:60]!r}")
    passed = m.group(1).upper() == "PASS"
    return Verdict(
        "llm_judge", passed, "judge: pass" if passed else f"judge: {m.group(2).strip()[:120] or 'fail'}"
    )


def make_norms_judge(p: VerifyParams) -> Callable[[list[Trace]], list[Verdict]]:
    """A callable giving one verdict per trace; errors and budget stops count as failures with their kind."""
    if p.judge is None:
        raise ValueError("verify.llm_judge needs verify.judge")
    judge_params = p.judge

    def judge(traces: list[Trace]) -> list[Verdict]:
        answers = complete_all(
            judge_params, [(t.prompt_id, judge_messages(t)) for t in traces], JUDGE_TEMPLATE
        )
        out = []
        for t in traces:
            a = answers[t.prompt_id]
            out.append(
                Verdict("llm_judge", False, f"judge error ({a.kind})")
                if isinstance(a, TeacherError)
                else parse_judgement(a)
            )
        return out

    return judge
