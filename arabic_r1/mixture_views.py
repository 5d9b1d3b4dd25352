"""Tables and the figure notebook 01 shows: composition next to the paper's, decontamination, the funnel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arabic_r1.reference import CATEGORY_LABELS, paper_composition_m
from arabic_r1.views import table


def composition_frame(stats: dict[str, Any]):
    """Category x language tokens and shares (%) of this pool, side by side with the paper's 372M composition."""
    import pandas as pd

    paper = paper_composition_m()
    paper_total = sum(paper.values())
    rows = []
    cats = list(dict.fromkeys(c["category"] for c in stats["cells"]))
    total = stats["tokens"] or 1
    for cat in cats:
        cells = {c["lang"]: c for c in stats["cells"] if c["category"] == cat}
        ar, en = cells.get("ar", {}).get("tokens", 0), cells.get("en", {}).get("tokens", 0)
        rows.append(
            {
                "category": CATEGORY_LABELS.get(cat, cat),
                "ar tokens": ar,
                "en tokens": en,
                "tokens": ar + en,
                "share (%)": round(100 * (ar + en) / total, 2),
                "target (%)": round(
                    100 * sum(c["target"] for c in cells.values()) / stats["token_budget"], 2
                ),
                "paper tokens (M)": paper.get(cat),
                "paper share (%)": round(100 * paper[cat] / paper_total, 2) if cat in paper else None,
            }
        )
    ar_total = sum(r["ar tokens"] for r in rows)
    rows.append(
        {
            "category": "Total",
            "ar tokens": ar_total,
            "en tokens": total - ar_total if stats["tokens"] else 0,
            "tokens": stats["tokens"],
            "share (%)": 100.0,
            "target (%)": 100.0,
            "paper tokens (M)": paper_total,
            "paper share (%)": 100.0,
        }
    )
    return pd.DataFrame(rows).set_index("category")


def composition_note(frame: Any) -> str:
    """Why this pool's shares may differ from the paper's: they follow the profile's targets, not the paper."""
    body = frame.drop(index="Total")
    gap = (body["target (%)"] - body["paper share (%)"]).abs().max()
    note = "share: this pool's tokens (student tokenizer); target: data.category_shares of this profile."
    if gap > 1:
        note += (
            f" This profile's targets are not the paper's shares (up to {gap:.0f} points apart), so 'share' "
            "follows 'target', not 'paper share'."
        )
    return note


def composition_table(stats: dict[str, Any]):
    frame = composition_frame(stats)
    return table(frame, composition_note(frame), formats={c: "{:.1f}" for c in frame.columns if "(" in c})


def cells_table(stats: dict[str, Any]):
    import pandas as pd

    cols = ["lang", "category", "target", "tokens", "items", "available_tokens", "status"]
    frame = pd.DataFrame([{k: c[k] for k in cols} for c in stats["cells"]]).rename(
        columns={"target": "target tokens", "available_tokens": "available tokens"}
    )
    return table(
        frame, "Each (language, category) cell of the budget: target, selected, what the sources had"
    )


def decontamination_table(report: dict[str, Any]):
    import pandas as pd

    rows = [
        {
            "benchmark": b,
            "items indexed": s.get("items", 0),
            "n-grams": s.get("ngrams", 0),
            "short questions (alone / with options)": f"{s.get('questions_whole', 0)} / {s.get('questions_with_options', 0)}",
            "whole short options": s.get("segments_whole", 0),
            "boilerplate n-grams dropped": s.get("ngrams_dropped_boilerplate", 0),
            "training items removed": s.get("removed", 0),
        }
        for b, s in report["benchmarks"].items()
    ]
    return table(pd.DataFrame(rows).set_index("benchmark"), "The decontamination index, per OALL benchmark")


def removals_table(report: dict[str, Any]):
    import pandas as pd

    frame = pd.DataFrame(report["removals"], columns=["id", "source", "benchmark", "item_id", "ngram"])
    return table(
        frame, "Training rows removed as benchmark overlaps, with the benchmark item and shared n-gram"
    )


def funnel_table(stats: dict[str, Any]):
    """Per source: rows read, removed at each step, candidates, selected (every row accounted for)."""
    import pandas as pd

    rows = []
    for name, s in stats["sources"].items():
        rows.append(
            {
                "source": name,
                "read": s["rows_read"],
                **{step: s["removed"].get(step, 0) for step in stats["steps"]},
                "candidates": s["candidates"],
                "selected": s["selected"],
                "accounted": s["all_rows_accounted"],
            }
        )
    return table(
        pd.DataFrame(rows).set_index("source"), "Rows per source: read, removed at each step, selected"
    )


def dedup_table(dedup: dict[str, Any]):
    """Removed duplicates next to the row that was kept (near duplicates: with their MinHash cluster)."""
    import pandas as pd

    rows = [
        {"kind": kind, **{k: d.get(k) for k in ("id", "kept", "cluster")}, "text": _short(d.get("text", ""))}
        for kind in ("exact", "near")
        for d in dedup[kind]["items"]
    ]
    frame = pd.DataFrame(rows, columns=["kind", "id", "kept", "cluster", "text"])
    frame["cluster"] = frame["cluster"].astype("Int64")
    return table(
        frame,
        f"Duplicates removed: {dedup['exact']['removed']} exact, {dedup['near']['removed']} near "
        "(all in dedup_report.json)",
        max_rows=20,
    )


def pool_sample(pool_path: Path):
    """One selected item per (language, category) cell, its text shortened."""
    import pandas as pd

    pool = pd.read_json(pool_path, lines=True)
    frame = pool.groupby(["lang", "category"]).head(1)[
        ["id", "lang", "category", "n_tokens", "answer", "text"]
    ]
    frame = frame.assign(text=frame["text"].map(_short)).reset_index(drop=True)
    return table(
        frame, "One pool item per (language, category) cell; answer: the gold option, where the item has one"
    )


def _short(text: str, n: int = 140) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def plot_composition(stats: dict[str, Any]):
    """Horizontal bars: category shares of this pool (Arabic/English stacked) vs the paper's composition."""
    import matplotlib.pyplot as plt

    frame = composition_frame(stats).drop(index="Total")
    total = max(stats["tokens"], 1)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    y = range(len(frame))
    ar = frame["ar tokens"] / total
    en = frame["en tokens"] / total
    ax.barh([i + 0.2 for i in y], ar, height=0.4, color="#0072B2", label="this run: Arabic")
    ax.barh([i + 0.2 for i in y], en, left=ar, height=0.4, color="#56B4E9", label="this run: English")
    ax.barh(
        [i - 0.2 for i in y],
        frame["paper share (%)"] / 100,
        height=0.4,
        color="#E69F00",
        label="paper (372M tokens)",
    )
    ax.set_yticks(list(y), frame.index)
    ax.invert_yaxis()
    ax.set_xlabel("share of pool tokens")
    ax.set_title(
        f"Data composition: {stats['tokens']:,} tokens, Arabic share {stats['arabic_share']['achieved']:.1%}"
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
