"""Tables and readable renderings of teacher traces for notebooks (Arabic shown right-to-left)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from arabic_r1.cot import HEADINGS, PHASES


def read_traces(path: Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def summary_table(summary: dict[str, Any]):
    """One row per (language, category) with trace counts, plus the run's totals as a second frame."""
    import pandas as pd

    rows = [
        {"lang": lang, "category": cat, "traces": n}
        for lang, cats in summary["by_language_category"].items()
        for cat, n in cats.items()
    ]
    counts = (
        pd.DataFrame(rows).sort_values(["lang", "category"])
        if rows
        else pd.DataFrame(columns=["lang", "category", "traces"])
    )
    totals = pd.Series({
        "status": summary["status"], "items": summary["items"], "traces ok": summary["traces_ok"], "well formed": summary["well_formed"],
        "failed": summary["failed"], "not attempted": summary["not_attempted"], "requests this run": summary["requests_sent_this_run"],
        "from cache this run": summary["from_cache_this_run"], "retries": summary["retries_this_run"],
        "prompt tokens (all)": summary["tokens_all_traces"]["prompt"], "completion tokens (all)": summary["tokens_all_traces"]["completion"],
        "cost this run (USD)": summary["cost_usd_this_run"], "cost of all traces at params prices (USD)": summary["cost_usd_all_traces_at_params_prices"],
        "failures by kind": summary["failures_this_run"] or "none", "parse problems": summary["parse_problems"] or "none",
    }, name="value")  # fmt: skip
    return counts, totals.to_frame()


def render_traces(traces: list[dict[str, Any]], n: int = 3) -> str:
    """HTML for the first ``n`` traces of each language: phases labelled, Arabic right-to-left."""
    blocks = []
    for lang in ("ar", "en"):
        for t in [t for t in traces if t.get("lang") == lang and t["status"] == "ok"][:n]:
            direction = "rtl" if lang == "ar" else "ltr"
            prompt = next((m["content"] for m in t["messages"] if m["role"] == "user"), "")
            parsed = t["parsed"]
            phases = "".join(
                f"<p><b>{html.escape(HEADINGS[p][0 if lang == 'ar' else 1])}:</b> {html.escape(parsed['phases'].get(p, '— missing —'))}</p>"
                for p in PHASES
            )
            problems = ", ".join(parsed["problems"]) or "none"
            blocks.append(
                f"<div dir='{direction}' style='border:1px solid #ccc;padding:8px;margin:6px 0;text-align:{'right' if lang == 'ar' else 'left'}'>"
                f"<div style='color:#555;font-size:90%' dir='ltr'>{html.escape(t['prompt_id'])} · {t['category']} · gold {t.get('gold')} · problems: {html.escape(problems)}</div>"
                f"<p><i>{html.escape(prompt)}</i></p>{phases}<p><b>{'الإجابة' if lang == 'ar' else 'Answer'}:</b> {html.escape(str(parsed['answer']))}</p></div>"
            )  # fmt: skip
    return "".join(blocks)
