"""What notebook 05 shows: base vs fine-tuned per benchmark, the per-subset breakdown, a grouped bar figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arabic_r1.benchmarks import BENCHMARKS


def scores_frame(scores_csv: Path):
    import pandas as pd

    df = pd.read_csv(scores_csv)
    table = df.pivot_table(index=["benchmark", "metric"], columns="model", values="value", aggfunc="first")
    if {"base", "finetuned"} <= set(table.columns):
        table["finetuned - base"] = table["finetuned"] - table["base"]
    return table


def subsets_frame(subset_csv: Path):
    import pandas as pd

    df = pd.read_csv(subset_csv)
    return df.pivot_table(index="task", columns="model", values="acc_norm", aggfunc="first")


def plot_leaderboard(models: list[Any]):
    """Grouped bars: acc_norm per benchmark (ALRAGE: judge score), one bar per model."""
    import matplotlib.pyplot as plt

    keys = [b for b in BENCHMARKS if any(b in m.leaderboard or (b == "alrage" and m.alrage) for m in models)]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / max(len(models), 1)
    palette = ["#0072B2", "#E69F00", "#009E73", "#CC79A7"]
    for i, m in enumerate(models):
        vals = [m.alrage["score"] if b == "alrage" and m.alrage else m.leaderboard.get(b, 0.0) for b in keys]
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


def audit_frame(audit_json: Path):
    """The student audit: per model and benchmark, the headline rates and each phase-03 check's pass rate."""
    import json

    import pandas as pd

    audit = json.loads(Path(audit_json).read_text(encoding="utf-8"))
    rows = []
    for model, m in audit["models"].items():
        for b, s in [*m["benchmarks"].items(), ("all", m["overall"])]:
            if s.get("n"):
                rows.append({"model": model, "benchmark": BENCHMARKS[b].title if b in BENCHMARKS else b, "n": s["n"],
                             "names an option": s["parsed"], "four-phase": s["four_phase"], "all checks": s["all_checks"],
                             **s["pass_rate"], "mean output tokens": s["mean_output_tokens"]})  # fmt: skip
    return pd.DataFrame(rows).set_index(["model", "benchmark"])
