"""Tables and the figure notebook 01 shows: composition next to the paper's, decontamination, the funnel."""

from __future__ import annotations

from typing import Any

from arabic_r1.reference import CATEGORY_LABELS, paper_composition_m


def composition_table(stats: dict[str, Any]):
    """Category x language tokens and shares of this pool, side by side with the paper's 372M composition."""
    import pandas as pd

    paper = paper_composition_m()
    paper_total = sum(paper.values())
    rows = []
    cats = list(dict.fromkeys(c["category"] for c in stats["cells"]))
    total = stats["tokens"] or 1
    for cat in cats:
        cells = {c["lang"]: c for c in stats["cells"] if c["category"] == cat}
        ar, en = cells.get("ar", {}).get("tokens", 0), cells.get("en", {}).get("tokens", 0)
        rows.append({
            "category": CATEGORY_LABELS.get(cat, cat),
            "ar tokens": ar, "en tokens": en, "tokens": ar + en, "share": round((ar + en) / total, 4),
            "target share": round(sum(c["target"] for c in cells.values()) / stats["token_budget"], 4),
            "paper M tokens": paper.get(cat), "paper share": round(paper[cat] / paper_total, 4) if cat in paper else None,
        })  # fmt: skip
    ar_total = sum(r["ar tokens"] for r in rows)
    rows.append({
        "category": "Total", "ar tokens": ar_total, "en tokens": total - ar_total if stats["tokens"] else 0,
        "tokens": stats["tokens"], "share": 1.0, "target share": 1.0, "paper M tokens": paper_total, "paper share": 1.0,
    })  # fmt: skip
    return pd.DataFrame(rows).set_index("category")


def cells_table(stats: dict[str, Any]):
    import pandas as pd

    cols = ["lang", "category", "target", "tokens", "items", "available_tokens", "status"]
    return pd.DataFrame([{k: c[k] for k in cols} for c in stats["cells"]])


def decontamination_table(report: dict[str, Any]):
    import pandas as pd

    rows = [
        {"benchmark": b, "items indexed": s.get("items", 0), "n-grams": s.get("ngrams", 0),
         "short questions (alone / with options)": f"{s.get('questions_whole', 0)} / {s.get('questions_with_options', 0)}",
         "whole short options": s.get("segments_whole", 0), "boilerplate n-grams dropped": s.get("ngrams_dropped_boilerplate", 0),
         "training items removed": s.get("removed", 0)}
        for b, s in report["benchmarks"].items()
    ]  # fmt: skip
    return pd.DataFrame(rows).set_index("benchmark")


def removals_table(report: dict[str, Any]):
    import pandas as pd

    return pd.DataFrame(report["removals"], columns=["id", "source", "benchmark", "item_id", "ngram"])


def funnel_table(stats: dict[str, Any]):
    """Per source: rows read, removed at each step, candidates, selected (every row accounted for)."""
    import pandas as pd

    from arabic_r1.data import STEPS

    rows = []
    for name, s in stats["sources"].items():
        rows.append({"source": name, "read": s["rows_read"], **{step: s["removed"].get(step, 0) for step in STEPS},
                     "candidates": s["candidates"], "selected": s["selected"], "accounted": s["all_rows_accounted"]})  # fmt: skip
    return pd.DataFrame(rows).set_index("source")


def plot_composition(stats: dict[str, Any]):
    """Horizontal bars: category shares of this pool (Arabic/English stacked) vs the paper's composition."""
    import matplotlib.pyplot as plt

    table = composition_table(stats).drop(index="Total")
    total = max(stats["tokens"], 1)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    y = range(len(table))
    ar = table["ar tokens"] / total
    en = table["en tokens"] / total
    ax.barh([i + 0.2 for i in y], ar, height=0.4, color="#0072B2", label="this run: Arabic")
    ax.barh([i + 0.2 for i in y], en, left=ar, height=0.4, color="#56B4E9", label="this run: English")
    ax.barh(
        [i - 0.2 for i in y], table["paper share"], height=0.4, color="#E69F00", label="paper (372M tokens)"
    )
    ax.set_yticks(list(y), table.index)
    ax.invert_yaxis()
    ax.set_xlabel("share of pool tokens")
    ax.set_title(
        f"Data composition: {stats['tokens']:,} tokens, Arabic share {stats['arabic_share']['achieved']:.1%}"
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
