"""Token budgets per (language, category) cell, and selecting items to hit them.

Targets: ``budget x share(lang) x share(category)``, so a pool that hits every cell within the tolerance also hits
the Arabic share. Selection keeps a seeded random order (a representative sample) and fills the last gap with an
exact subset-sum over the remaining items, so small cells (a few prompts) still land inside the tolerance.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DP_MAX_BITS = 50_000_000  # subset-sum table size limit (items x gap); beyond it the greedy result stands


@dataclass(frozen=True)
class Cell:
    lang: str
    category: str

    def __str__(self) -> str:
        return f"{self.lang}/{self.category}"


def cell_targets(
    token_budget: int, arabic_share: float, category_shares: Mapping[str, float]
) -> dict[Cell, int]:
    """Integer targets whose sum is exactly ``token_budget`` (largest-remainder rounding)."""
    exact = {}
    for cat, share in category_shares.items():
        exact[Cell("ar", cat)] = token_budget * arabic_share * share
        exact[Cell("en", cat)] = token_budget * (1 - arabic_share) * share
    floors = {c: int(v) for c, v in exact.items()}
    leftover = token_budget - sum(floors.values())
    for c in sorted(exact, key=lambda c: exact[c] - floors[c], reverse=True)[: max(leftover, 0)]:
        floors[c] += 1
    return floors


@dataclass
class Selection:
    lo: int
    hi: int
    chosen: list[int] = field(default_factory=list)  # indices into the candidate list
    tokens: int = 0
    available: int = 0

    @property
    def ok(self) -> bool:
        return self.lo <= self.tokens <= self.hi

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return "dry" if self.available < self.lo else "off_target"


def select_to_budget(sizes: Sequence[int], target: int, tolerance: float, *, seed: int) -> Selection:
    """Choose items (token counts ``sizes``) summing to ``target`` +- ``tolerance``.

    Greedy in a seeded random order up to the upper bound; if that stops short, an exact subset-sum over all items
    (in the same order) replaces it. No top-up of the greedy picks is possible: an item the pass skipped did not fit
    the room left when it was met, and the room only shrank. "off_target" then means no subset of the items lands
    in the tolerance; "dry" means all items together are not enough.
    """
    lo, hi = (
        math.ceil(target * (1 - tolerance) - 1e-9),
        math.floor(target * (1 + tolerance) + 1e-9),
    )  # inside, never rounded out
    sel = Selection(lo, hi, available=sum(sizes))
    if target <= 0:
        return sel
    order = list(range(len(sizes)))
    random.Random(seed).shuffle(order)
    for i in order:
        n = sizes[i]
        if n > 0 and sel.tokens + n <= hi:
            sel.chosen.append(i)
            sel.tokens += n
        if sel.tokens >= target:
            break
    if sel.tokens < lo and sel.available >= lo:
        exact = _subset_sum(order, sizes, lo, hi)
        if exact is not None:
            sel.chosen, sel.tokens = exact, sum(sizes[i] for i in exact)
    return sel


def _subset_sum(candidates: Sequence[int], sizes: Sequence[int], lo: int, hi: int) -> list[int] | None:
    """Some subset of ``candidates`` whose sizes sum into [lo, hi]; None if none exists (or the table is too big)."""
    lo = max(lo, 0)
    if hi < lo:
        return None
    items = [i for i in candidates if 0 < sizes[i] <= hi]
    if len(items) * (hi + 1) > DP_MAX_BITS:
        return None
    mask = (1 << (hi + 1)) - 1
    reach = [1]  # reach[k]: bitset of sums reachable with the first k items
    for i in items:
        reach.append((reach[-1] | (reach[-1] << sizes[i])) & mask)
    final = reach[-1]
    total = next((s for s in range(lo, hi + 1) if (final >> s) & 1), None)
    if total is None:
        return None
    picked = []
    for k in range(len(items), 0, -1):  # walk back: take item k-1 if the sum was not reachable without it
        if not (reach[k - 1] >> total) & 1:
            i = items[k - 1]
            picked.append(i)
            total -= sizes[i]
    return picked
