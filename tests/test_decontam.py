"""Decontamination against real benchmark rows (../shared/data/oall) and real unrelated Arabic text."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import FLAT_SPLITS, read_jsonl

from arabic_r1.arabic_text import SPELLING_VARIANTS, add_tashkeel, normalized_words
from arabic_r1.benchmark_mirrors import BenchmarkRow, iter_mirror_rows
from arabic_r1.decontam import build_index, content_words, segment_words


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


def embed(r: BenchmarkRow, vary, with_options: bool) -> str:
    """The item quoted inside unrelated text, as a forum post or an exam dump would."""
    body = vary(r.question())
    if with_options:
        body += "\n" + "\n".join(f"- {vary(o)}" for o in r.options())
    return f"ساعدني في حل هذا السؤال من فضلك:\n{body}\nوشكرا جزيلا على المساعدة."


def bucket(r: BenchmarkRow) -> str:
    n = len(normalized_words(r.question()))
    return "<8" if n < 8 else "8-12" if n < 13 else ">=13"


@pytest.mark.parametrize("with_options", [False, True], ids=["question", "question+options"])
@pytest.mark.parametrize("variant", sorted(SPELLING_VARIANTS))
def test_real_rows_embedded_with_spelling_variants_are_found(index, rows, variant: str, with_options) -> None:
    """Recall >= 99% per question length; alone, a question must carry the information floor (3 content words)."""
    vary = SPELLING_VARIANTS[variant]
    planted = [
        r
        for r in rows
        if with_options or content_words(segment_words(r.question())) >= index.min_content_words
    ]
    assert len(planted) >= (470 if with_options else 460)
    missed: dict[str, list[str]] = {"<8": [], "8-12": [], ">=13": []}
    total = Counter(bucket(r) for r in planted)
    assert total["<8"] >= 80  # the short questions the 8-word floor used to skip are in the sample
    for r in planted:
        hit = index.match(normalized_words(embed(r, vary, with_options)))
        if hit is None:
            missed[bucket(r)].append(r.item_id)
            continue
        matched = next(x for x in rows if x.item_id == index.items[hit[0]])
        assert segment_words(matched.question()) == segment_words(r.question()) or hit[1] in " ".join(
            normalized_words(" ".join(matched.segments()))
        ), (r.item_id, hit)
    for b, ids in missed.items():
        assert len(ids) <= 0.01 * total[b], f"{variant}, {b} words: missed {len(ids)}/{total[b]}: {ids[:3]}"


def test_questions_below_the_floor_need_their_options(index, rows, shared_data: Path) -> None:
    """The real items whose question alone is too common ("العمود الفقري") match only with their options."""
    weak = [r for r in rows if content_words(segment_words(r.question())) < index.min_content_words]
    assert 5 <= len(weak) <= 12
    for r in weak:
        assert index.match(normalized_words(embed(r, str, False))) is None, r.item_id
        assert index.match(normalized_words(embed(r, str, True))) is not None, r.item_id


def test_unrelated_real_text_is_not_flagged(index, shared_data: Path) -> None:
    texts = [r["text"] for r in read_jsonl(shared_data / "corpus" / "ar_pud_sentences.jsonl")]
    texts += [r["context"] for r in read_jsonl(shared_data / "corpus" / "ar_arcd_paragraphs.jsonl")]
    texts += [r["text"] for r in read_jsonl(shared_data / "corpus" / "en_pud_sentences.jsonl")]
    flagged = [t[:80] for t in texts if index.match(normalized_words(t))]
    assert not flagged, flagged


def test_boilerplate_ngrams_are_dropped_over_the_limit_only(rows) -> None:
    template = "اختر الإجابة الصحيحة من بين الخيارات التالية بعد قراءة السؤال بعناية شديدة"

    def index_of(copies: int):
        fake = [
            BenchmarkRow("arabic_mmlu", "s", "test", i, {"Question": f"{template} رقم {i}"})
            for i in range(copies)
        ]
        return build_index(fake, n=13, min_short_words=8, max_items_per_ngram=10)

    at_limit, over = index_of(10), index_of(11)
    assert len(template.split()) == 12  # + "رقم": the 13-gram every item shares
    assert at_limit.match(normalized_words(f"{template} رقم في امتحان اليوم")) is not None
    assert over.stats["arabic_mmlu"]["ngrams_dropped_boilerplate"] >= 1
    assert over.match(normalized_words(f"{template} رقم في امتحان اليوم")) is None
    assert over.match(normalized_words(f"نص: {template} رقم 3")) is not None  # the item-specific n-gram


def mcq(i: int, question: str, *options: str) -> BenchmarkRow:
    letters = "ABCD"
    return BenchmarkRow(
        "arabic_exams",
        "s",
        "test",
        i,
        {"id": f"s-{i}", "question": question, **dict(zip(letters, options, strict=False))},
    )


def test_a_short_question_is_matched_whole_and_only_whole() -> None:
    q = "ما نواتج هضم الدهون في الجهاز الهضمي للإنسان البالغ؟"  # 10 words: shorter than an n-gram
    idx = build_index([mcq(0, q, "أحماض دهنية", "جلوكوز")])
    assert idx.stats["arabic_exams"]["questions_whole"] == 1
    hit = idx.match(normalized_words(f"في درس الأحياء: {add_tashkeel(q)} سؤال مهم"))
    assert hit is not None and hit[1] == " ".join(normalized_words(q))
    first_eight = " ".join(q.split()[:8])
    assert idx.match(normalized_words(f"{first_eight} الكبير في المختبر")) is None
    four = build_index([mcq(0, "ما نواتج هضم الدهون؟", "أحماض دهنية", "جلوكوز")])
    assert four.match(normalized_words("سؤال الامتحان: ما نواتج هضم الدهون؟ أجب بالتفصيل")) is not None
    assert four.match(normalized_words("ما نواتج هضم البروتينات؟")) is None


def test_a_question_below_the_information_floor_needs_its_options() -> None:
    q = "ما هو لون السماء؟"  # two content words: common in any text about the sky
    idx = build_index([mcq(0, q, "أ) أزرق", "ب) أحمر", "ج) أخضر")])
    assert idx.stats["arabic_exams"]["questions_with_options"] == 1
    assert idx.match(normalized_words(f"سألني ابني: {q} فلم أعرف كيف أشرح")) is None
    hit = idx.match(normalized_words(f"{q}\nأ- أزرق\nب- أحمر"))
    assert hit is not None and "ازرق" in hit[1]
    assert idx.match(normalized_words(f"{q} " + "كلام " * 40 + "أزرق")) is None  # too far to be its option
    assert idx.match(normalized_words("السماء زرقاء والوردة لونها أحمر")) is None  # options alone never match


def test_a_question_shared_by_many_items_matches_with_its_own_options_only() -> None:
    q = "اختر الكلمة المختلفة"
    options = [(f"قلم{i}", f"كتاب{i}", f"دفتر{i}") for i in range(12)]
    idx = build_index([mcq(i, q, *o) for i, o in enumerate(options)])
    assert idx.match(normalized_words(f"التمرين الأول: {q} من القائمة")) is None
    hit = idx.match(normalized_words(f"{q}: قلم5 - كتاب5 - دفتر5"))
    assert hit is not None and idx.items[hit[0]] == "arabic_exams:s:test:s-5"


def test_an_enumerator_is_not_part_of_the_question() -> None:
    idx = build_index([mcq(0, "س4: الصورة البيانية في صمت السهل :", "تشبيه", "استعارة")])
    assert idx.match(normalized_words("ما الصورة البيانية في صمت السهل؟")) is not None
    assert segment_words("7- النص تحدث عن المسك من حيث:") == normalized_words("النص تحدث عن المسك من حيث")


def test_index_round_trips(index, tmp_path: Path) -> None:
    from arabic_r1.decontam import DecontaminationIndex

    loaded = DecontaminationIndex.load(index.save(tmp_path / "i.pkl"))
    assert loaded == index and loaded.anchors and loaded.stats and loaded.anchor_lengths == (2, 3)


def test_the_filter_reads_the_whole_of_a_long_document(index, rows, tmp_path: Path) -> None:
    """Contamination quoted after thousands of words of unrelated text is still found, long and short items."""
    from datatrove.data import Document

    from arabic_r1.decontam import DecontaminationFilter

    long_item = next(r for r in rows if len(normalized_words(r.question())) >= 13)
    short_item = next(
        r
        for r in rows
        if len(normalized_words(r.question())) < 8 and content_words(segment_words(r.question())) >= 3
    )
    filler = " ".join(f"كان الطقس جميلا في المدينة القديمة يوم {i}." for i in range(400))  # 3,200 words
    f = DecontaminationFilter(index.save(tmp_path / "i.pkl"))
    assert f.filter(Document(text=filler, id="clean")) is True
    for r in (long_item, short_item):
        doc = Document(text=f"{filler} {r.question()}", id=r.item_id)
        assert f.filter(doc) == (False, f"contaminated:{r.benchmark}"), r.item_id
        assert doc.metadata["contamination"]["ngram"] in " ".join(normalized_words(r.question()))


def test_the_datatrove_filter_reads_the_saved_index_and_names_the_item(tmp_path: Path) -> None:
    """The phase-01 path in process on the shipped fixture rows: save, load in the filter, drop a document quoting an
    item with its evidence, keep an unrelated one; the report counts removals per benchmark."""
    from datatrove.data import Document

    from arabic_r1.benchmark_mirrors import fixture_mirror_dir
    from arabic_r1.decontam import DecontaminationFilter, DecontaminationIndex, contamination_report

    rows = [r for key in ("arabic_mmlu", "aratrust") for r in iter_mirror_rows(fixture_mirror_dir(), key)]
    index = build_index(rows, n=13, min_short_words=8)
    path = index.save(tmp_path / "deep" / "er" / "index.pkl")
    assert (
        path == tmp_path / "deep" / "er" / "index.pkl" and index.save(path) == path
    )  # saved again: replaced
    loaded = DecontaminationIndex.load(path)
    assert (loaded.items, loaded.ngrams, loaded.stats, loaded.n) == (
        index.items,
        index.ngrams,
        index.stats,
        13,
    )
    quoted = next(r for r in rows if r.benchmark == "aratrust" and len(normalized_words(r.question())) >= 13)
    f = DecontaminationFilter(path)
    doc = Document(text=embed(quoted, lambda s: s, False), id="d1")
    assert f.filter(doc) == (False, "contaminated:aratrust")
    found = doc.metadata["contamination"]
    assert found["benchmark"] == "aratrust" and found["item_id"] == quoted.item_id
    assert found["ngram"] in " ".join(normalized_words(quoted.question()))
    assert f.stats["contaminated_aratrust"].total == 1
    assert f.filter(Document(text="نص عادي عن الطقس في المدينة اليوم وغدا وبعد غد.", id="d2")) is True
    # as phase 01 runs it: the dropped document lands in the exclusion writer's file, with its reason
    from datatrove.pipeline.writers import JsonlWriter

    removed = tmp_path / "removed"
    writer = JsonlWriter(str(removed), output_filename="${rank}.jsonl", compression=None)
    docs = [
        Document(text=embed(quoted, lambda s: s, False), id="d1"),
        Document(text="نص عادي تماما.", id="d2"),
    ]
    kept = list(DecontaminationFilter(path, exclusion_writer=writer).run(iter(docs)))
    assert [d.id for d in kept] == ["d2"]
    (dropped,) = [json.loads(ln) for ln in (removed / "00000.jsonl").read_text(encoding="utf-8").splitlines()]
    assert dropped["id"] == "d1" and dropped["metadata"]["filter_reason"] == "contaminated:aratrust"
    assert index.benchmark_of(index.items.index(quoted.item_id)) == "aratrust"
    removed = [{"benchmark": "aratrust", "id": "d1"}, {"benchmark": "aratrust", "id": "d3"},
               {"benchmark": "other", "id": "d4"}]  # fmt: skip
    report = contamination_report(index, removed)
    assert report["benchmarks"]["aratrust"] == {**index.stats["aratrust"], "removed": 2}
    assert report["benchmarks"]["arabic_mmlu"]["removed"] == 0 and report["benchmarks"]["other"] == {
        "removed": 1
    }
    assert (report["n"], report["min_short_words"], report["min_content_words"]) == (13, 8, 3)
    assert report["removals"] == removed


_LONG = ("الطالب يدرس الرياضيات في المدرسة الثانوية كل صباح قبل الذهاب إلى المكتبة العامة لقراءة الكتب العلمية "
         "الحديثة عن الفيزياء والكيمياء")  # fmt: skip
_BOILER = "اقرأ النص التالي بعناية ثم أجب عن السؤال الذي يليه باختيار الإجابة الصحيحة من الخيارات"
_TAILS = [
    "القاهرة",
    "دمشق",
    "بغداد",
    "الرياض",
    "عمان",
    "تونس",
    "الرباط",
    "الجزائر",
    "بيروت",
    "صنعاء",
    "مسقط",
    "الدوحة",
]


def _row(i: int, question: str) -> BenchmarkRow:
    return BenchmarkRow(
        "aratrust", "s", "train", i, {"Question": question, "A": "نعم", "B": "لا", "C": "ربما"}
    )


def test_long_questions_are_found_by_their_13_word_windows_and_boilerplate_is_not() -> None:
    """The n-gram half of the index on crafted rows: a 13-word window of a long question is a match, 12 words are
    not; a 13-word instruction shared by more than 10 items is boilerplate (dropped and counted), by 10 it is not."""
    rows = [_row(0, _LONG)] + [_row(i + 1, f"{_BOILER} {t}") for i, t in enumerate(_TAILS[:11])]
    index = build_index(rows)
    words = normalized_words(_LONG)
    assert len(words) == 20 and index.n == 13 and index.min_short_words == 8 and index.min_content_words == 3
    hit = index.match(("مقدمة", *words[3:16], "خاتمة"))
    assert hit == (0, " ".join(words[3:16]))
    assert (
        index.match(words[3:15]) is None
    )  # 12 words of a long question: not an n-gram, not a short question
    boiler = normalized_words(_BOILER)
    assert len(boiler) == 15 and index.match(boiler) is None  # in 11 items: boilerplate
    n_windows = lambda k: k - 13 + 1  # noqa: E731
    assert index.stats["aratrust"] == {
        "items": 12, "segments_ngram": 12,
        "ngrams": n_windows(20) + 11 * 1,  # each item's own last window (boilerplate + its city) is its own
        "ngrams_dropped_boilerplate": n_windows(15),
        "segments_companion_only": 12 * 3,  # the one-word options: too short to match alone
        "questions_too_short": 0,  # a long question is no short question
    }  # fmt: skip
    ten = build_index([_row(i, f"{_BOILER} {t}") for i, t in enumerate(_TAILS[:10])])
    assert ten.match(boiler)[0] == 0  # in 10 items: kept, owned by the first
    assert build_index(rows, max_items_per_ngram=11).match(boiler) is not None
    with pytest.raises(ValueError, match=r"^min_short_words \(14\) must be <= n \(13\)$"):
        build_index(rows, min_short_words=14)
    assert build_index(rows, n=8, min_short_words=8).match(words[:8]) == (0, " ".join(words[:8]))


def test_short_segments_words_and_the_evidence_a_removal_records() -> None:
    assert content_words(normalized_words("دم في و الكبد")) == 2  # two letters or more, not a stop word
    assert segment_words("7") == ("7",) and segment_words("س4: القاهرة") == (
        "القاهره",
    )  # an enumerator alone stays
    exact = build_index([_row(0, " ".join(_LONG.split()[:13]))])  # a question of exactly n words: one window
    assert exact.stats["aratrust"]["segments_ngram"] == 1 and len(exact.ngrams) == 1
    assert exact.match(normalized_words(_LONG)[:13]) == (0, " ".join(normalized_words(_LONG)[:13]))
    # a question under the information floor counts only with its own options, named in the evidence
    q = BenchmarkRow("aratrust", "s", "train", 0, {"Question": "ما هو الجواب", "A": "مدينة الرباط", "B": "لا",
                                                   "C": "ربما"})  # fmt: skip
    index = build_index([q])
    said = normalized_words("سؤال: ما هو الجواب؟ الخيارات مدينة الرباط أو لا")
    assert index.match(said) == (0, "ما هو الجواب … مدينه الرباط")
    assert index.match(normalized_words("ما هو الجواب يا صديقي")) is None
    # two short questions that open alike: the one the text quotes is found, not only the first looked at
    twins = build_index([_row(0, "عاصمة دولة المغرب الجميلة"), _row(1, "عاصمة دولة المغرب القديمة")])
    assert twins.match(normalized_words("اذكر عاصمة دولة المغرب القديمة من فضلك"))[0] == 1


def _item(i: int, q: str, a: str, b: str, c: str) -> BenchmarkRow:
    return BenchmarkRow("aratrust", "s", "train", i, {"Question": q, "A": a, "B": b, "C": c})


SHORT_ROWS = [
    # a 4-word question with exactly 3 content words (whole); an 8-word option with exactly 3 (whole); a 9-word one
    _item(0, "ما عاصمة دولة المغرب", "الرباط هي العاصمة السياسية والإدارية للمملكة المغربية منذ الاستقلال",
          "هو في ذلك الوقت كان من أهل العلم", "مراكش"),
    # a 2-word question under the floor: matched only with its own options, found within a window after it
    _item(1, "اختر الصحيح", "سبعة أيام", "ستة أيام", "اختر الصحيح"),
    # a 1-word "question" is a label; a 3-word option of 3 content words is still too short alone
    _item(2, "لماذا", "الشمس والقمر والنجوم", "نعم", "لا"),
    _item(3, "", "جواب أول", "جواب ثان", "جواب ثالث"),  # no question: every segment is an option
]  # fmt: skip


def test_short_questions_and_options_by_their_floors() -> None:
    """The short-segment half of the index on crafted rows, each at a boundary: 8 words and 3 content words make an
    option whole, a 2-word question is no label, a question under the floor needs its own options within the window
    that follows it, the information floor is a parameter."""
    index = build_index(SHORT_ROWS)
    assert index.stats["aratrust"] == {
        "items": 4, "questions_whole": 1, "questions_with_options": 1, "questions_too_short": 1,
        "segments_whole": 2, "segments_companion_only": 1 + 3 + 3 + 3,
    }  # fmt: skip
    w = lambda t: normalized_words(t)  # noqa: E731
    assert index.match(w("سؤال: ما عاصمة دولة المغرب؟")) == (0, "ما عاصمه دوله المغرب")
    assert index.match(w("قيل: هو في ذلك الوقت كان من أهل العلم.")) == (0, "هو في ذلك الوقت كان من اهل العلم")
    assert index.match(w("الشمس والقمر والنجوم في السماء")) is None  # 3 words: a companion only
    assert index.match(w("اختر الصحيح")) is None and index.match(w("اختر الصحيح اختر الصحيح")) is None
    # the window after "اختر الصحيح": (2 + 3) words per distinct other option, x2, + 8 = 18 words
    filler = ["كلمة"] * 16
    inside = [
        "اختر",
        "الصحيح",
        *filler,
        "سبعه",
        "ايام",
    ]  # the option's last word is the 18th after the question
    assert index.match(tuple(inside)) == (1, "اختر الصحيح … سبعه ايام")
    assert index.match(tuple(["اختر", "الصحيح", *filler, "كلمة", "سبعه", "ايام"])) is None  # one word beyond
    assert build_index(SHORT_ROWS, min_content_words=2).match(w("اختر الصحيح")) == (1, "اختر الصحيح")


def test_a_short_question_shared_by_many_items_loses_its_information() -> None:
    """Shared by 10 items a short question still matches alone; by 11 it is boilerplate and needs an option whose
    content words reach the floor on their own (a shared question then brings none)."""
    q = "اختر الإجابة الصحيحة من بين الخيارات التالية"
    ten = build_index([_item(i, q, f"مدينة {c}", "نعم", "لا") for i, c in enumerate(_TAILS[:10])])
    assert ten.match(normalized_words(q))[0] == 0 and ten.stats["aratrust"]["questions_whole"] == 10
    eleven = build_index([_item(i, q, f"مدينة {c}", "نعم", "لا") for i, c in enumerate(_TAILS[:11])])
    assert eleven.stats["aratrust"]["questions_with_options"] == 11
    assert eleven.match(normalized_words(q)) is None
    assert eleven.match(normalized_words(f"{q} مدينة القاهرة")) is None  # 2 content words: under the floor
    assert eleven.match(normalized_words(f"{q} مدينة القاهرة نعم لا")) is None
