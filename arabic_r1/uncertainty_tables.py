"""Phase 06's uncertainty tables: which of the paper's Table-1 margins its benchmarks' sizes can resolve."""

from __future__ import annotations

import math

from arabic_r1.benchmarks import BENCHMARKS, spec
from arabic_r1.intervals import Z95, resolvable_difference
from arabic_r1.reference import paper_table1
from arabic_r1.report_tables import REPORTED, Table

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
