"""N-gram decontamination against the OALL v2 benchmarks, Arabic-normalised, for items of any length.

Every text is compared after Arabic folding (tashkeel and tatweel removed, أ/إ/آ→ا, ى→ي, ة→ه), so a training
text that quotes an item with spelling variants still matches. Three rules, one per kind of segment:

- **Long segments** (``n`` = 13 words or more: most questions, passages, long options): the hash of every
  ``n``-gram is indexed; an ``n``-gram found in more than ``max_items_per_ngram`` items is instruction boilerplate
  and dropped (counted), so it cannot flag unrelated text.
- **Short questions** (2 to ``n``-1 words; a quarter of ArabicMMLU and EXAMS, a fifth of AraTrust): matched as
  a whole, contiguous run of words in the training text, anchored on their first words. A short question alone
  is weak evidence - "ما هو سبب الفصام" or "العمود الفقري" occur in any medical or biology text - so a match must
  carry information: at least ``min_content_words`` content words (not stop words, two letters or more). A
  question with fewer, or one shared by more than ``max_items_per_ngram`` items ("اختر الكلمة المختلفة"), counts
  as matched only when its own options or gold answer follow it within the length of the options, and the
  content words of question and options found reach the floor: that is the form in which an exam item is
  copied into a web page. A leading enumerator ("س4:", "7-", "أ)") is not part of the item and is dropped.
- **Short options and passages**: matched whole on their own from ``min_short_words`` (8) words; shorter ones
  are too common alone ("جميع ما سبق", a place name) and only serve as the companions of their question.

Every removal records the benchmark, the item id and the matching words, so a false positive can be audited.
datatrove's own ``NGramsDecontIndexer`` downloads tasks through lighteval at run time (impossible offline),
indexes n-grams only (a question under 13 words is never checked) and does not fold Arabic spelling variants,
so the index is built here from the local mirrors and applied by a datatrove filter.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from arabic_r1.arabic_text import STOP_WORDS, normalized_words
from arabic_r1.benchmark_mirrors import BenchmarkRow

log = logging.getLogger(__name__)

ANCHOR_WORDS = 3  # a short question is looked up by its first words (fewer if it is shorter)
MIN_QUESTION_WORDS = 2  # a one-word "question" is a label, not an item
_ENUMERATOR = re.compile(r"^(?:\d+|[^\W\d_]|[^\W\d_]{1,2}\d+)$")  # "7", "أ", "س4", "q12"


def _hash(text: str) -> int:
    return xxhash.xxh3_64_intdigest(text)


def window_strings(words: list[str] | tuple[str, ...], n: int) -> Iterable[tuple[int, str]]:
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


def content_words(words: Iterable[str]) -> int:
    """Words that carry information: not stop words, two letters or more."""
    return sum(1 for w in words if len(w) >= 2 and w not in STOP_WORDS)


def segment_words(text: str) -> tuple[str, ...]:
    """Normalised words of a short segment, without a leading enumerator ("س4:", "7-", "أ)")."""
    words = normalized_words(text)
    while len(words) > 1 and _ENUMERATOR.match(words[0]):
        words = words[1:]
    return words


@dataclass(frozen=True)
class ShortSegment:
    """A short question (or option) matched whole; below the information floor only with its companions."""

    item: int
    words: tuple[str, ...]
    info: int  # content words it contributes on its own (0 when shared by many items)
    companions: tuple[tuple[tuple[str, ...], int], ...] = ()  # (words, info) of the item's options / gold
    window: int = 0  # how many words after it the companions are searched in


@dataclass
class DecontaminationIndex:
    n: int
    min_short_words: int
    min_content_words: int = 3
    items: list[str] = field(default_factory=list)  # item ids ("benchmark:subset:split:id")
    ngrams: dict[int, int] = field(default_factory=dict)  # n-gram hash -> item index
    anchors: dict[int, list[ShortSegment]] = field(default_factory=dict)  # hash of first words -> segments
    anchor_lengths: tuple[int, ...] = ()  # the anchor sizes present (one pass over the text each)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)  # per benchmark

    def benchmark_of(self, item: int) -> str:
        return self.items[item].split(":", 1)[0]

    def match(self, words: list[str] | tuple[str, ...]) -> tuple[int, str] | None:
        """(item index, matching normalised words) for the first benchmark match in ``words``, else None."""
        for _, gram in window_strings(words, self.n):
            item = self.ngrams.get(_hash(gram))
            if item is not None:
                return item, gram
        for k in self.anchor_lengths:
            for i, gram in window_strings(words, k):
                for seg in self.anchors.get(_hash(gram), ()):
                    end = i + len(seg.words)
                    if tuple(words[i:end]) != seg.words:
                        continue
                    evidence = self._evidence(seg, words, end)
                    if evidence is not None:
                        return seg.item, evidence
        return None

    def _evidence(self, seg: ShortSegment, words: list[str] | tuple[str, ...], end: int) -> str | None:
        """The matched words if they reach the information floor, adding the companions that follow."""
        found, info = [" ".join(seg.words)], seg.info
        if info >= self.min_content_words:
            return found[0]
        after = f" {' '.join(words[end : end + seg.window])} "
        for comp, comp_info in seg.companions:
            if f" {' '.join(comp)} " in after:
                found.append(" ".join(comp))
                info += comp_info
                if info >= self.min_content_words:
                    return " … ".join(found)
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
    rows: Iterable[BenchmarkRow],
    n: int = 13,
    min_short_words: int = 8,
    max_items_per_ngram: int = 10,
    min_content_words: int = 3,
) -> DecontaminationIndex:
    """Index every item; n-grams and short segments found in more than ``max_items_per_ngram`` items are
    boilerplate (an n-gram is dropped, a short question must then be followed by its options)."""
    if min_short_words > n:
        raise ValueError(f"min_short_words ({min_short_words}) must be <= n ({n})")
    index = DecontaminationIndex(n=n, min_short_words=min_short_words, min_content_words=min_content_words)
    owners: dict[int, set[int]] = defaultdict(set)
    first_owner: dict[int, int] = {}
    stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    short: list[tuple[int, str, tuple[str, ...], list[tuple[str, ...]]]] = []  # item, bench, question, rest
    shared: Counter[tuple[str, ...]] = Counter()  # short segment -> number of items holding it
    for row in rows:
        item = len(index.items)
        index.items.append(row.item_id)
        st = stats[row.benchmark]
        st["items"] += 1
        question, rest = None, []
        for k, seg in enumerate(row.segments()):
            words = normalized_words(seg)
            if len(words) >= n:
                st["segments_ngram"] += 1
                for _, gram in window_strings(words, n):
                    h = _hash(gram)
                    owners[h].add(item)
                    first_owner.setdefault(h, item)
            elif k == 0 and seg == row.question():
                question = segment_words(seg)
            else:
                rest.append(segment_words(seg))
        for words in {w for w in (question, *rest) if w}:
            shared[words] += 1
        short.append((item, row.benchmark, question or (), rest))
    for h, items in owners.items():
        bench = index.benchmark_of(first_owner[h])
        if len(items) > max_items_per_ngram:
            stats[bench]["ngrams_dropped_boilerplate"] += 1
            continue
        index.ngrams[h] = first_owner[h]
        stats[bench]["ngrams"] += 1

    def info(words: tuple[str, ...]) -> int:
        return 0 if shared[words] > max_items_per_ngram else content_words(words)

    # one segment per distinct text when it matches alone; one per item when it needs that item's options
    anchors: dict[int, dict[Any, ShortSegment]] = defaultdict(dict)

    def add(seg: ShortSegment) -> None:
        key = seg.words if seg.info >= min_content_words else (seg.words, seg.item)
        anchors[_hash(" ".join(seg.words[:ANCHOR_WORDS]))].setdefault(key, seg)

    for item, bench, question, rest in short:
        st = stats[bench]
        for words in rest:
            if len(words) >= min_short_words and info(words) >= min_content_words:
                st["segments_whole"] += 1
                add(ShortSegment(item, words, info(words)))
            else:
                st["segments_companion_only"] += 1
        if len(question) < MIN_QUESTION_WORDS:
            st["questions_too_short"] += 1 if question else 0
            continue
        comps = tuple((w, info(w)) for w in dict.fromkeys(rest) if w and w != question)
        seg = ShortSegment(item, question, info(question), comps, sum(len(w) + 3 for w, _ in comps) + 8)
        st["questions_whole" if seg.info >= min_content_words else "questions_with_options"] += 1
        add(seg)
    for h, segs in anchors.items():
        index.anchors[h] = list(segs.values())
    index.anchor_lengths = tuple(
        sorted({min(len(s.words), ANCHOR_WORDS) for segs in index.anchors.values() for s in segs})
    )
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
    return {
        "n": index.n,
        "min_short_words": index.min_short_words,
        "min_content_words": index.min_content_words,
        "benchmarks": per,
        "removals": removed,
    }
