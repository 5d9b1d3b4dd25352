"""How sure a score is: bootstrap intervals over items, paired differences between two models on the same items, and
the smallest difference a benchmark of a given size can resolve.

A benchmark's leaderboard score is the mean of its subsets' accuracies, each subset weighted equally (OALL averages
subset scores, not items). Every interval here resamples items *within* each subset and recomputes that same
weighted score, so a 40-item subset moves the interval as much as it moves the score. Resampling is seeded: the same
items, seed and count give the same interval.

Paired test: McNemar's exact test on items where exactly one of the two models is right (the standard test for two
classifiers on the same items: it uses only the discordant pairs, needs no normal approximation, so it is exact for
the few items of a smoke run). A benchmark whose items are scored on a scale (ALRAGE's judge, 0-1) has no discordant
pairs; there the p-value is the paired bootstrap's: twice the share of resampled differences on the far side of 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

Items = Mapping[
    str, Mapping[str, float]
]  # subset -> item id -> score (1/0 correctness, or a judge score 0-1)

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


@dataclass(frozen=True)
class Interval:
    """A score with its percentile-bootstrap interval and the items behind it."""

    value: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Paired:
    """Model A - model B on the items both were scored on."""

    diff: Interval
    p_value: float
    test: str  # "mcnemar_exact" or "paired_bootstrap"
    a_only: int | None = None  # items only A got right (McNemar's discordant counts)
    b_only: int | None = None


def weighted_score(items: Items) -> float:
    """The leaderboard's score: the mean over subsets of each subset's mean item score."""
    means = [np.mean(list(s.values())) for s in items.values() if s]
    return float(np.mean(means)) if means else float("nan")


def _resampled(values: list[np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``resamples`` bootstrap replicates of the subset-weighted mean of ``values`` (one array per subset). For a
    paired difference the arrays are A - B per item: resampling the differences is resampling both models' items
    with the same indices."""
    total = np.zeros(resamples)
    for v in values:
        idx = rng.integers(0, len(v), size=(resamples, len(v)))
        total += v[idx].mean(axis=1)
    return total / len(values)


def _percentiles(reps: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(reps, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap(items: Items, *, resamples: int, seed: int, level: float = 0.95) -> Interval:
    """The weighted score with its percentile-bootstrap interval (items resampled within subsets)."""
    values = [np.fromiter(s.values(), float) for s in items.values() if s]
    if not values:
        raise ValueError("no items to bootstrap")
    reps = _resampled(values, resamples, np.random.default_rng(seed))
    return Interval(weighted_score(items), *_percentiles(reps, level), sum(map(len, values)))


def average_bootstrap(
    benchmarks: Mapping[str, Items], *, resamples: int, seed: int, level: float = 0.95
) -> Interval:
    """The mean over benchmarks of their weighted scores, resampling every benchmark's items at once: the interval
    of a leaderboard average."""
    rng = np.random.default_rng(seed)
    reps = np.zeros(resamples)
    for items in benchmarks.values():
        reps += _resampled([np.fromiter(s.values(), float) for s in items.values() if s], resamples, rng)
    reps /= len(benchmarks)
    value = float(np.mean([weighted_score(i) for i in benchmarks.values()]))
    n = sum(len(s) for i in benchmarks.values() for s in i.values())
    return Interval(value, *_percentiles(reps, level), n)


def _aligned(a: Items, b: Items) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per subset, the scores of A and of B on the items both have (ids matched, not positions)."""
    out = {}
    for subset in sorted(a.keys() & b.keys()):
        ids = sorted(a[subset].keys() & b[subset].keys())
        if ids:
            out[subset] = (
                np.array([a[subset][i] for i in ids], float),
                np.array([b[subset][i] for i in ids], float),
            )
    return out


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: under no difference, each discordant item is A's with probability 1/2."""
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _paired_reps(pairs: dict[str, tuple[np.ndarray, np.ndarray]], resamples: int, rng: np.random.Generator):
    """Bootstrap replicates of the subset-weighted A - B."""
    return _resampled([va - vb for va, vb in pairs.values()], resamples, rng)


def _bootstrap_p(reps: np.ndarray) -> float:
    """Twice the share of resampled differences on the far side of zero (the paired bootstrap's two-sided p)."""
    return float(min(1.0, 2 * min((reps <= 0).mean(), (reps >= 0).mean())))


def paired(a: Items, b: Items, *, resamples: int, seed: int, level: float = 0.95) -> Paired:
    """A - B on the items both were scored on, resampled together (the same items for both), with the paired test."""
    pairs = _aligned(a, b)
    if not pairs:
        raise ValueError("the two models share no scored items")
    reps = _paired_reps(pairs, resamples, np.random.default_rng(seed))
    value = float(np.mean([(va - vb).mean() for va, vb in pairs.values()]))
    diff = Interval(value, *_percentiles(reps, level), sum(len(va) for va, _ in pairs.values()))
    every = np.concatenate([np.concatenate(p) for p in pairs.values()])
    if np.isin(every, (0.0, 1.0)).all():
        a_only = int(sum(((va == 1) & (vb == 0)).sum() for va, vb in pairs.values()))
        b_only = int(sum(((va == 0) & (vb == 1)).sum() for va, vb in pairs.values()))
        return Paired(diff, mcnemar_exact(a_only, b_only), "mcnemar_exact", a_only, b_only)
    return Paired(diff, _bootstrap_p(reps), "paired_bootstrap")


def paired_average(
    a: Mapping[str, Items], b: Mapping[str, Items], *, resamples: int, seed: int, level: float = 0.95
) -> Paired:
    """The difference of two leaderboard averages over the benchmarks both have, every benchmark's items resampled
    together; the p-value is the paired bootstrap's (an average of weighted scores is not a count of items)."""
    shared = sorted(a.keys() & b.keys())
    pairs = [_aligned(a[k], b[k]) for k in shared]
    if not shared or not all(pairs):
        raise ValueError("the two models share no scored items on some benchmark")
    rng = np.random.default_rng(seed)
    reps = sum(_paired_reps(p, resamples, rng) for p in pairs) / len(pairs)
    value = float(np.mean([np.mean([(va - vb).mean() for va, vb in p.values()]) for p in pairs]))
    n = sum(len(va) for p in pairs for va, _ in p.values())
    return Paired(Interval(value, *_percentiles(reps, level), n), _bootstrap_p(reps), "paired_bootstrap")


def resolvable_difference(accuracy_a: float, accuracy_b: float, n: int, z: float = Z95) -> float:
    """The smallest A - B (same scale as the accuracies) that two independent scorings on ``n`` items tell apart
    from noise at 95%: z * sqrt(pa(1-pa)/n + pb(1-pb)/n). Models scored on the *same* items agree on many of them,
    which narrows a paired interval; without the per-item results a reader of a paper has only this bound. For
    scores on a 0-1 scale (a judge's), p(1-p) bounds the variance from above, so the bound stays conservative."""
    var = accuracy_a * (1 - accuracy_a) / n + accuracy_b * (1 - accuracy_b) / n
    return z * math.sqrt(var)
