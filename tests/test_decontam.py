"""Decontamination against real benchmark rows (../shared/data/oall) and real unrelated Arabic text."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FLAT_SPLITS, read_jsonl

from arabic_r1.arabic_text import SPELLING_VARIANTS, normalized_words
from arabic_r1.benchmarks import BenchmarkRow, iter_mirror_rows
from arabic_r1.decontam import build_index

QUESTION = {
    "arabic_mmlu": "Question",
    "madinah_qa": "Question",
    "aratrust": "Question",
    "arabic_exams": "question",
}


@pytest.fixture(scope="module")
def rows(real_mirror: Path) -> list[BenchmarkRow]:
    return [r for key in FLAT_SPLITS for r in iter_mirror_rows(real_mirror, key)]


@pytest.fixture(scope="module")
def index(rows):
    return build_index(rows, n=13, min_short_words=8)


def test_index_covers_every_benchmark(index, rows) -> None:
    assert set(index.stats) == set(FLAT_SPLITS)
    assert sum(s["items"] for s in index.stats.values()) == len(rows) == 133 + 19 + 5 + 3 + 150 + 138 + 25
    assert len(index.ngrams) > 1000


@pytest.mark.parametrize("variant", sorted(SPELLING_VARIANTS))
def test_real_rows_embedded_with_spelling_variants_are_found(index, rows, variant: str) -> None:
    vary = SPELLING_VARIANTS[variant]
    eligible = [
        r for r in rows if len(normalized_words(r.row[QUESTION[r.benchmark]])) >= index.min_short_words
    ]
    assert len(eligible) > 150
    missed = []
    for r in eligible:
        question = r.row[QUESTION[r.benchmark]]
        text = f"ساعدني في حل هذا السؤال من فضلك:\n{vary(question)}\nوشكرا جزيلا على المساعدة."
        hit = index.match(normalized_words(text))
        if hit is None:
            missed.append(r.item_id)
            continue
        item, gram = hit
        matched = next(x for x in rows if x.item_id == index.items[item])
        assert normalized_words(gram)[0] in normalized_words(
            matched.row[QUESTION[matched.benchmark]]
        ) or gram in " ".join(normalized_words(" ".join(matched.segments())))
    assert not missed, (
        f"{len(missed)}/{len(eligible)} planted rows not found with variant {variant}: {missed[:3]}"
    )


def test_unrelated_real_text_is_not_flagged(index, shared_data: Path) -> None:
    texts = [r["text"] for r in read_jsonl(shared_data / "corpus" / "ar_pud_sentences.jsonl")]
    texts += [r["context"] for r in read_jsonl(shared_data / "corpus" / "ar_arcd_paragraphs.jsonl")]
    texts += [r["text"] for r in read_jsonl(shared_data / "corpus" / "en_pud_sentences.jsonl")]
    flagged = [t[:80] for t in texts if index.match(normalized_words(t))]
    assert not flagged, flagged


def test_short_fragments_and_boilerplate_do_not_match(rows) -> None:
    template = "اختر الإجابة الصحيحة من بين الخيارات التالية بعد قراءة السؤال بعناية شديدة"
    fake = [
        BenchmarkRow("arabic_mmlu", "s", "test", i, {"Question": f"{template} رقم {i}"}) for i in range(12)
    ]
    idx = build_index(fake, n=13, min_short_words=8, max_items_per_ngram=10)
    assert idx.stats["arabic_mmlu"]["ngrams_dropped_boilerplate"] >= 1
    assert idx.match(normalized_words(f"{template} في امتحان اليوم")) is None
    assert (
        idx.match(normalized_words(f"نص: {template} رقم 3")) is not None
    )  # the item-specific n-gram still matches
    short = build_index(
        [BenchmarkRow("aratrust", "s", "train", 0, {"Question": "ما هو لون السماء؟"})],
        n=13,
        min_short_words=8,
    )
    assert (
        short.stats["aratrust"]["segments_too_short"] == 1
        and short.match(normalized_words("ما هو لون السماء؟")) is None
    )


def test_index_round_trips(index, tmp_path: Path) -> None:
    from arabic_r1.decontam import DecontaminationIndex

    loaded = DecontaminationIndex.load(index.save(tmp_path / "i.pkl"))
    assert loaded.items == index.items and loaded.ngrams == index.ngrams
