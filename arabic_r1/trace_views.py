"""Tables and readable renderings of teacher traces for notebooks (Arabic shown right-to-left)."""

from __future__ import annotations

import html
from typing import Any

from arabic_r1.cot import (
    HEADINGS,
    PHASES,
    read_traces,  # noqa: F401 - the notebooks read traces through this module
)
from arabic_r1.figures import shape_ar
from arabic_r1.views import bidi_html, table


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
    totals = pd.Series(
        {
            "status": summary["status"],
            "items": summary["items"],
            "traces ok": summary["traces_ok"],
            "well formed": summary["well_formed"],
            "failed": summary["failed"],
            "not attempted": summary["not_attempted"],
            "requests this run": summary["requests_sent_this_run"],
            "from cache this run": summary["from_cache_this_run"],
            "retries": summary["retries_this_run"],
            "prompt tokens (all)": summary["tokens_all_traces"]["prompt"],
            "completion tokens (all)": summary["tokens_all_traces"]["completion"],
            "cost this run (USD)": summary["cost_usd_this_run"],
            "cost of all traces at params prices (USD)": summary["cost_usd_all_traces_at_params_prices"],
            "failures by kind": _counts(summary["failures_this_run"]),
            "parse problems": _counts(summary["parse_problems"]),
        },
        name="value",
    )
    return table(counts, "Traces per language and category"), table(
        totals.to_frame(), "This run's distillation"
    )


def _counts(by_kind: dict[str, int]) -> str:
    return ", ".join(f"{k}: {n}" for k, n in by_kind.items()) or "none"


def render_traces(traces: list[dict[str, Any]], n: int = 3) -> str:
    """HTML for the first ``n`` traces of each language: phases labelled, Arabic right-to-left."""
    blocks = []
    for lang in ("ar", "en"):
        for t in [t for t in traces if t.get("lang") == lang and t["status"] == "ok"][:n]:
            direction = "rtl" if lang == "ar" else "ltr"
            prompt = next((m["content"] for m in t["messages"] if m["role"] == "user"), "")
            parsed = t["parsed"]
            phases = "".join(
                f"<p><b>{html.escape(HEADINGS[p][0 if lang == 'ar' else 1])}:</b> {bidi_html(parsed['phases'].get(p, '— missing —'))}</p>"
                for p in PHASES
            )
            problems = ", ".join(parsed["problems"]) or "none"
            blocks.append(
                f"<div dir='{direction}' style='border:1px solid #ccc;padding:8px;margin:6px 0;text-align:{'right' if lang == 'ar' else 'left'}'>"
                f"<div style='color:#555;font-size:90%' dir='ltr'>{html.escape(t['prompt_id'])} · {t['category']} · {_gold(t.get('gold'))} · problems: {html.escape(problems)}</div>"
                f"<p><i>{bidi_html(prompt)}</i></p>{phases}<p><b>{'الإجابة' if lang == 'ar' else 'Answer'}:</b> {html.escape(str(parsed['answer']))}</p></div>"
            )
    return "".join(blocks)


def _gold(gold: Any) -> str:
    return "open question (no gold option)" if gold in (None, "") else f"gold option {html.escape(str(gold))}"


def funnel_frame(funnel: dict[str, Any]):
    """Rows: generated, each check (survivors after it, in order), kept; columns: all, ar, en, and failures per check."""
    import pandas as pd

    groups = {"all": funnel["overall"], **{g: f for g, f in funnel["by_group"].items() if "/" not in g}}
    rows = []
    for i, step in enumerate(funnel["overall"]["steps"]):
        row = {"step": step["step"]}
        for g, f in groups.items():
            row[f"remaining ({g})"] = f["steps"][i]["remaining"]
        row["failed this check (all)"] = funnel["overall"]["failed_per_check"].get(step["step"], "")
        rows.append(row)
    return pd.DataFrame(rows).set_index("step")


def funnel_table(funnel: dict[str, Any]):
    return table(
        funnel_frame(funnel),
        "Traces remaining after each check, in order; failures per check counted "
        "independently (a trace can fail several)",
    )


def funnel_by_category(funnel: dict[str, Any]):
    import pandas as pd

    rows = [
        {"group": g, "generated": f["steps"][0]["remaining"], **f["failed_per_check"], "kept": f["kept"]}
        for g, f in funnel["by_group"].items()
        if "/" in g
    ]
    return table(pd.DataFrame(rows).set_index("group"), "Failures per check, by language and category")


def reasons_table(funnel: dict[str, Any]):
    """Failures per check and kind of reason (numbers differ between traces), each with one trace's own words."""
    import pandas as pd

    examples = funnel.get("reason_examples", {})
    rows = [
        {"check": c, "reason (first trace of its kind)": examples.get(c, {}).get(r, r), "traces": n}
        for c, rs in funnel["reasons"].items()
        for r, n in rs.items()
    ]
    frame = pd.DataFrame(rows, columns=["check", "reason (first trace of its kind)", "traces"])
    return table(frame, "Why traces were rejected (a trace can fail several checks)")


def plot_funnel(funnel: dict[str, Any]):
    """Survivors after each check, Arabic and English stacked (colour-blind-safe palette)."""
    import matplotlib.pyplot as plt

    steps = [s["step"] for s in funnel["overall"]["steps"]]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    bottom = [0] * len(steps)
    for lang, colour in (("ar", "#0072B2"), ("en", "#E69F00")):
        if lang not in funnel["by_group"]:
            continue
        vals = [s["remaining"] for s in funnel["by_group"][lang]["steps"]]
        name = f"Arabic ({shape_ar('العربية')})" if lang == "ar" else "English"
        ax.bar(steps, vals, bottom=bottom, color=colour, label=f"{name} traces")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("traces remaining")
    ax.set_title(
        f"Verification funnel: {funnel['overall']['steps'][0]['remaining']} generated, {funnel['overall']['kept']} kept"
    )
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def render_rejections(examples: dict[str, dict[str, Any]]) -> str:
    """One rejected trace per check, with the reason, Arabic right-to-left."""
    blocks = []
    for check, ex in examples.items():
        rtl = ex["lang"] == "ar"
        blocks.append(
            f"<div style='border:1px solid #d55e00;padding:8px;margin:6px 0'><div dir='ltr'><b>{html.escape(check)}</b> · "
            f"{html.escape(ex['prompt_id'])} · {html.escape(ex['reason'])}</div>"
            f"<pre dir='{'rtl' if rtl else 'ltr'}' style='white-space:pre-wrap;text-align:{'right' if rtl else 'left'}'>"
            f"{bidi_html(ex['text'][:1500])}</pre></div>"
        )
    return "".join(blocks)
