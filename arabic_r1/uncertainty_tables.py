"""Phase 06's uncertainty tables: every score with its 95% interval, fine-tuned minus base with a paired test, and
which of the paper's Table-1 margins its benchmarks' sizes can resolve."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from arabic_r1.benchmarks import BENCHMARKS, benchmark_of, counted_in_average, in_table_order, spec
from arabic_r1.intervals import (
    Z95,
    Items,
    average_bootstrap,
    bootstrap,
    paired,
    paired_average,
    resolvable_difference,
)
from arabic_r1.jsonl import read_jsonl
from arabic_r1.reference import paper_table1
from arabic_r1.report_tables import REPORTED, Run, Table

SCORINGS = ("leaderboard", "reasoning")
Series = dict[str, Items]  # benchmark -> its items (subset -> id -> score), one model under one scoring


def read_item_scores(path: Path) -> dict[tuple[str, str], Series]:
    """Phase 05's ``item_scores.jsonl`` as {(model, scoring): {benchmark: items}}. The judged benchmark (ALRAGE) is
    scored once and counts under both scorings, as in Table 1."""
    raw: dict[tuple[str, str], Series] = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for r in read_jsonl(path):
        raw[(r["model"], r["scoring"])][benchmark_of(r["task"])][r["task"]][str(r["id"])] = float(r["score"])
    out = {key: {b: dict(items) for b, items in series.items()} for key, series in raw.items()}
    for (model, scoring), series in list(out.items()):
        if scoring == "reasoning":
            judged = out.get((model, "leaderboard"), {})
            series.update({b: items for b, items in judged.items() if spec(b).scoring == "judged"})
    return out


def _average_row(series: Series) -> bool:
    """An average is shown only over every benchmark the leaderboard counts, as in Table 1."""
    return set(counted_in_average(BENCHMARKS)) <= set(series)


def interval_table(run: Run, resamples: int, seed: int) -> Table:
    """Every model's score per benchmark and scoring with its 95% bootstrap interval (items resampled within
    subsets, subsets weighted as the leaderboard weighs them), and the interval of the leaderboard average."""
    path = run.artifact("oall_evaluation", "item_scores")
    scores = read_item_scores(path)
    keys = [(m, s) for s in SCORINGS for m in dict.fromkeys(m for m, _ in scores) if (m, s) in scores]
    benchmarks = in_table_order({b for series in scores.values() for b in series})
    columns = ["benchmark", "items", "smallest subset"]
    for m, s in keys:
        columns += [f"{m} ({s})", f"{m} ({s}) 95% low", f"{m} ({s}) 95% high"]
    rows = []
    for b in benchmarks:
        held = [scores[k][b] for k in keys if b in scores[k]]
        row: list = [spec(b).title, max(sum(map(len, h.values())) for h in held),
                     min(len(v) for h in held for v in h.values())]  # fmt: skip
        for k in keys:
            iv = bootstrap(scores[k][b], resamples=resamples, seed=seed) if b in scores[k] else None
            row += [None, None, None] if iv is None else [100 * iv.value, 100 * iv.low, 100 * iv.high]
        rows.append(row)
    avg: list = ["Average", None, None]
    for k in keys:
        if _average_row(scores[k]):
            counted = {b: scores[k][b] for b in counted_in_average(BENCHMARKS)}
            iv = average_bootstrap(counted, resamples=resamples, seed=seed)
            avg += [100 * iv.value, 100 * iv.low, 100 * iv.high]
        else:
            avg += [None, None, None]
    rows.append(avg)
    notes = [
        f"Scores in percent with their 95% percentile-bootstrap interval: {resamples:,} resamples (seed {seed}) of "
        "the benchmark's documents, drawn within each subset so that every subset keeps the weight the leaderboard "
        "gives it. Average: the mean of the benchmarks the leaderboard counts, all resampled at once; — when one "
        "is missing. items: documents scored. A benchmark of a few dozen items has an interval tens of points wide.",
        "smallest subset: its fewest documents. A subset cannot vary within itself when it holds one document, so a "
        "benchmark whose subsets hold fewer than about five understates its spread (the smoke run's do; the real "
        "benchmarks' subsets hold dozens to hundreds).",
    ]
    return Table(
        "oall_intervals", "OALL v2 scores with 95% intervals", columns, rows, [path], notes, decimals=1
    )


def p_text(p: float) -> str:
    """A p-value as a reader wants it: three decimals, or "< 0.001"."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def paired_table(run: Run, resamples: int, seed: int, a: str = "finetuned", b: str = "base") -> Table | None:
    """``a`` minus ``b`` per benchmark and scoring on the same documents: the paired bootstrap interval, the paired
    test's p-value and whether the interval excludes zero; None when the run did not score both models."""
    path = run.artifact("oall_evaluation", "item_scores")
    scores = read_item_scores(path)
    scorings = [s for s in SCORINGS if (a, s) in scores and (b, s) in scores]
    if not scorings:
        return None
    benchmarks = in_table_order({k for s in scorings for k in scores[(a, s)].keys() & scores[(b, s)].keys()})
    columns = ["benchmark"]
    for s in scorings:
        columns += [f"Δ {a} − {b} ({s})", f"({s}) 95% low", f"({s}) 95% high", f"({s}) p", f"({s}) excludes 0",
                    f"({s}) items"]  # fmt: skip
    rows = []
    for k in [*benchmarks, "average"]:
        row: list = ["Average" if k == "average" else spec(k).title]
        for s in scorings:
            sa, sb = scores[(a, s)], scores[(b, s)]
            if k == "average":
                counted = counted_in_average(BENCHMARKS)
                ok = _average_row(sa) and _average_row(sb)
                p = paired_average({x: sa[x] for x in counted}, {x: sb[x] for x in counted}, resamples=resamples,
                                   seed=seed) if ok else None  # fmt: skip
            else:
                p = paired(sa[k], sb[k], resamples=resamples, seed=seed) if k in sa and k in sb else None
            row += [None] * 6 if p is None else [100 * p.diff.value, 100 * p.diff.low, 100 * p.diff.high,
                                                 p_text(p.p_value), p.diff.excludes_zero(), p.diff.n]  # fmt: skip
        rows.append(row)
    notes = [
        f"{a} minus {b} in points on the documents both were scored on, resampled together ({resamples:,} paired "
        f"resamples, seed {seed}): the 95% interval of the difference, and whether it excludes 0. p: McNemar's exact "
        "test on the documents exactly one model got right (two models on the same items: it uses only the "
        "discordant pairs and is exact for the handful of items of a small run); for judge scores (ALRAGE) and the "
        "average, which are not counts of right answers, the paired bootstrap's two-sided p. With a handful of "
        "discordant documents the percentile interval can exclude 0 while the exact test does not: at those sizes, "
        "trust the test.",
    ]
    return Table("oall_paired", f"{a} − {b}: paired differences", columns, rows, [path], notes, decimals=2)


PAPER_MODEL = "Arabic-DeepSeek-R1"
PAPER_RIVALS = ("OALL category leader", "GPT-5.1", "DeepSeek-R1 (unadapted)")


def paper_margins_table() -> Table:
    """For each of the paper's Table-1 differences (its model minus each other column), the smallest difference the
    benchmark's item count resolves at 95% given the two reported scores: a margin below it is within noise."""
    paper = paper_table1()["rows"]
    benchmarks = [b for b in BENCHMARKS if spec(b).paper_title in paper and spec(b).in_average]
    columns = ["benchmark (items)"]
    for rival in PAPER_RIVALS:
        columns += [f"Δ vs {rival} ({REPORTED})", f"resolvable at 95% vs {rival}", f"beyond noise vs {rival}"]
    rows = []
    for b in benchmarks:
        row: list = [f"{spec(b).title} ({spec(b).docs:,})"]
        ours = paper[spec(b).paper_title][PAPER_MODEL] / 100
        for rival in PAPER_RIVALS:
            theirs = paper[spec(b).paper_title][rival] / 100
            bound = resolvable_difference(ours, theirs, spec(b).docs)
            row += [100 * (ours - theirs), 100 * bound, abs(ours - theirs) > bound]
        rows.append(row)
    avg: list = [f"Average ({sum(spec(b).docs for b in benchmarks):,})"]
    ours_avg = paper["Average"][PAPER_MODEL] / 100
    for rival in PAPER_RIVALS:
        theirs_avg = paper["Average"][rival] / 100
        # the mean of k benchmark scores: variance sum_b var_b / k^2, each benchmark at the two reported averages
        var = (
            sum(
                (ours_avg * (1 - ours_avg) + theirs_avg * (1 - theirs_avg)) / spec(b).docs for b in benchmarks
            )
            / len(benchmarks) ** 2
        )
        bound = Z95 * math.sqrt(var)
        avg += [100 * (ours_avg - theirs_avg), 100 * bound, abs(ours_avg - theirs_avg) > bound]
    rows.append(avg)
    notes = [
        f"Δ: the paper's {PAPER_MODEL} minus the column, in points, {REPORTED} (its Table 1). 'resolvable at 95%' is "
        "our computation, not a re-scoring: 1.96 x sqrt(pa(1-pa)/n + pb(1-pb)/n) points for two scorings of the "
        "benchmark's n items at the two reported accuracies, the smallest difference that is not noise at 95% when "
        "nothing is known of which items each model got right (scorings of the same items agree on many of them, "
        "which would narrow it). For ALRAGE's judge scores p(1-p) bounds the variance from above. Average: the "
        "mean of the seven benchmarks, each at the two reported averages. The category leader differs by benchmark "
        "(its model is in Table 1); its Average is the average leader's.",
    ]
    parts = tuple((f"{PAPER_MODEL} vs {r}", 1 + 3 * i) for i, r in enumerate(PAPER_RIVALS))
    return Table("paper_margins", "Which of the paper's margins its benchmark sizes resolve", columns, rows, [],
                 notes, decimals=1, parts=parts)  # fmt: skip


def sweep_paired_table(run_dirs: list[Path], resamples: int, seed: int, model: str = "finetuned") -> Table:
    """Each run of a sweep minus the first, ``model`` under leaderboard scoring, on the documents both scored: the
    difference of their averages over the benchmarks both evaluated, its paired interval and p-value."""
    runs = [Run.open(Path(d)) for d in run_dirs]
    paths = [r.artifact("oall_evaluation", "item_scores") for r in runs]
    series = [read_item_scores(p).get((model, "leaderboard"), {}) for p in paths]
    ref = runs[0].dir.name
    rows = []
    for run, s in zip(runs[1:], series[1:], strict=True):
        shared = in_table_order(set(s) & set(series[0]))
        if not shared:
            rows.append([run.dir.name, None, None, None, None, None, None, 0])
            continue
        p = paired_average({b: s[b] for b in shared}, {b: series[0][b] for b in shared}, resamples=resamples,
                           seed=seed)  # fmt: skip
        rows.append([run.dir.name, 100 * p.diff.value, 100 * p.diff.low, 100 * p.diff.high, p_text(p.p_value),
                     p.diff.excludes_zero(), p.diff.n, len(shared)])  # fmt: skip
    columns = ["run", f"Δ vs {ref} (mean)", "95% low", "95% high", "p", "excludes 0", "items", "benchmarks"]
    notes = [
        f"The {model} model of each run minus that of {ref}, leaderboard scoring, in points: the mean over the "
        f"benchmarks both runs evaluated, on the documents both scored, resampled together ({resamples:,} paired "
        f"resamples, seed {seed}); p: the paired bootstrap's two-sided p.",
    ]
    return Table("sweep_paired", f"Sweep: each run against {ref}, paired", columns, rows, paths, notes)
