"""The figures of phase 06 (PDF and PNG): the OALL bars beside the paper's, the fine-tuning gains, the student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arabic_r1 import figures
from arabic_r1.jsonl import read_jsonl
from arabic_r1.report_tables import REPORTED, Run, Table


def plot_student(table: Table):
    """Per benchmark, each model's four-phase rate and its rate of answers that name an option."""
    import matplotlib.pyplot as plt

    models = [c.split(": ")[0] for c in table.columns if c.endswith(": four-phase (%)")]
    labels = [r[0] for r in table.rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    width = 0.8 / max(len(models), 1)
    panels = (
        ("names an option (the answer parses)", "parse failures (%)", lambda v: 100 - v),
        ("four phases in order + an option", "four-phase (%)", lambda v: v),
    )
    for ax, (title, column, value) in zip(axes, panels, strict=True):
        for i, m in enumerate(models):
            vals = [table.value(lb, f"{m}: {column}") for lb in labels]
            ax.bar(
                [k + i * width for k in range(len(labels))],
                [0 if v is None else value(v) for v in vals],
                width,
                label=m,
                color=figures.PALETTE[i % len(figures.PALETTE)],
            )
        ax.set_xticks(
            [k + width * (len(models) - 1) / 2 for k in range(len(labels))], labels, rotation=30, ha="right"
        )
        ax.set_ylim(0, 100)
        ax.set_title(title)
    axes[0].set_ylabel("outputs (%)")
    axes[0].legend()
    fig.suptitle("What the student writes (reasoning outputs, phase 03's checks)")
    return fig


# ----------------------------------------------------------------------------------------------- figures
def plot_oall(table: Table):
    """Grouped bars per benchmark: this run's leaderboard columns and the paper's reported columns."""
    import matplotlib.pyplot as plt

    series = [
        c
        for c in table.columns[1:]
        if not c.startswith("Δ") and c.endswith(("(leaderboard)", f"({REPORTED})"))
    ]
    labels = [r[0] for r in table.rows]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.84 / len(series)
    for i, col in enumerate(series):
        vals = [table.value(lb, col) for lb in labels]
        ax.bar(
            [k + i * width for k in range(len(labels))],
            [v or 0 for v in vals],
            width,
            label=col.replace(f" ({REPORTED})", " (paper)"),
            color=figures.PALETTE[i % len(figures.PALETTE)],
            hatch="//" if col.endswith(f"({REPORTED})") else None,
            edgecolor="white",
            linewidth=0.3,
        )
    ax.set_xticks([k + width * (len(series) - 1) / 2 for k in range(len(labels))], labels, rotation=20)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.set_title("OALL v2: this run (leaderboard scoring) vs the paper's reported numbers (hatched)")
    ax.legend(ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return fig


def plot_deltas(table: Table):
    """Fine-tuned minus base, per benchmark, for each scoring the run has."""
    import matplotlib.pyplot as plt

    cols = [c for c in table.columns if c.startswith("Δ")]
    labels = [r[0] for r in table.rows]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / max(len(cols), 1)
    for i, col in enumerate(cols):
        vals = [table.value(lb, col) for lb in labels]
        ax.bar(
            [k + i * width for k in range(len(labels))],
            [v or 0 for v in vals],
            width,
            label=col.split("(")[-1].rstrip(")") + " scoring",
            color=figures.PALETTE[i],
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks([k + width * (len(cols) - 1) / 2 for k in range(len(labels))], labels, rotation=20)
    ax.set_ylabel("fine-tuned − base (points)")
    ax.set_title("Effect of the fine-tuning per benchmark")
    if cols:
        ax.legend()
    return fig


def draw_figures(
    run: Run,
    oall: Table,
    out: Path,
    formats: list[str],
    dpi: int,
    student: Table | None = None,
    intervals: Table | None = None,
    paired: Table | None = None,
) -> dict[str, list[Path]]:
    from arabic_r1.mixture_views import plot_composition
    from arabic_r1.trace_views import plot_funnel
    from arabic_r1.train_views import plot_expert_load, plot_loss

    log_path = run.artifact("moe_lora_sft", file="train_log.jsonl")
    train_log = read_jsonl(log_path)
    makers = {
        "oall_benchmarks": lambda: plot_oall(oall),
        "oall_deltas": lambda: plot_deltas(oall),
        **({"student": lambda: plot_student(student)} if student is not None else {}),
        **({"oall_intervals": lambda: plot_intervals(intervals)} if intervals is not None else {}),
        **({"oall_forest": lambda: plot_forest(paired)} if paired is not None else {}),
        "composition": lambda: plot_composition(run.json("data_mixture", file="mixture_stats.json")),
        "funnel": lambda: plot_funnel(run.json("trace_verification", file="funnel.json")),
        "loss": lambda: plot_loss(train_log),
        "expert_load": lambda: plot_expert_load(run.json("moe_lora_sft", file="routing.json")),
    }
    out_files = {}
    with figures.style():
        for name, make in makers.items():
            out_files[name] = figures.save(make(), out / "figures" / name, formats, dpi)
    return out_files


def _interval_frame(table: Table, series: list[str], value: str) -> Any:
    """A long frame (benchmark, series, value, low, high) from a table whose series columns are each followed by
    their 95% low and high: the shape seaborn's objects interface plots."""
    import pandas as pd

    at = [(s, table.columns.index(s)) for s in series]
    rows = [
        {"benchmark": r[0], "series": s, value: r[v], "low": r[v + 1], "high": r[v + 2]}
        for r in table.rows
        for s, v in at
        if r[v] is not None
    ]
    return pd.DataFrame(rows)


def plot_intervals(table: Table):
    """Each model's score per benchmark with its 95% interval (seaborn objects: a dot and a range per model,
    dodged), one panel per scoring."""
    import matplotlib.pyplot as plt
    import seaborn.objects as so

    series = [
        c for c in table.columns[3:] if not c.endswith(("95% low", "95% high"))
    ]  # after benchmark, items, smallest subset
    df = _interval_frame(table, series, "score (%)")
    df["scoring"] = df["series"].str.extract(r"\((\w+)\)$")[0]
    df["model"] = df["series"].str.replace(r" \(\w+\)$", "", regex=True)
    fig = plt.figure(figsize=(9, 3.8))
    (
        so.Plot(df, y="benchmark", x="score (%)", xmin="low", xmax="high", color="model")
        .facet(col="scoring")
        .add(so.Range(), so.Dodge())
        .add(so.Dot(pointsize=4), so.Dodge())
        .scale(color=so.Nominal(figures.PALETTE[: df["model"].nunique()]))
        .theme(dict(plt.rcParams))  # the project's style (figures.style), not seaborn's default theme
        .limit(x=(0, 100))
        .label(title="{} scoring".format, y="")
        .on(fig)
        .plot()
    )
    fig.suptitle("OALL v2 scores with 95% bootstrap intervals (items resampled within subsets)")
    return fig


def plot_forest(table: Table):
    """Fine-tuned minus base per benchmark with its paired 95% interval: a forest plot, one row per benchmark and
    scoring, the zero line marking no effect."""
    import matplotlib.pyplot as plt
    import seaborn.objects as so

    series = [c for c in table.columns if c.startswith("Δ")]
    df = _interval_frame(table, series, "difference (points)")
    df["scoring"] = df["series"].str.extract(r"\((\w+)\)$")[0]
    fig = plt.figure(figsize=(7, 3.8))
    (
        so.Plot(df, y="benchmark", x="difference (points)", xmin="low", xmax="high", color="scoring")
        .add(so.Range(), so.Dodge())
        .add(so.Dot(pointsize=4), so.Dodge())
        .scale(color=so.Nominal(figures.PALETTE[: df["scoring"].nunique()]))
        .theme(dict(plt.rcParams))
        .label(y="", title=series[0].split(" (")[0] if series else "")
        .on(fig)
        .plot()
    )
    for ax in fig.axes:
        ax.axvline(0, color="black", linewidth=0.8)
    fig.suptitle("Paired differences with 95% intervals (a row whose interval crosses 0 is not a finding)")
    return fig
