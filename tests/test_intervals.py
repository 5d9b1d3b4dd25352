"""Intervals that would catch a wrong interval: nominal coverage on synthetic items of known accuracy, subset
weighting, pairing by item id, McNemar against its textbook values, the paper-margin bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arabic_r1.intervals import (
    average_bootstrap,
    bootstrap,
    mcnemar_exact,
    paired,
    resolvable_difference,
    weighted_score,
)


def _items(correct: np.ndarray, subset: str = "s") -> dict[str, dict[str, float]]:
    return {subset: {f"{subset}-{i}": float(c) for i, c in enumerate(correct)}}


def test_the_interval_covers_the_true_accuracy_at_about_the_nominal_rate() -> None:
    """200 benchmarks of 150 items drawn at accuracy 0.7: the 95% interval holds 0.7 in 90-99% of them (a
    binomial 95% band around 0.95 for 200 trials), and its width is the textbook 2 x 1.96 x sqrt(p(1-p)/n)."""
    rng = np.random.default_rng(0)
    hits, widths = 0, []
    for seed in range(200):
        iv = bootstrap(_items(rng.random(150) < 0.7), resamples=400, seed=seed)
        hits += iv.low <= 0.7 <= iv.high
        widths.append(iv.high - iv.low)
    assert 0.90 <= hits / 200 <= 0.99, hits
    assert np.mean(widths) == pytest.approx(2 * 1.96 * math.sqrt(0.21 / 150), rel=0.08)


def test_seeded_and_weighted_by_subset() -> None:
    items = {"big": {str(i): float(i % 2) for i in range(100)}, "small": {"a": 1.0, "b": 1.0}}
    assert weighted_score(items) == 0.75  # (0.5 + 1.0) / 2, not 52 / 102
    a = bootstrap(items, resamples=300, seed=1)
    assert a == bootstrap(items, resamples=300, seed=1) != bootstrap(items, resamples=300, seed=2)
    assert a.value == 0.75 and a.n == 102 and a.low < 0.75 < a.high
    # the small subset is always right: the spread is the big one's, halved by its weight
    assert (a.high - a.low) == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 100) / 2, rel=0.2)
    one = bootstrap({"s": {"a": 1.0}}, resamples=50, seed=0)
    assert (one.value, one.low, one.high) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="no items"):
        bootstrap({"s": {}}, resamples=10, seed=0)


def test_the_average_of_benchmarks_is_narrower_than_each() -> None:
    rng = np.random.default_rng(3)
    benchmarks = {b: _items(rng.random(200) < p, b) for b, p in [("x", 0.6), ("y", 0.8), ("z", 0.5)]}
    avg = average_bootstrap(benchmarks, resamples=500, seed=0)
    assert avg.value == pytest.approx(np.mean([weighted_score(i) for i in benchmarks.values()]))
    assert avg.n == 600 and avg.low < avg.value < avg.high
    each = [bootstrap(i, resamples=500, seed=0) for i in benchmarks.values()]
    assert avg.high - avg.low < min(e.high - e.low for e in each)


def test_identical_models_differ_by_nothing_and_a_planted_gain_is_found() -> None:
    rng = np.random.default_rng(5)
    base = rng.random(300) < 0.5
    same = paired(_items(base), _items(base), resamples=500, seed=0)
    assert (
        same.diff.value == same.diff.low == same.diff.high == 0 and same.p_value == 1.0
    )  # resampled together
    assert (same.a_only, same.b_only, same.test) == (0, 0, "mcnemar_exact")
    better = base.copy()
    wrong = np.flatnonzero(~base)
    better[rng.choice(wrong, size=60, replace=False)] = True  # +20 points on 300 items
    gain = paired(_items(better), _items(base), resamples=500, seed=0)
    assert gain.diff.value == pytest.approx(0.2) and gain.diff.excludes_zero() and gain.diff.low > 0.1
    assert (gain.a_only, gain.b_only) == (60, 0) and gain.p_value < 1e-15
    noise = paired(_items(rng.random(300) < 0.5), _items(base), resamples=500, seed=0)
    assert (
        noise.p_value > 0.05 or abs(noise.diff.value) > 0.05
    )  # independent coins: no finding unless they differ


def test_pairs_are_matched_by_item_id_not_position() -> None:
    a = {"s": {"1": 1.0, "2": 0.0, "3": 1.0}}
    b = {"s": {"3": 1.0, "2": 0.0, "1": 1.0, "4": 0.0}}  # same answers, other order, one item A lacks
    p = paired(a, b, resamples=100, seed=0)
    assert p.diff.value == 0 and p.diff.n == 3 and p.p_value == 1.0
    with pytest.raises(ValueError, match="share no scored items"):
        paired(a, {"t": {"1": 1.0}}, resamples=10, seed=0)


def test_judge_scores_use_the_paired_bootstrap() -> None:
    rng = np.random.default_rng(1)
    b = rng.random(200)
    p = paired(_items(np.clip(b + 0.3, 0, 1)), _items(b), resamples=500, seed=0)
    assert p.test == "paired_bootstrap" and p.a_only is None and p.p_value < 0.01 and p.diff.excludes_zero()
    flat = paired(_items(b), _items(b), resamples=200, seed=0)
    assert flat.p_value == 1.0 and flat.diff.value == 0


def test_mcnemar_matches_the_binomial() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # 2 x (1/2)^6
    assert mcnemar_exact(10, 2) == pytest.approx(2 * sum(math.comb(12, i) for i in range(3)) / 2**12)
    assert mcnemar_exact(2, 10) == mcnemar_exact(10, 2)
    assert mcnemar_exact(7000, 7100) == pytest.approx(0.40, abs=0.02)  # large counts stay finite and exact


def test_resolvable_difference_of_the_paper_margins() -> None:
    # MadinahQA (1,200 items) at 86.4% vs 78.0%: ~3.0 points resolve; AraTrust (522) at 90.2 vs 91.4: ~3.5
    assert resolvable_difference(0.8643, 0.78, 1200) == pytest.approx(0.0304, abs=5e-4)
    assert resolvable_difference(0.9022, 0.914, 522) == pytest.approx(0.0352, abs=5e-4)
    assert resolvable_difference(0.5, 0.5, 100) == pytest.approx(1.96 * math.sqrt(0.5 / 100), rel=1e-3)


def test_the_paper_margins_table_flags_the_margins_within_noise() -> None:
    from arabic_r1.benchmarks import spec
    from arabic_r1.reference import paper_table1
    from arabic_r1.uncertainty_tables import PAPER_RIVALS, paper_margins_table

    t = paper_margins_table()
    paper = paper_table1()["rows"]
    rows = {r[0].split(" (")[0]: r for r in t.rows}
    assert list(rows) == ["ArabicMMLU", "MadinahQA", "AraTrust", "Arabic EXAMS", "ArabicMMLU-HT", "ALRAGE",
                          "AlGhafa", "Average"]  # fmt: skip
    aratrust = rows["AraTrust"]
    col = t.columns.index(f"Δ vs {PAPER_RIVALS[0]} (reported in the paper)")
    # AraTrust: 90.22 vs the leader's 91.40 on 522 items: -1.2 points, 3.5 resolvable: within noise
    assert aratrust[col] == pytest.approx(90.22 - 91.40)
    assert aratrust[col + 1] == pytest.approx(
        100 * resolvable_difference(0.9022, 0.9140, spec("aratrust").docs)
    )
    assert aratrust[col + 2] is False and rows["MadinahQA"][col + 2] is True
    for r in t.rows[:-1]:
        for i, rival in enumerate(PAPER_RIVALS):
            delta, bound, beyond = r[1 + 3 * i : 4 + 3 * i]
            assert beyond == (abs(delta) > bound), (r[0], rival)
    assert rows["Average"][1] == pytest.approx(
        paper["Average"]["Arabic-DeepSeek-R1"] - paper["Average"][PAPER_RIVALS[0]]
    )
    a, b = paper["Average"]["Arabic-DeepSeek-R1"] / 100, paper["Average"][PAPER_RIVALS[0]] / 100
    keys = ["arabic_mmlu", "madinah_qa", "aratrust", "arabic_exams", "arabic_mmlu_ht", "alrage", "alghafa"]
    var = sum((a * (1 - a) + b * (1 - b)) / spec(k).docs for k in keys) / 49  # each benchmark weighs 1/7
    assert rows["Average"][2] == pytest.approx(100 * 1.96 * math.sqrt(var), rel=1e-3)
    assert "reported in the paper" in t.markdown() and "not a re-scoring" in t.markdown()


def test_the_average_difference_pairs_every_benchmark() -> None:
    from arabic_r1.intervals import paired_average

    rng = np.random.default_rng(7)
    base = {b: _items(rng.random(200) < 0.5, b) for b in "xyz"}
    assert (
        paired_average(base, base, resamples=300, seed=0).diff
        == paired_average(base, base, resamples=300, seed=0).diff
    )
    same = paired_average(base, base, resamples=300, seed=0)
    assert (same.diff.value, same.diff.low, same.diff.high, same.p_value) == (0, 0, 0, 1.0)
    better = {b: {s: {i: 1.0 if v == 0 and int(i.split("-")[1]) % 5 == 0 else v for i, v in items.items()}
                  for s, items in subsets.items()} for b, subsets in base.items()}  # fmt: skip
    gain = paired_average(better, base, resamples=500, seed=0)
    expected = np.mean([weighted_score(better[b]) - weighted_score(base[b]) for b in "xyz"])
    assert gain.diff.value == pytest.approx(expected) and gain.diff.low > 0 and gain.p_value < 0.01
    assert gain.test == "paired_bootstrap" and gain.diff.n == 600
    with pytest.raises(ValueError, match="share no scored items"):
        paired_average(base, {"q": base["x"]}, resamples=10, seed=0)


def _run_with_items(tmp_path, rows):
    import json

    from arabic_r1.report_tables import Run

    phase = tmp_path / "05_oall_evaluation"
    phase.mkdir(parents=True)
    (phase / "item_scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    outputs = {"item_scores": {"path": "05_oall_evaluation/item_scores.jsonl", "digest": "x"}}
    (phase / "manifest.json").write_text(json.dumps({"status": "complete", "outputs": outputs}))
    return Run.open(tmp_path)


def _rows(model: str, scoring: str, task: str, correct) -> list[dict]:
    return [{"model": model, "scoring": scoring, "task": task, "id": str(i), "score": float(c)}
            for i, c in enumerate(correct)]  # fmt: skip


def test_report_tables_equal_their_artefacts(tmp_path) -> None:
    """The interval and paired tables recomputed from item_scores.jsonl; ALRAGE's judge scores count under both
    scorings; the average appears only with every benchmark the leaderboard counts."""
    from arabic_r1.uncertainty_tables import interval_table, p_text, paired_table, read_item_scores

    rng = np.random.default_rng(11)
    base = rng.random(80) < 0.4
    ft = base | (rng.random(80) < 0.5)  # a real gain
    judge = rng.random(30)
    rows = (_rows("base", "leaderboard", "arabic_mmlu:History", base[:40])
            + _rows("base", "leaderboard", "arabic_mmlu:Physics", base[40:])
            + _rows("finetuned", "leaderboard", "arabic_mmlu:History", ft[:40])
            + _rows("finetuned", "leaderboard", "arabic_mmlu:Physics", ft[40:])
            + _rows("base", "leaderboard", "alrage_qa", judge) + _rows("finetuned", "leaderboard", "alrage_qa", judge)
            + _rows("finetuned", "reasoning", "arabic_mmlu:History", ft[:40]))  # fmt: skip
    run = _run_with_items(tmp_path, rows)
    scores = read_item_scores(run.artifact("oall_evaluation", "item_scores"))
    assert scores[("finetuned", "reasoning")]["alrage"] == scores[("finetuned", "leaderboard")]["alrage"]
    t = interval_table(run, resamples=400, seed=3)
    iv = bootstrap(scores[("finetuned", "leaderboard")]["arabic_mmlu"], resamples=400, seed=3)
    assert [t.value("ArabicMMLU", f"finetuned (leaderboard){s}") for s in ("", " 95% low", " 95% high")] == [
        100 * iv.value, 100 * iv.low, 100 * iv.high]  # fmt: skip
    assert t.value("ArabicMMLU", "items") == 80 and t.value("ALRAGE", "items") == 30
    assert t.value("ArabicMMLU", "smallest subset") == 40 and t.value("ALRAGE", "smallest subset") == 30
    assert t.value("Average", "finetuned (leaderboard)") is None  # five benchmarks missing: no average
    p = paired_table(run, resamples=400, seed=3)
    gain = paired(scores[("finetuned", "leaderboard")]["arabic_mmlu"], scores[("base", "leaderboard")]["arabic_mmlu"],
                  resamples=400, seed=3)  # fmt: skip
    assert p.value("ArabicMMLU", "Δ finetuned − base (leaderboard)") == 100 * gain.diff.value > 0
    assert p.value("ArabicMMLU", "(leaderboard) p") == p_text(gain.p_value) and gain.p_value < 0.05
    assert p.value("ArabicMMLU", "(leaderboard) excludes 0") is True
    assert (
        p.value("ALRAGE", "(leaderboard) p") == "1.000"
        and p.value("ALRAGE", "(leaderboard) excludes 0") is False
    )
    assert p.value("ALRAGE", "(leaderboard) items") == 30
    assert [c for c in p.columns if "reasoning" in c] == []  # base has no reasoning scores: no reasoning pair
    assert paired_table(run, resamples=400, seed=3, a="finetuned", b="nobody") is None


def test_p_values_are_written_for_readers() -> None:
    from arabic_r1.uncertainty_tables import p_text

    assert (p_text(0.0004), p_text(0.001), p_text(0.04567), p_text(1.0)) == (
        "< 0.001",
        "0.001",
        "0.046",
        "1.000",
    )
