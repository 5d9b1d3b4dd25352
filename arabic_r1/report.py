"""Phase 06: a finished run as the paper's tables and figures, with this run's numbers next to the paper's.

Every table is built from run artifacts (named in the table's ``sources`` and in report.md's provenance block) and
written as Markdown, LaTeX (booktabs) and CSV. A number the run did not produce is ``None``: rendered "—" (LaTeX
"---", CSV empty), never invented. The paper's numbers are labelled "reported in the paper" wherever they appear.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arabic_r1.code_digest import code_digests
from arabic_r1.digests import file_digest, json_digest
from arabic_r1.manifest import PhaseRun, git_commit
from arabic_r1.paper_tables import (
    cleaning_table,
    composition_table,
    funnel_table,
    oall_table,
    samples_markdown,
    student_samples,
    student_table,
    training_table,
)
from arabic_r1.params import Params
from arabic_r1.phases import PHASES, find_phase
from arabic_r1.report_figures import draw_figures
from arabic_r1.report_tables import MISSING, REPORTED, Run, Table
from arabic_r1.uncertainty_tables import interval_table, paired_table, paper_margins_table


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
    intervals = interval_table(run, rp.bootstrap_resamples, params.run.seed)
    paired = paired_table(run, rp.bootstrap_resamples, params.run.seed)
    margins = paper_margins_table()
    tables = [
        oall,
        composition_table(run),
        cleaning_table(run),
        funnel_table(run),
        training_table(run, params),
        *([student] if student is not None else []),
        intervals,
        *([paired] if paired is not None else []),
        margins,
    ]
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    render = {"md": Table.markdown, "tex": Table.latex, "csv": Table.csv}
    for t in tables:
        for fmt in rp.formats:
            (out_dir / "tables" / f"{t.name}.{fmt}").write_text(render[fmt](t), encoding="utf-8")
    figs = draw_figures(run, oall, out_dir, rp.figure_formats, rp.dpi, student, intervals, paired)
    png = {k: next((p for p in v if p.suffix == ".png"), v[0]) for k, v in figs.items()}
    img = lambda k, alt: f"![{alt}]({png[k].relative_to(out_dir)})\n"  # noqa: E731
    parts = [
        f"# Arabic-DeepSeek-R1 reproduction: {params.profile} profile\n",
        profile_statement(params, run) + "\n",
        "## OALL v2 (the paper's Table 1)\n",
        oall.markdown(),
        img("oall_benchmarks", "OALL per benchmark"),
        img("oall_deltas", "fine-tuned minus base"),
        "### How sure these numbers are\n",
        intervals.markdown(),
        img("oall_intervals", "scores with 95% intervals"),
        *([paired.markdown(), img("oall_forest", "paired differences")] if paired is not None else []),
        margins.markdown(),
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
