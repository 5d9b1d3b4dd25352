"""The paper-style tables of phase 06, each built from one run's artifacts: Table 1 beside the paper's numbers, the
data composition and cleaning, the trace funnel, training, what the student learned, and a sweep's comparison."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from arabic_r1.benchmarks import BENCHMARKS, average, counted_in_average, in_table_order, spec
from arabic_r1.jsonl import read_jsonl
from arabic_r1.params import Params
from arabic_r1.reference import paper_table1
from arabic_r1.report_tables import REPORTED, Run, Table, frame_table

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
        title, in_paper = ("Average", "Average") if b == "average" else (spec(b).title, spec(b).paper_title)
        ref = paper["rows"][in_paper] if in_paper else {}
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
