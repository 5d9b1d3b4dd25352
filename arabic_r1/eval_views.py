"""What notebook 05 shows: base vs fine-tuned per benchmark, the per-subset breakdown, a grouped bar figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arabic_r1.benchmarks import BENCHMARKS, in_table_order
from arabic_r1.views import table

_METRIC_ORDER = ("acc_norm", "judge score", "accuracy", "parse failure", "mean of")


def scores_table(scores_csv: Path):
    """Model columns, one row per benchmark and metric, in the paper's order: the benchmarks, then the average."""
    import pandas as pd

    df = pd.read_csv(scores_csv)
    row_order = {
        b: i for i, b in enumerate([*BENCHMARKS, "average", "lighteval all"])
    }  # the registry's order
    df["order"] = df["benchmark"].map(row_order).fillna(len(row_order))
    df["metric order"] = df["metric"].map(
        lambda m: next((i for i, p in enumerate(_METRIC_ORDER) if m.startswith(p)), len(_METRIC_ORDER))
    )
    df["benchmark"] = df["benchmark"].map(lambda b: BENCHMARKS[b].title if b in BENCHMARKS else b)
    wide = df.pivot_table(
        index=["order", "metric order", "benchmark", "metric"],
        columns="model",
        values="value",
        aggfunc="first",
    ).droplevel(["order", "metric order"])
    wide.columns.name = None
    if {"base", "finetuned"} <= set(wide.columns):
        wide["finetuned − base"] = wide["finetuned"] - wide["base"]
    return table(
        wide,
        "Scores as fractions (1.0 = every item right); the judge of ALRAGE is named in scores.csv",
        max_rows=None,
    )


def subsets_table(subset_csv: Path):
    import pandas as pd

    df = pd.read_csv(subset_csv)
    wide = df.pivot_table(index="task", columns="model", values="acc_norm", aggfunc="first")
    wide.columns.name = None
    return table(
        wide, "acc_norm per subset (a benchmark's leaderboard score is the mean of its rows)", max_rows=None
    )


def plot_leaderboard(models: list[Any]):
    """Grouped bars: acc_norm per benchmark (ALRAGE: judge score), one bar per model."""
    import matplotlib.pyplot as plt

    keys = in_table_order({b for m in models for b in m.board()})
    fig, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / max(len(models), 1)
    palette = ["#0072B2", "#E69F00", "#009E73", "#CC79A7"]
    for i, m in enumerate(models):
        vals = [m.board().get(b, 0.0) for b in keys]
        ax.bar(
            [k + i * width for k in range(len(keys))],
            vals,
            width,
            label=m.label,
            color=palette[i % len(palette)],
        )
    ax.set_xticks(
        [k + width * (len(models) - 1) / 2 for k in range(len(keys))],
        [BENCHMARKS[b].title for b in keys],
        rotation=20,
    )
    ax.set_ylabel("score (acc_norm; ALRAGE: judge/10)")
    ax.set_ylim(0, 1)
    ax.set_title("OALL v2 (leaderboard scoring)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def audit_table(audit_json: Path):
    """The student audit: per model and benchmark, the headline rates and each phase-03 check's pass rate."""
    import json

    import pandas as pd

    audit = json.loads(Path(audit_json).read_text(encoding="utf-8"))
    rows = []
    for model, m in audit["models"].items():
        for b, s in [*m["benchmarks"].items(), ("all", m["overall"])]:
            if s.get("n"):
                rows.append(
                    {
                        "model": model,
                        "benchmark": BENCHMARKS[b].title if b in BENCHMARKS else b,
                        "n": s["n"],
                        "names an option": s["parsed"],
                        "cut off by the budget": s.get("truncated", 0.0),
                        "four-phase": s["four_phase"],
                        "all checks": s["all_checks"],
                        **s["pass_rate"],
                        "mean output tokens": s["mean_output_tokens"],
                    }
                )
    return table(
        pd.DataFrame(rows).set_index(["model", "benchmark"]),
        "Share of each model's reasoning outputs that pass (1.0 = all); n = outputs judged",
        max_rows=None,
    )
