"""N-gram decontamination against the OALL v2 benchmarks, Arabic-normalised.

The index holds the hash of every ``n``-gram (13 by default) of every benchmark item's text (question, context,
options), after Arabic folding, so a training text that quotes an item with tashkeel added or with أ/ا, ى/ي, ة/ه
or tatweel variants still matches. Segments shorter than ``n`` words but at least ``min_short_words`` long (short
questions) are matched whole. N-grams shared by many items (instruction boilerplate) are dropped and counted,
so they cannot flag unrelated text. Every removal records the benchmark, the item id and the matching n-gram.

datatrove's own ``NGramsDecontIndexer`` downloads tasks through lighteval at run time (impossible offline) and
does not fold Arabic spelling variants (hamza forms, ى/ي, ة/ه, tashkeel), so the index is built here from the local mirrors and applied by a datatrove filter.
"""

from __future__ import annotations

import logging
import pickle
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from arabic_r1.arabic_text import normalized_words
from arabic_r1.benchmarks import BenchmarkRow

log = logging.getLogger(__name__)


def _hash(text: str) -> int:
    return xxhash.xxh3_64_intdigest(text)


def window_strings(words: list[str], n: int) -> Iterable[tuple[int, str]]:
    """(start, "w_i ... w_{i+n-1}") for each window, by slicing one joined string (no per-window join)."""
    if len(words) < n:
        return
    text = " ".join(words)
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    for i in range(len(words) - n + 1):
        end = starts[i + n - 1] + len(words[i + n - 1])
        yield i, text[starts[i] : end]


@dataclass
class DecontaminationIndex:
    n: int
    min_short_words: int
    items: list[str] = field(default_factory=list)  # item ids ("benchmark:subset:split:id")
    ngrams: dict[int, int] = field(default_factory=dict)  # n-gram hash -> item index
    anchors: dict[int, list[tuple[int, tuple[str, ...]]]] = field(
        default_factory=dict
    )  # first words -> (item, words)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)  # per benchmark

    def benchmark_of(self, item: int) -> str:
        return self.items[item].split(":", 1)[0]

    def match(self, words: list[str]) -> tuple[int, str] | None:
        """(item index, matching normalised n-gram) for the first benchmark match in ``words``, else None."""
        for _, gram in window_strings(words, self.n):
            item = self.ngrams.get(_hash(gram))
            if item is not None:
                return item, gram
        if self.anchors:
            m = self.min_short_words
            for i, gram in window_strings(words, m):
                for item, seg in self.anchors.get(_hash(gram), ()):
                    if tuple(words[i : i + len(seg)]) == seg:
                        return item, " ".join(seg)
        return None

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
        return path

    @staticmethod
    def load(path: Path) -> DecontaminationIndex:
        with Path(path).open("rb") as f:  # our own artifact in the run folder
            return pickle.load(f)  # noqa: S301


def build_index(
    rows: Iterable[BenchmarkRow], n: int = 13, min_short_words: int = 8, max_items_per_ngram: int = 10
) -> DecontaminationIndex:
    """Index every item; n-grams found in more than ``max_items_per_ngram`` items are boilerplate and dropped."""
    if min_short_words > n:
        raise ValueError(f"min_short_words ({min_short_words}) must be <= n ({n})")
    index = DecontaminationIndex(n=n, min_short_words=min_short_words)
    owners: dict[int, set[int]] = defaultdict(set)
    first_owner: dict[int, int] = {}
    stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    anchors: dict[int, dict[tuple[str, ...], int]] = defaultdict(dict)
    for row in rows:
        item = len(index.items)
        index.items.append(row.item_id)
        st = stats[row.benchmark]
        st["items"] += 1
        for seg in row.segments():
            words = normalized_words(seg)
            if len(words) >= n:
                st["segments_ngram"] += 1
                for _, gram in window_strings(words, n):
                    h = _hash(gram)
                    owners[h].add(item)
                    first_owner.setdefault(h, item)
            elif len(words) >= min_short_words:
                st["segments_whole"] += 1
                anchors[_hash(" ".join(words[:min_short_words]))].setdefault(tuple(words), item)
            else:
                st["segments_too_short"] += 1
    for h, items in owners.items():
        bench = index.benchmark_of(first_owner[h])
        if len(items) > max_items_per_ngram:
            stats[bench]["ngrams_dropped_boilerplate"] += 1
            continue
        index.ngrams[h] = first_owner[h]
        stats[bench]["ngrams"] += 1
    for h, segs in anchors.items():
        index.anchors[h] = [(item, seg) for seg, item in segs.items()]
    index.stats = {b: dict(s) for b, s in stats.items()}
    return index


class DecontaminationFilter(BaseFilter):
    """datatrove filter: drop a document that shares an n-gram (or a whole short question) with a benchmark item."""

    name = "🧪 OALL decontamination"

    def __init__(self, index_path: str | Path, exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer)
        self.index_path = str(index_path)
        self._index: DecontaminationIndex | None = None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self._index is None:
            self._index = DecontaminationIndex.load(Path(self.index_path))
        hit = self._index.match(normalized_words(doc.text))
        if hit is None:
            return True
        item, gram = hit
        bench = self._index.benchmark_of(item)
        doc.metadata["contamination"] = {
            "benchmark": bench,
            "item_id": self._index.items[item],
            "ngram": gram,
        }
        self.stat_update(f"contaminated_{bench}")
        return False, f"contaminated:{bench}"


def contamination_report(index: DecontaminationIndex, removed: list[dict[str, Any]]) -> dict[str, Any]:
    """Per benchmark: items indexed, n-grams, training items removed; and every removal with its evidence."""
    per: dict[str, dict[str, Any]] = {b: {**s, "removed": 0} for b, s in index.stats.items()}
    for r in removed:
        per.setdefault(r["benchmark"], {"removed": 0})["removed"] += 1
    return {"n": index.n, "min_short_words": index.min_short_words, "benchmarks": per, "removals": removed}
