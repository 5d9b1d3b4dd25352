from __future__ import annotations

import random

import pytest

from arabic_r1.budget import Cell, cell_targets, select_to_budget
from arabic_r1.params_loading import load_params

PAPER = load_params("paper").data


def test_paper_targets_are_80_20_and_follow_the_composition() -> None:
    t = cell_targets(372_000_000, PAPER.arabic_share, PAPER.category_shares)  # the paper's 372M, its shares
    assert sum(t.values()) == 372_000_000
    ar = sum(v for c, v in t.items() if c.lang == "ar")
    assert ar == pytest.approx(0.8 * 372_000_000, abs=6)
    lit = t[Cell("ar", "literature_critical_analysis")] + t[Cell("en", "literature_critical_analysis")]
    assert lit / 1e6 == pytest.approx(103.2, abs=0.01)
    assert t[Cell("en", "social_dialectal")] / 1e6 == pytest.approx(8.6 * 0.2, abs=0.01)


def test_rounding_keeps_the_exact_total() -> None:
    t = cell_targets(1001, 0.8, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert sum(t.values()) == 1001 and len(t) == 6


def test_selection_hits_tolerance_and_is_seeded() -> None:
    rng = random.Random(3)
    sizes = [rng.randint(20, 120) for _ in range(40)]
    a = select_to_budget(sizes, 1000, 0.02, seed=1)
    b = select_to_budget(sizes, 1000, 0.02, seed=1)
    c = select_to_budget(sizes, 1000, 0.02, seed=2)
    assert a.ok and 980 <= a.tokens <= 1020 and a.tokens == sum(sizes[i] for i in a.chosen)
    assert len(set(a.chosen)) == len(a.chosen)
    assert a.chosen == b.chosen and a.chosen != c.chosen


def test_small_cells_are_closed_by_subset_sum() -> None:
    sizes = [97, 61, 45, 128, 52, 77, 39, 88]
    for target in (100, 140, 160, 233):
        sel = select_to_budget(sizes, target, 0.02, seed=0)
        assert sel.ok, (target, sel.tokens)


def test_dry_and_off_target_are_distinguished() -> None:
    dry = select_to_budget([10, 20, 30], 200, 0.02, seed=0)
    assert dry.status == "dry" and dry.available == 60 and dry.tokens == 60
    off = select_to_budget([50, 50, 50], 120, 0.02, seed=0)
    assert off.status == "off_target"


def test_zero_target_selects_nothing() -> None:
    assert select_to_budget([5, 6], 0, 0.02, seed=0).chosen == []


def test_a_selection_lands_in_the_tolerance_whenever_some_subset_does():
    """Against brute force on small random cases: the selection is distinct items whose sizes sum to its token
    count, inside [lo, hi] exactly when some subset of the items is (the greedy pass alone often stops short)."""
    import itertools
    import random

    rng = random.Random(7)
    fills = 0
    for case in range(400):
        sizes = [rng.randint(0, 60) for _ in range(rng.randint(1, 9))]
        target, tol = rng.randint(1, 200), rng.choice([0.0, 0.02, 0.1])
        sel = select_to_budget(sizes, target, tol, seed=case)
        assert len(set(sel.chosen)) == len(sel.chosen) and sel.tokens == sum(sizes[i] for i in sel.chosen)
        assert sel.tokens <= sel.hi and sel.available == sum(sizes), (sizes, target, tol)
        sums = {sum(c) for k in range(len(sizes) + 1) for c in itertools.combinations(sizes, k)}
        reachable = any(sel.lo <= s <= sel.hi for s in sums)
        assert (sel.lo <= sel.tokens <= sel.hi) == reachable, (sizes, target, tol, sel)
        fills += reachable and sel.tokens < target
    assert fills > 20  # cases the greedy pass alone would have left short are among them


def test_targets_round_by_largest_remainder() -> None:
    """Each cell is its exact share rounded down, and the leftover tokens go to the largest fractions: no cell is
    ever more than one token off its share, and an exact split is left alone."""
    t = cell_targets(10, 0.8, {"a": 0.55, "b": 0.45})  # exact: ar/a 4.4, ar/b 3.6, en/a 1.1, en/b 0.9
    assert t == {Cell("ar", "a"): 4, Cell("ar", "b"): 4, Cell("en", "a"): 1, Cell("en", "b"): 1}
    assert cell_targets(100, 0.5, {"a": 0.5, "b": 0.5}) == {
        Cell(lang, cat): 25 for lang in ("ar", "en") for cat in ("a", "b")
    }


@pytest.mark.parametrize(
    "target, tol, lo, hi",
    [(10, 0.5, 5, 15), (100, 0.1, 90, 110), (1000, 0.02, 980, 1020), (7, 0.1, 7, 7), (1, 0.02, 1, 1)],
)
def test_tolerance_bounds_are_the_integers_inside_it(target: int, tol: float, lo: int, hi: int) -> None:
    """Bounds that land on an integer keep it, whatever float noise ``target * (1 +- tol)`` carries (100 * 1.1 is
    110.00000000000001); a fractional bound rounds inwards."""
    sel = select_to_budget([target], target, tol, seed=0)
    assert (sel.lo, sel.hi) == (lo, hi)
    assert sel.chosen == [0] and sel.ok  # a one-token target is met too


def _greedy(sizes: list[int], target: int, hi: int, seed: int) -> list[int]:
    order = list(range(len(sizes)))
    random.Random(seed).shuffle(order)
    chosen, tokens = [], 0
    for i in order:
        if sizes[i] > 0 and tokens + sizes[i] <= hi:
            chosen, tokens = [*chosen, i], tokens + sizes[i]
        if tokens >= target:
            break
    return chosen


def test_a_greedy_sample_that_lands_in_the_tolerance_stands() -> None:
    """The pool is a seeded random sample: items in shuffled order while they fit, stopping once the target is met,
    and kept as it is whenever it lands in the tolerance (the exact subset-sum, which favours late items, only
    replaces a sample that stops short). Empty items are never picked."""
    rng = random.Random(11)
    kept = 0
    for case in range(300):
        sizes = [rng.choice([0, 1, 1, 2, 3, 5, 8, 13, 40]) for _ in range(rng.randint(1, 12))]
        target, tol = rng.randint(1, 40), rng.choice([0.0, 0.1, 0.5])
        sel = select_to_budget(sizes, target, tol, seed=case)
        assert all(sizes[i] > 0 for i in sel.chosen), (sizes, sel)
        greedy = _greedy(sizes, target, sel.hi, case)
        if sel.lo <= sum(sizes[i] for i in greedy) <= sel.hi:
            assert sel.chosen == greedy, (sizes, target, tol, sel)
            kept += 1
    assert kept > 100
    exact = select_to_budget([10] * 8, 50, 0.5, seed=0)  # stops on the target, not at the upper bound
    assert exact.tokens == 50


def test_the_exact_pass_gives_up_above_its_table_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The subset-sum table has ``items x (hi + 1)`` bits: at the limit it still runs, one bit over it returns
    nothing (the greedy result stands), so a huge cell cannot exhaust memory."""
    from arabic_r1 import budget

    sizes = [7, 7, 7, 4]  # 11 = 7 + 4 only
    monkeypatch.setattr(budget, "DP_MAX_BITS", 4 * 12)
    assert budget._subset_sum(range(4), sizes, 11, 11) == [3, 0]  # 4 items x 12 bits: exactly the limit
    assert budget._subset_sum(range(4), sizes, 11, 12) is None  # 4 x 13 > 48
    monkeypatch.setattr(budget, "DP_MAX_BITS", 4 * 12 - 1)
    assert budget._subset_sum(range(4), sizes, 11, 11) is None
