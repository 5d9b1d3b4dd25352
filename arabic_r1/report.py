"""Phase 06: a finished run as the paper's tables and figures, with this run's numbers next to the paper's.

Every table is built from run artifacts (named in the table's ``sources`` and in report.md's provenance block) and
written as Markdown, LaTeX (booktabs) and CSV. A number the run did not produce is ``None``: rendered "—" (LaTeX
"---", CSV empty), never invented. The paper's numbers are labelled "reported in the paper" wherever they appear.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arabic_r1 import figures
from arabic_r1.benchmarks import BENCHMARKS, average, counted_in_average, in_table_order, spec
from arabic_r1.code_digest import code_digests
from arabic_r1.digests import file_digest, json_digest
from arabic_r1.errors import ExplainedError
from arabic_r1.jsonl import read_jsonl
from arabic_r1.manifest import PhaseRun, completed_manifest, git_commit
from arabic_r1.params import Params
from arabic_r1.phases import PHASES, find_phase
from arabic_r1.reference import paper_table1

MISSING = "—"
REPORTED = "reported in the paper"
_ARABIC = re.compile(
    r"[\u0600-\u06FF\u0750-\u077F\uFB50-\uFDFF\uFE70-\uFEFF]+(?:\s+[\u0600-\u06FF\uFB50-\uFEFF]+)*"
)


class ReportError(ExplainedError, ValueError):
    """A run artifact the report needs is missing or unreadable."""


# ---------------------------------------------------------------------------------------------- tables
@dataclass
class Table:
    name: str  # file stem
    title: str
    columns: list[str]  # the first column holds the row labels
    rows: list[list[Any]]
    sources: list[Path] = field(default_factory=list)  # the run artifacts the numbers come from
    notes: list[str] = field(default_factory=list)
    decimals: int = 2
    # Markdown only: (subtitle, first column) of each part, shown as its own table with the row labels, so that a
    # wide table (Table 1: this run's columns, then the paper's) fits a screen. TeX and CSV keep one table.
    parts: tuple[tuple[str, int], ...] = ()

    def cell(self, v: Any, missing: str = MISSING) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return missing
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:.{self.decimals}f}"
        return str(v)

    def markdown(self) -> str:
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        starts = [*self.parts] or [("", 1)]
        blocks = []
        for (subtitle, a), (_, b) in zip(starts, [*starts[1:], ("", len(self.columns))], strict=True):
            cols = [0, *range(a, b)]
            lines = [f"*{subtitle}*\n"] if subtitle else []
            lines += [
                "| " + " | ".join(esc(self.columns[c]) for c in cols) + " |",
                "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|",
            ]
            lines += ["| " + " | ".join(esc(self.cell(row[c])) for c in cols) + " |" for row in self.rows]
            blocks.append("\n".join(lines))
        notes = "".join(f"\n\n{n}" for n in self.notes)
        return f"**{self.title}**\n\n" + "\n\n".join(blocks) + notes + "\n"

    def latex(self) -> str:
        """A booktabs table; Arabic runs in ``\\textarabic{}`` (XeLaTeX + polyglossia, as the header says)."""
        spec = "l" + "r" * (len(self.columns) - 1)
        head = " & ".join(tex(c) for c in self.columns) + r" \\"
        body = "\n".join(" & ".join(tex(self.cell(v, "---")) for v in row) + r" \\" for row in self.rows)
        notes = "".join(f"\n\\par\\footnotesize {tex(n)}" for n in self.notes)
        return (
            "% needs \\usepackage{booktabs,graphicx}; Arabic text: XeLaTeX with polyglossia (\\setotherlanguage{arabic})\n"
            f"\\begin{{table}}[t]\n\\centering\n\\caption{{{tex(self.title)}}}\n\\label{{tab:{self.name}}}\n"
            "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
            f"\\begin{{tabular}}{{{spec}}}\n\\toprule\n{head}\n\\midrule\n{body}\n\\bottomrule\n\\end{{tabular}}}}"
            f"{notes}\n\\end{{table}}\n"
        )

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for row in self.rows:
            w.writerow(["" if v is None else round(v, 6) if isinstance(v, float) else v for v in row])
        return buf.getvalue()

    def value(self, row_label: str, column: str) -> Any:
        """The raw value at (row, column): what the tests recompute."""
        row = next(r for r in self.rows if r[0] == row_label)
        return row[self.columns.index(column)]


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "−": "$-$", "<": r"\textless{}", ">": r"\textgreater{}", "Δ": r"$\Delta$", "→": r"$\rightarrow$", "×": r"$\times$", "—": "---"}  # fmt: skip


def tex(text: str) -> str:
    """LaTeX-escaped text; Arabic runs wrapped for polyglossia."""
    out = "".join(_TEX_SPECIAL.get(c, c) for c in str(text))
    return _ARABIC.sub(lambda m: r"\textarabic{" + m.group(0) + "}", out)


def frame_table(
    df, name: str, title: str, sources: list[Path], notes: list[str] | None = None, **kw
) -> Table:
    """A pandas frame (the notebooks' views) as a report table: same numbers in the notebook and the paper."""
    df = df.reset_index()
    rows = [[None if _isna(v) else _plain(v) for v in r] for r in df.itertuples(index=False)]
    return Table(name, title, [str(c) for c in df.columns], rows, sources, notes or [], **kw)


def _isna(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or v == ""


def _plain(v: Any) -> Any:
    """numpy scalars -> Python, so formatting is the same for every source."""
    return v.item() if hasattr(v, "item") else v


# ------------------------------------------------------------------------------------------ run access
@dataclass
class Run:
    """A finished run folder: manifests and artifacts of phases 00-05."""

    dir: Path
    manifests: dict[str, dict[str, Any]]

    @classmethod
    def open(cls, run_dir: Path) -> Run:
        manifests = {p.name: m for p in PHASES if (m := completed_manifest(run_dir, p)) is not None}
        return cls(Path(run_dir), manifests)

    def artifact(self, phase: str, output: str | None = None, file: str | None = None) -> Path:
        """A phase output by its manifest name (or a file in the phase folder); errors name what is missing."""
        m = self.manifests.get(phase)
        slug = find_phase(phase).slug
        if m is None:
            raise ReportError(
                f"phase {slug} has not completed in {self.dir}: run it first (arabic-r1 run {slug[:2]})"
            )
        if output is not None:
            if output not in m.get("outputs", {}):
                raise ReportError(f"{slug}/manifest.json lists no output {output!r}")
            return self.dir / m["outputs"][output]["path"]
        path = self.dir / slug / file
        if not path.exists():
            raise ReportError(f"{path} not found (written by phase {slug})")
        return path

    def json(self, phase: str, output: str | None = None, file: str | None = None) -> Any:
        path = self.artifact(phase, output, file)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ReportError(f"{path}: not valid JSON ({exc})") from None


# ------------------------------------------------------------------------------------------------ OALL
_NUMBER_WORDS = {7: "seven"}  # how the notes name the leaderboard's size


def read_scores(path: Path) -> dict[tuple[str, str, str], float]:
    """scores.csv as {(model, benchmark, kind): value in [0, 1]}, kind = leaderboard | reasoning | parse_failure."""
    out = {}
    with path.open(encoding="utf-8") as f:
        for r in csv.DictReader(f):
            metric = r["metric"]
            kind = (
                "leaderboard"
                if metric.startswith(("acc_norm", "judge score"))
                else "reasoning"
                if metric.startswith("accuracy (reasoning")
                else "parse_failure"
                if metric.startswith("parse failure")
                else None
            )
            if kind and r["benchmark"] in BENCHMARKS:
                out[(r["model"], r["benchmark"], kind)] = float(r["value"])
    return out


def oall_table(run: Run) -> Table:
    """Table 1: the benchmarks (the paper's, and any other this run scored) + the leaderboard average, this run's
    models and the paper's columns (percent)."""
    path = run.artifact("oall_evaluation", "scores")
    scores = read_scores(path)
    models = list(dict.fromkeys(m for m, _, _ in scores))
    cols: list[tuple[str, str, str]] = []  # (header, model, kind)
    for kind, label in (("leaderboard", "leaderboard"), ("reasoning", "reasoning")):
        for m in models:
            if any(k == (m, b, kind) for k in scores for b in BENCHMARKS):
                cols.append((f"{m} ({label})", m, kind))
    shown = [b for b in BENCHMARKS if spec(b).paper_title or any(k[1] == b for k in scores)]
    counted = counted_in_average(
        BENCHMARKS
    )  # the paper's average is over the whole leaderboard, or it is missing
    per_col: dict[str, list[float | None]] = {}
    for header, m, kind in cols:
        # a judged benchmark (ALRAGE) is generated and judged under both scorings: the same judge score
        vals = {b: scores.get((m, b, "leaderboard" if spec(b).scoring == "judged" else kind)) for b in shown}
        mean = average(vals, counted)
        per_col[header] = [None if v is None else 100 * v for v in (*vals.values(), mean)]
    deltas = {}
    for kind in ("leaderboard", "reasoning"):
        base, ft = per_col.get(f"base ({kind})"), per_col.get(f"finetuned ({kind})")
        if base and ft:
            deltas[f"Δ fine-tuned − base ({kind})"] = [
                None if a is None or b is None else b - a for a, b in zip(base, ft, strict=True)
            ]
    paper = paper_table1()
    paper_cols = [c for c in paper["columns"] if c != "OALL category leader model"]
    columns = [
        "benchmark",
        *per_col,
        *deltas,
        *(f"{c} ({REPORTED})" for c in paper_cols),
        "OALL category leader model",
    ]
    rows = []
    for i, b in enumerate([*shown, "average"]):
        title = "Average" if b == "average" else spec(b).title
        ref = (
            paper["rows"]["Average" if b == "average" else spec(b).paper_title]
            if b == "average" or spec(b).paper_title
            else {}
        )
        rows.append(
            [
                title,
                *(v[i] for v in per_col.values()),
                *(v[i] for v in deltas.values()),
                *(ref.get(c) for c in paper_cols),
                ref.get("OALL category leader model"),
            ]
        )
    notes = [
        "Scores in percent. Leaderboard scoring: lighteval's normalised log-likelihood accuracy, a benchmark's score "
        "being the mean over its subsets; reasoning scoring: the answer parsed after the closing think tag. ALRAGE: LLM-judge "
        "score /10 (the same number under both scorings; judge named in scores.csv). Average: mean of the "
        f"{_NUMBER_WORDS.get(len(counted), len(counted))} leaderboard rows, or — when one is missing.",
        f"Columns marked '{REPORTED}' are the paper's Table 1 (its own model scored by parsing the answer after its reasoning; the "
        "open baselines by log-likelihood); the category leader's Average is the average leader's, not the column mean.",
    ]
    parts = (("This run", 1), (f"The paper's Table 1 ({REPORTED})", 1 + len(per_col) + len(deltas)))
    return Table("oall_table1", "OALL v2 results (Table 1)", columns, rows, [path], notes, parts=parts)


# ---------------------------------------------------------------------------------- data, funnel, train
def composition_table(run: Run) -> Table:
    from arabic_r1.mixture_views import composition_frame, composition_note

    path = run.artifact("data_mixture", file="mixture_stats.json")
    stats = run.json("data_mixture", file="mixture_stats.json")
    notes = [
        f"Arabic share of the pool: {stats['arabic_share']['achieved']:.1%} (target "
        f"{stats['arabic_share']['target']:.0%}); paper columns: the 372M-token supervision set, {REPORTED}."
    ]
    frame = composition_frame(stats)
    return frame_table(
        frame,
        "composition",
        "Data composition: category × language tokens",
        [path],
        [composition_note(frame), *notes],
        decimals=1,
    )


def cleaning_table(run: Run) -> Table:
    """Rows removed at each cleaning step, by language; then the decontamination index per benchmark."""
    path = run.artifact("data_mixture", file="mixture_stats.json")
    stats = run.json("data_mixture", file="mixture_stats.json")
    langs = sorted({s["lang"] for s in stats["sources"].values()})
    sums = lambda f: [sum(f(s) for s in stats["sources"].values() if s["lang"] == lg) for lg in langs]  # noqa: E731
    rows = [["rows read", *sums(lambda s: s["rows_read"])]]
    rows += [
        [f"removed: {step.replace('_', ' ')}", *sums(lambda s, st=step: s["removed"].get(st, 0))]
        for step in stats["steps"]
    ]
    rows += [
        ["candidates", *sums(lambda s: s["candidates"])],
        ["selected (in budget)", *sums(lambda s: s["selected"])],
    ]
    rows = [[r[0], *r[1:], sum(r[1:])] for r in rows]
    decont = run.json("data_mixture", file="decontamination_report.json")
    dpath = run.artifact("data_mixture", file="decontamination_report.json")
    notes = [
        "Decontamination against the seven OALL benchmarks (items indexed → training rows removed): "
        + ", ".join(
            f"{BENCHMARKS[b].title} {s.get('items', 0)} → {s.get('removed', 0)}"
            for b, s in decont["benchmarks"].items()
            if b in BENCHMARKS
        )
    ]
    return Table(
        "cleaning",
        "Cleaning, deduplication and decontamination (rows)",
        ["step", *langs, "total"],
        rows,
        [path, dpath],
        notes,
    )


def funnel_table(run: Run) -> Table:
    from arabic_r1.trace_views import funnel_frame as frame

    path = run.artifact("trace_verification", file="funnel.json")
    funnel = run.json("trace_verification", file="funnel.json")
    summary = run.json("cot_distillation", file="distill_summary.json")
    t = frame_table(
        frame(funnel),
        "distillation_funnel",
        "Distillation funnel: traces remaining after each check",
        [run.artifact("cot_distillation", file="distill_summary.json"), path],
    )
    t.notes.append(
        f"Teacher {summary['teacher']} ({summary['backend']}): {summary['items']} pool items, "
        f"{summary['traces_ok']} traces returned, {funnel['overall']['kept']} kept for SFT."
    )
    return t


def training_table(run: Run, params: Params) -> Table:
    path = run.artifact("moe_lora_sft", file="train_summary.json")
    s = run.json("moe_lora_sft", file="train_summary.json")
    env = run.manifests.get("environment", {})
    backbone = params.model.name_or_path
    pretrain = None
    if params.model.is_embedded:
        backbone = (
            f"embedded tiny MoE ({env.get('metrics', {}).get('base_model_parameters', 0):,} parameters)"
        )
        built = run.json("environment", file="env.json").get("base_model", {}).get("embedded", {})
        pretrain = built.get("pretrain")
    lora = s["lora"]
    rows = [
        ["backbone", backbone],
        ["backend / precision", f"{s['backend']} / {s['precision']}"],
        ["LoRA r / alpha / dropout", f"{lora['r']} / {lora['alpha']:g} / {lora['dropout']:g}"],
        ["LoRA targets", ", ".join(lora["targets"])],
        ["router trained", lora["train_router"]],
    ]
    rows += [
        [f"trainable parameters: {fam.replace('_', ' ')}", n]
        for fam, n in s["trainable_parameters"].items()
        if n
    ]
    if pretrain:
        rows.append(
            [
                "backbone pre-training (plain text, full parameters)",
                f"{pretrain['steps']} steps on "
                f"{pretrain['corpus_tokens']:,} tokens, loss {pretrain['first_loss']:.3f} → {pretrain['last_loss']:.3f}",
            ]
        )
    rows += [
        ["optimizer steps", s["steps"]],
        ["training examples", s["examples"]],
        ["tokens seen", s["tokens"]],
        ["loss first → last", f"{s['first_loss']:.3f} → {s['last_loss']:.3f}"],
        *(
            [["loss, median of the last 10% of steps", f"{s['final_loss_median']:.3f}"]]
            if s.get("final_loss_median") is not None
            else []
        ),
        ["training wall time (s)", round(s["train_seconds"])],
        ["peak memory (MB)", round(s["peak_memory_mb"])],
    ]
    return Table(
        "training",
        "Training summary (MoE LoRA SFT)",
        ["item", "value"],
        rows,
        [path, run.artifact("moe_lora_sft", file="coverage.json")],
    )


# ----------------------------------------------------------------------------------------------- student
STUDENT_METRICS = (  # (column, value of one audit summary): what the student writes, per benchmark
    ("parse failures (%)", lambda s: 100 * (1 - s["parsed"] - s.get("truncated", 0))),
    ("truncated (%)", lambda s: 100 * s.get("truncated", 0)),
    ("four-phase (%)", lambda s: 100 * s["four_phase"]),
    ("Arabic language (%)", lambda s: _pct(s["pass_rate"].get("language"))),
    ("norms (%)", lambda s: _pct(s["pass_rate"].get("norms"))),
    ("mean output tokens", lambda s: s.get("mean_output_tokens")),
)


def _pct(v: float | None) -> float | None:
    return None if v is None else 100 * v


def student_table(run: Run) -> Table:
    """What the student learned: phase 03's checks on each model's own reasoning outputs, per benchmark."""
    path = run.artifact("oall_evaluation", "student_audit")
    audit = run.json("oall_evaluation", "student_audit")
    models = list(audit["models"])
    benches = in_table_order({b for m in audit["models"].values() for b in m["benchmarks"]})
    columns = ["benchmark", *(f"{m}: {name}" for name, _ in STUDENT_METRICS for m in models)]
    rows = []
    for b in [*benches, "all"]:
        cells = []
        for _, value in STUDENT_METRICS:
            for m in models:
                summary = (
                    audit["models"][m]["overall"] if b == "all" else audit["models"][m]["benchmarks"].get(b)
                )
                cells.append(value(summary) if summary and summary.get("n") else None)
        rows.append(["All benchmarks" if b == "all" else BENCHMARKS[b].title, *cells])
    notes = [
        "Every reasoning output through phase 03's checks, same code and thresholds: *parse failure* = no option named "
        "after the closing think tag in an output the model ended itself; *truncated* = cut off by the token budget "
        "(eval.reasoning_max_new_tokens) before naming one; *four-phase* = Analysis, Elimination, Linguistic "
        "check and Synthesis in order in one closed think block, and an option named after it; *Arabic language* and "
        "*norms* = those checks passed. Per model and benchmark, with the top failure reasons, in "
        "05_oall_evaluation/student_audit.json."
    ]
    half = (
        1 + len(models) * 3
    )  # parse failures, truncated and four-phase first; language, norms and length after
    return Table(
        "student",
        "What the student learned: the reasoning it writes",
        columns,
        rows,
        [path],
        notes,
        decimals=1,
        parts=(("Format: the answer and the four phases", 1), ("Language, norms, length", half)),
    )


def student_samples(run: Run, chars: int = 420) -> list[tuple[str, str, str]]:
    """(model, prompt, output) for the first document every model answered: one short sample per model."""
    outs = {}
    for label in run.json("oall_evaluation", "student_audit")["models"]:
        path = run.artifact("oall_evaluation", file=f"reasoning_{label}.jsonl")
        outs[label] = read_jsonl(path)
    first = next(iter(outs.values()))[0]
    samples = []
    for label, rows in outs.items():
        row = next((r for r in rows if r["task"] == first["task"] and r["id"] == first["id"]), rows[0])
        text = row["output"] if len(row["output"]) <= chars else row["output"][:chars] + " …"
        samples.append((label, row.get("query", ""), text))
    return samples


def samples_markdown(samples: list[tuple[str, str, str]]) -> str:
    """Fenced blocks: the think tags stay visible, and the browser lays the Arabic out right to left."""
    parts = []
    if samples and samples[0][1]:
        parts += [
            "The prompt (lighteval's, through the chat template):",
            "",
            "```text",
            samples[0][1].strip(),
            "```",
            "",
        ]
    for label, _, text in samples:
        parts += [f"**{label}**:", "", "```text", text.strip(), "```", ""]
    return "\n".join(parts)


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


# ------------------------------------------------------------------------------------------------ sweeps
def compare_runs(run_dirs: Sequence[Path], overrides: dict[str, Sequence[str]] | None = None) -> Table:
    """One row per run: what it changed, the fine-tuned model per benchmark (leaderboard scoring, percent), the mean
    over the benchmarks it evaluated, the gain over its base model, and its training loss."""
    overrides = overrides or {}
    rows, sources, benches = [], [], []
    runs = [Run.open(Path(d)) for d in run_dirs]
    per_run = []
    for run in runs:
        path = run.artifact("oall_evaluation", "scores")
        scores = read_scores(path)
        summary = run.json("moe_lora_sft", file="train_summary.json")
        sources += [path, run.artifact("moe_lora_sft", file="train_summary.json")]
        per_run.append((run, scores, summary))
        benches += [b for (m, b, k) in scores if k == "leaderboard" and b not in benches]
    benches = in_table_order(benches)
    counted = counted_in_average(benches)

    def mean(scores: dict, model: str) -> float | None:
        value = average({b: scores.get((model, b, "leaderboard")) for b in benches}, benches)
        return None if value is None else 100 * value

    for run, scores, summary in per_run:
        ft, base = mean(scores, "finetuned"), mean(scores, "base")
        lora = summary["lora"]
        rows.append(
            [
                run.dir.name,
                " ".join(overrides.get(run.dir.name, [])) or "—",
                f"{lora['r']} / {lora['alpha']:g}",
                *(
                    None if (v := scores.get(("finetuned", b, "leaderboard"))) is None else 100 * v
                    for b in benches
                ),
                ft,
                None if ft is None or base is None else ft - base,
                summary["last_loss"],
            ]
        )
    columns = [
        "run",
        "overrides",
        "LoRA r / alpha",
        *(BENCHMARKS[b].title for b in benches),
        f"mean of {len(counted)}",
        "Δ vs base (mean)",
        "final loss",
    ]
    leaderboard = counted_in_average(BENCHMARKS)
    over = (
        f"the paper's {_NUMBER_WORDS.get(len(leaderboard), len(leaderboard))} benchmarks"
        if counted == leaderboard
        else f"the {len(counted)} leaderboard benchmarks these runs evaluated, not the paper's {len(leaderboard)}"
    )
    notes = [
        "Fine-tuned model, leaderboard scoring (normalised log-likelihood accuracy, mean over subsets), percent. "
        f"The mean is over {over}."
    ]
    return Table("sweep", "Sweep: fine-tuned models side by side", columns, rows, sources, notes)


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
    run: Run, oall: Table, out: Path, formats: list[str], dpi: int, student: Table | None = None
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


# ------------------------------------------------------------------------------------------- report.md
def student_statement(params: Params, student: Table) -> str:
    """The headline in words: how often each model writes the four phases and names an option."""
    models = [c.split(": ")[0] for c in student.columns if c.endswith(": four-phase (%)")]
    said = [
        f"{m} writes the four phases in order with a parseable answer in "
        f"{student.value('All benchmarks', f'{m}: four-phase (%)'):.0f}% of its reasoning outputs and names an option in "
        f"{100 - student.value('All benchmarks', f'{m}: parse failures (%)'):.0f}%"
        for m in models
    ]
    text = "; ".join(said) + "."
    if params.model.is_embedded:
        text += (
            " The embedded student knows no facts, so its *accuracy* is at chance by construction: this section, not "
            "the accuracy columns of Table 1, is what shows that the trace format travelled from teacher to student."
        )
    return text + "\n"


def profile_statement(params: Params, run: Run) -> str:
    if params.model.is_embedded:
        n = run.manifests.get("environment", {}).get("metrics", {}).get("base_model_parameters", 0)
        return (
            f"This is the **{params.profile}** profile: it trains a {n / 1e6:.1f}M-parameter sparse MoE (the embedded "
            "backbone, pre-trained for a few hundred steps on the package's plain text) on a small pool, with a "
            "hand-written teacher cache replayed offline. Its accuracies are at chance by construction: they exist to "
            "prove the machinery, end to end, on a CPU, in minutes; what the student learned is the trace format "
            f"(below). The paper's numbers stand next to them, always labelled '{REPORTED}'."
        )
    return (
        f"This is the **{params.profile}** profile: backbone `{params.model.name_or_path}`, teacher "
        f"`{params.distill.teacher}`, token budget {params.data.token_budget:,}."
    )


def _code_summary(code: dict[str, str] | None) -> str:
    """One digest of the files a phase's result was keyed on (manifest ``key.code``), and how many they were."""
    if not code:
        return MISSING
    digest = json_digest(code, length=12)
    return f"`{digest}` ({len(code)} files)"


def provenance(params: Params, run: Run, tables: list[Table], started: float) -> str:
    run_code = code_digests(find_phase("paper_report").slug)
    env = run.manifests.get("environment", {})
    rel = params.shown  # a committed report names no folder of this machine
    commit, commit_00 = git_commit(params.base_dir) or "none (not a git checkout)", env.get("git_commit")
    src = params.source_file
    lines = [
        "## Provenance",
        "",
        f"- run folder: `{rel(run.dir)}`",
        f"- git commit: `{commit}`"
        + (f" (phase 00 ran at `{commit_00}`)" if commit_00 and commit_00 != commit else ""),
        f"- params file: `{rel(src) if src else 'inline'}`"
        + (f" (sha256 {file_digest(src)[:16]})" if src else "")
        + f", overrides: {', '.join(params.overrides) or 'none'}",
        "- device: "
        + ", ".join(f"{k} {v}" for k, v in env.get("device", {}).items() if k != "torch_threads"),
        "- torch threads by phase (CPU results depend on them): "
        + (
            ", ".join(
                f"{p.slug[:2]} {m['device']['torch_threads']}"
                for p in PHASES
                if (m := run.manifests.get(p.name)) and "torch_threads" in m.get("device", {})
            )
            or MISSING
        ),
        "- packages: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()),
        "",
        "| phase | wall time (s) | peak RSS (MB) | finished | code (notebook + modules) |",
        "|---|---:|---:|---|---|",
    ]
    total, peak = 0.0, 0.0
    for p in PHASES:
        m = run.manifests.get(p.name)
        if m is None:
            continue
        rss = max(m.get("peak_memory_mb", {}).values(), default=0.0)
        total, peak = total + m.get("duration_s", 0.0), max(peak, rss)
        lines.append(
            f"| {p.slug} | {m.get('duration_s', 0):.1f} | {rss:.0f} | {m.get('finished_at', '')} | "
            f"{_code_summary(m.get('key', {}).get('code'))} |"
        )
    own = time.monotonic() - started
    lines.append(f"| 06_paper_report (this report, so far) | {own:.1f} | — | — | {_code_summary(run_code)} |")
    lines += [
        "",
        f"Each phase timed by itself, from its first line of work to its manifest: **{total + own:.0f} s** "
        f"in all, no phase's kernel above **{peak:.0f} MB** of resident memory. The Budget above is the "
        "runner's wall clock for the whole reproduce, so it also counts starting each notebook's kernel and "
        "importing torch, transformers and lighteval; a phase reused from an earlier run keeps that run's "
        "time here. *code*: one digest of the phase's notebook code cells and every package module they "
        "import (each file's digest is in its manifest, key.code); a phase re-runs when one of them changes.",
        "",
        "Each table and the run artifacts it was computed from (sha256):",
        "",
    ]
    for t in tables:
        srcs = ", ".join(f"`{s.relative_to(run.dir)}` ({file_digest(s)[:12]})" for s in t.sources)
        lines.append(f"- {t.title}: {srcs}")
    return "\n".join(lines) + "\n"


@dataclass
class ReportResult:
    out_dir: Path
    tables: list[Table]
    figures: dict[str, list[Path]]
    report_md: Path


def build_report(params: Params, run_dir: Path, out_dir: Path, started: float | None = None) -> ReportResult:
    """Tables (md/tex/csv), figures (png/pdf) and report.md for a finished run, into ``out_dir``."""
    started = time.monotonic() if started is None else started
    run = Run.open(run_dir)
    rp = params.report
    oall = oall_table(run)
    audited = "student_audit" in run.manifests.get("oall_evaluation", {}).get("outputs", {})
    student = student_table(run) if audited else None
    tables = [
        oall,
        composition_table(run),
        cleaning_table(run),
        funnel_table(run),
        training_table(run, params),
        *([student] if student is not None else []),
    ]
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    render = {"md": Table.markdown, "tex": Table.latex, "csv": Table.csv}
    for t in tables:
        for fmt in rp.formats:
            (out_dir / "tables" / f"{t.name}.{fmt}").write_text(render[fmt](t), encoding="utf-8")
    figs = draw_figures(run, oall, out_dir, rp.figure_formats, rp.dpi, student)
    png = {k: next((p for p in v if p.suffix == ".png"), v[0]) for k, v in figs.items()}
    img = lambda k, alt: f"![{alt}]({png[k].relative_to(out_dir)})\n"  # noqa: E731
    parts = [
        f"# Arabic-DeepSeek-R1 reproduction: {params.profile} profile\n",
        profile_statement(params, run) + "\n",
        "## OALL v2 (the paper's Table 1)\n",
        oall.markdown(),
        img("oall_benchmarks", "OALL per benchmark"),
        img("oall_deltas", "fine-tuned minus base"),
        *(
            [
                "## What the student learned\n",
                student_statement(params, student),
                student.markdown(),
                img("student", "what the student writes"),
                "One output of each model for the same prompt (truncated):\n",
                samples_markdown(student_samples(run)),
            ]
            if student is not None
            else []
        ),
        "## Data\n",
        tables[1].markdown(),
        img("composition", "composition"),
        tables[2].markdown(),
        "## Distillation and verification\n",
        tables[3].markdown(),
        img("funnel", "funnel"),
        "## Training\n",
        tables[4].markdown(),
        img("loss", "loss curve"),
        img("expert_load", "expert load"),
        "## Budget\n",
        BUDGET_PENDING,
        provenance(params, run, tables, started),
    ]
    report_md = out_dir / "report.md"
    report_md.write_text("\n".join(parts), encoding="utf-8")
    return ReportResult(out_dir, tables, figs, report_md)


def report_dir(params: Params) -> Path:
    """Where a run's published report lives: ``reports/<run name>/`` (the run name defaults to the profile's;
    committed for the smoke profile; each run of a sweep gets its own)."""
    return params.report.dir / params.run_dir.name


# ---------------------------------------------------------------------------------------------- budget
BUDGET_BEGIN, BUDGET_END = "<!-- budget -->", "<!-- /budget -->"
BUDGET_PENDING = (
    f"{BUDGET_BEGIN}\n_Filled in by the runner when `make reproduce` finishes (this report was built "
    f"outside a full run)._\n{BUDGET_END}\n"
)
SMOKE_BUDGET = {"wall_s": 600, "peak_rss_mb": 4096}


def stamp_budget(report_md: Path, record: dict[str, Any]) -> None:
    """Write the runner's measurement of this ``reproduce`` (wall time, peak memory) into report.md's budget block."""
    if not report_md.is_file():
        return
    phases = record["phases"]
    ran = sum(p["action"] == "ran" for p in phases)
    n = record.get("n_phases", len(phases))
    how = f"cold: all {n} phases ran" if record["cold"] else f"not cold: {ran} of {n} phases ran in it"
    ok = record["wall_s"] <= SMOKE_BUDGET["wall_s"] and record["peak_rss_mb"] <= SMOKE_BUDGET["peak_rss_mb"]
    rows = []
    for p in phases:
        peak = MISSING if p.get("peak_rss_mb") is None else f"{p['peak_rss_mb']:.0f}"
        rows.append(f"| {p['phase']} | {p['action']} | {p['seconds']:.1f} | {peak} |")
    text = "\n".join(
        [
            BUDGET_BEGIN,
            f"Measured by the runner for the `arabic-r1 reproduce` that wrote this report (started {record['started_at']}; "
            f"{how}): **{record['wall_s']:.0f} s** wall, peak memory **{record['peak_rss_mb']:.0f} MB** (runner + papermill "
            f"+ kernel processes, resident, sampled every 0.5 s). The embedded default's budget is "
            f"{SMOKE_BUDGET['wall_s']} s and {SMOKE_BUDGET['peak_rss_mb']} MB: {'within' if ok else 'OVER'}.",
            "",
            "| phase | action | seconds (incl. kernel start) | peak memory (MB) |",
            "|---|---|---:|---:|",
            *rows,
            BUDGET_END,
        ]
    )
    md = report_md.read_text(encoding="utf-8")
    begin, end = md.find(BUDGET_BEGIN), md.find(BUDGET_END)
    if begin >= 0 and end > begin:
        report_md.write_text(md[:begin] + text + md[end + len(BUDGET_END) :], encoding="utf-8")


# ---------------------------------------------------------------------------------------------- phase
def run_paper_report(params: Params, phase: PhaseRun) -> ReportResult:
    """Phase 06 entry point: build the report in the run folder, then publish it to ``reports/<run name>/``."""
    started = time.monotonic()
    built = build_report(params, phase.run_dir, phase.dir / "report", started)
    published = report_dir(params)
    for old in (published / "tables", published / "figures"):  # files of an older layout must not linger
        if old.is_dir():
            shutil.rmtree(old)
    shutil.copytree(built.out_dir, published, dirs_exist_ok=True)
    phase.finish(
        {"report": built.report_md, "tables": built.out_dir / "tables", "figures": built.out_dir / "figures"},
        {
            "tables": len(built.tables),
            "figures": sum(len(v) for v in built.figures.values()),
            "published": str(published),
        },
    )
    return ReportResult(
        published,
        built.tables,
        {k: [published / p.relative_to(built.out_dir) for p in v] for k, v in built.figures.items()},
        published / "report.md",
    )
