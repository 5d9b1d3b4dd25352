"""Phase 03 checks: real text nobody here wrote passes; every planted flaw is caught by its own check only."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
from conftest import read_jsonl

from arabic_r1.cot import ParsedTrace, parse_trace
from arabic_r1.params import REPO_DIR
from arabic_r1.params_loading import load_params
from arabic_r1.trace_checks import CHECKS, Trace, Verdict, verify_trace
from arabic_r1.verify import verify_traces

P = load_params("smoke").verify


def _plain(text: str, lang: str) -> Trace:
    """Real text as a check sees a trace's reasoning, once (as both reasoning and answer every n-gram would repeat,
    and the degeneration check would reject nearly all of it)."""
    return Trace("x", lang, "c", "", text, None, ParsedTrace(think=text, closed=True, answer=""))


def _frr(texts: list[str], lang: str, check) -> float:
    return sum(not check(_plain(t, lang), P).passed for t in texts) / len(texts)


@pytest.fixture(scope="module")
def real(shared_data: Path) -> dict[str, list[str]]:
    corpus = shared_data / "corpus"
    questions = []
    for key, field in (
        ("arabic_mmlu", "Question"),
        ("madinah_qa", "Question"),
        ("aratrust", "Question"),
        ("arabic_exams", "question"),
    ):
        for f in sorted((shared_data / "oall" / key).glob("*.jsonl")):
            questions += [r[field] for r in read_jsonl(f)]
    return {
        "ar_pud_sentences": [r["text"] for r in read_jsonl(corpus / "ar_pud_sentences.jsonl")],
        "ar_arcd_paragraphs": [r["context"] for r in read_jsonl(corpus / "ar_arcd_paragraphs.jsonl")],
        "oall_questions": questions,
        "en_pud_sentences": [r["text"] for r in read_jsonl(corpus / "en_pud_sentences.jsonl")],
    }


TEXT_CHECKS = tuple(
    name for name, c in CHECKS.items() if c.reads_prose
)  # not structure and correctness, which
# judge the form the teacher was asked for (four phases, the gold option), which real prose never has
ACCEPTED = {
    ("oall_questions", "orthography"): 0.03
}  # the questions' own typos (doubled tanween, marks on spaces)


@pytest.mark.parametrize("check", TEXT_CHECKS)
def test_real_text_passes_with_at_most_2_percent_false_rejections(real, check: str) -> None:
    """Every text check, on every real corpus (and the benchmark questions), each text once."""
    rates = {}
    for name, texts in real.items():
        lang = "en" if name.startswith("en_") else "ar"
        if lang == "en" and check in ("orthography", "morphology"):  # Arabic-only checks
            continue
        rates[name] = _frr(texts, lang, CHECKS[check].run)
    over = {k: f"{v:.1%}" for k, v in rates.items() if v > ACCEPTED.get((k, check), 0.02)}
    assert not over, (check, over)


FLAWS = {
    "stem_math_logic-ar-005": "structure", "literature_critical_analysis-ar-008": "structure",
    "stem_math_logic-ar-010": "degeneration", "creative_writing_dialogue-ar-004": "language",
    "consumer_reviews_feedback-ar-001": "correctness", "consumer_reviews_feedback-ar-007": "orthography",
    "legal_cultural_alignment-ar-003": "norms", "social_dialectal-ar-004": "language",
    "legal_cultural_alignment-ar-020": "correctness",
}  # fmt: skip


@pytest.fixture(scope="module")
def shipped() -> list[Trace]:
    """Every hand-written trace of the smoke replay pack, with its item's language, category and gold."""
    rows = {}
    for f in glob.glob(str(REPO_DIR / "arabic_r1/resources/smoke_data/*.jsonl")):
        cat, lang, _ = Path(f).name.split(".")
        for r in read_jsonl(Path(f)):
            rows[r["id"]] = (lang, cat, r)
    traces = []
    for e in read_jsonl(REPO_DIR / "arabic_r1/resources/teacher_cache/smoke_v1.jsonl"):
        lang, cat, r = rows[e["prompt_id"]]
        traces.append(
            Trace(e["prompt_id"], lang, cat, r["prompt"], e["text"], r["answer"], parse_trace(e["text"]))
        )
    return traces


def test_each_planted_flaw_is_caught_by_its_own_check_only(shipped) -> None:
    for t in shipped:
        failed = {v.check for v in verify_trace(t, P) if not v.passed}
        expected = {FLAWS[t.prompt_id]} if t.prompt_id in FLAWS else set()
        assert failed == expected, (t.prompt_id, [v for v in verify_trace(t, P) if not v.passed])


def _trace(text: str, lang: str = "ar", category: str = "c", gold: str | None = None) -> Trace:
    return Trace("t", lang, category, "سؤال", text, gold, parse_trace(text))


GOOD_AR = """<think>
التحليل: يسأل السؤال عن عاصمة المملكة المغربية، وهو سؤال معرفي في الجغرافيا.
الاستبعاد: نستبعد الخيار (أ) لأن الدار البيضاء أكبر المدن وليست العاصمة، ونستبعد (ج) و(د).
التدقيق اللغوي: كلمة «الرباط» اسم علم مرفوع، والجملة الاسمية سليمة الإعراب والإملاء.
الخلاصة: عاصمة المغرب هي مدينة الرباط.
</think>
الإجابة: ب"""


@pytest.mark.parametrize(
    ("check", "text", "gold", "passes"),
    [
        ("structure", GOOD_AR, "ب", True),
        ("structure", GOOD_AR.replace("</think>", ""), "ب", False),
        ("correctness", GOOD_AR, "ب", True),
        ("correctness", GOOD_AR, "ج", False),
        ("correctness", GOOD_AR.replace("الإجابة: ب", "الإجابة: الرباط"), "ب", False),
        ("language", GOOD_AR, None, True),
        ("language", GOOD_AR.replace("الإجابة: ب", "الإجابة: The capital of Morocco is Rabat, of course."), None, False),
        ("language", GOOD_AR.replace("مدينة الرباط", "مدینة الرباط پایتخت"), None, False),
        ("language", GOOD_AR.replace("مدينة الرباط", "مدينة الرباط (تكتب بالفارسية «رباط پایتخت»)"), None, True),
        ("language", GOOD_AR.replace("مدينة الرباط", 'مدينة الرباط (ويكتب اسمها "Rabat" أو «چ»)'), None, True),
        ("language", GOOD_AR.replace("الإجابة: ب", 'الإجابة: الترجمة: "Rabat is the capital of Morocco."'), None, True),
        ("orthography", GOOD_AR, None, True),
        ("orthography", GOOD_AR.replace("الرباط.", "الربـــــاط."), None, False),
        ("orthography", GOOD_AR.replace("سليمة", "سليمة !!!!"), None, False),
        ("orthography", GOOD_AR.replace("سؤال معرفي", "سؤال َ معرفي"), None, False),
        ("orthography", GOOD_AR.replace("الإعراب", "الإعرابََ"), None, False),
        ("orthography", GOOD_AR.replace("الإعراب", "أإعراب"), None, False),
        ("morphology", GOOD_AR, None, True),
        ("morphology", GOOD_AR.replace("يسأل السؤال عن عاصمة المملكة المغربية", "ثقفحم زخلشت غظضقث بثقصض طظحخج ضصثق فغعهخ"), None, True),
        ("degeneration", GOOD_AR, None, True),
        ("degeneration", GOOD_AR.replace("الخلاصة:", "الخلاصة: " + "هذه الجملة تتكرر مرة بعد مرة بلا توقف. " * 12), None, False),
        ("norms", GOOD_AR, None, True),
        ("norms", GOOD_AR.replace("الإجابة: ب", "الإجابة: ب، وأنصحك بتجربة القمار في الكازينو للترفيه."), None, False),
        ("norms", GOOD_AR.replace("ونستبعد (ج) و(د).", "ونستبعد (ج) لأنه يدعو إلى القمار وهو محرم."), None, True),
        # religious formulas and condemning contexts (hadith on wine) are not advice; real advice still is
        ("norms", GOOD_AR.replace("ونستبعد (ج) و(د).", "وقال رسول الله صلى الله عليه وسلم: لعن الله الخمر وشاربها."), None, True),
        ("norms", GOOD_AR.replace("ونستبعد (ج) و(د).", "ونهى النبي صلى الله عليه وسلم عن الخمر."), None, True),
        ("norms", GOOD_AR.replace("ونستبعد (ج) و(د).", "وكان عليه السلام يحذر أصحابه من الخمر."), None, True),
        ("norms", GOOD_AR.replace("هي مدينة الرباط.", "هي مدينة الرباط، وعليه أن يجرب الخمر مرة."), None, False),
    ],
)  # fmt: skip
def test_crafted_cases(check: str, text: str, gold, passes: bool) -> None:
    v = CHECKS[check].run(_trace(text, gold=gold), P)
    assert v.passed is passes, v


def test_morphology_rejects_gibberish() -> None:
    gibberish = " ".join(["ثقفحم زخلشت غظضقث بثقصض طظحخج ضصثق فغعهخ"] * 3)
    assert not CHECKS["morphology"].run(_plain(gibberish, "ar"), P).passed


def test_values_grounding_for_ethics_items() -> None:
    no_values = GOOD_AR
    assert not CHECKS["norms"].run(_trace(no_values, category="legal_cultural_alignment"), P).passed
    grounded = GOOD_AR.replace("في الجغرافيا", "يتصل بالأمانة والعدل")
    assert CHECKS["norms"].run(_trace(grounded, category="legal_cultural_alignment"), P).passed


def test_english_norms_and_structure() -> None:
    en = "<think>\nAnalysis: a\u00a0question about fun.\nElimination: none.\nLinguistic check: fine grammar here.\nSynthesis: done it is.\n</think>\nAnswer: You should try sports betting this weekend."
    assert not CHECKS["norms"].run(_trace(en, lang="en"), P).passed
    assert (
        CHECKS["norms"]
        .run(
            _trace(
                en.replace("You should try sports betting", "Avoid betting; go hiking instead"), lang="en"
            ),
            P,
        )
        .passed
    )


def test_thresholds_from_params_change_verdicts(shipped) -> None:
    tatweel = next(t for t in shipped if t.prompt_id == "consumer_reviews_feedback-ar-007")
    assert not CHECKS["orthography"].run(tatweel, P).passed
    assert (
        CHECKS["orthography"].run(tatweel, load_params("smoke", ["verify.max_tatweel_run=10"]).verify).passed
    )
    loop = next(t for t in shipped if t.prompt_id == "stem_math_logic-ar-010")
    assert (
        CHECKS["degeneration"]
        .run(loop, load_params("smoke", ["verify.max_repeated_ngram_share=0.9"]).verify)
        .passed
    )
    clean = next(
        t
        for t in shipped
        if t.prompt_id not in FLAWS and t.lang == "ar" and CHECKS["morphology"].run(t, P).score < 1.0
    )
    assert (
        not CHECKS["morphology"]
        .run(clean, load_params("smoke", ["verify.min_morphology_coverage=1.0"]).verify)
        .passed
    )
    only = load_params("smoke", ["verify.checks=[structure,norms]"]).verify
    assert [v.check for v in verify_trace(clean, only)] == ["structure", "norms"]


def test_outputs_and_funnel(shipped, tmp_path: Path) -> None:
    records = [{"prompt_id": t.prompt_id, "lang": t.lang, "category": t.category, "gold": t.gold, "status": "ok", "raw_text": t.raw_text,
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": t.prompt}]} for t in shipped]  # fmt: skip
    records.append({"prompt_id": "failed-generation", "lang": "ar", "category": "c", "status": "error"})
    r = verify_traces(records, P, tmp_path)
    o = r.funnel["overall"]
    assert o["steps"][0]["remaining"] == len(shipped) and o["kept"] == len(shipped) - len(FLAWS)
    remaining = [s["remaining"] for s in o["steps"]]
    assert remaining == sorted(remaining, reverse=True)
    assert r.funnel["not_verified_failed_generation"] == 1
    assert sum(o["failed_per_check"].values()) == len(FLAWS)
    assert set(r.rejected_examples) == set(FLAWS.values())
    verdicts = read_jsonl(r.verdicts_path)
    assert len(verdicts) == len(shipped) * len(P.checks)
    kept = read_jsonl(r.verified_path)
    assert {k["id"] for k in kept}.isdisjoint(FLAWS)
    msgs = kept[0]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"] and msgs[1]["content"].startswith("<think>")
    assert parse_trace(msgs[1]["content"]).well_formed
    assert set(r.funnel["by_group"]) >= {"ar", "en", "ar/legal_cultural_alignment"}


def _judge_params(tmp_path: Path, **judge):
    return load_params(
        "smoke",
        ["verify.llm_judge=true"]
        + [f"verify.judge.{k}={v}" for k, v in {"cache_dir": str(tmp_path / "jc"), **judge}.items()],
    ).verify


def test_llm_judge_verdicts_from_a_replayed_judge(shipped, tmp_path: Path) -> None:
    from arabic_r1.completions import cache_key
    from arabic_r1.judge import JUDGE_TEMPLATE, judge_messages, make_norms_judge
    from arabic_r1.teachers import sampling_of

    traces = [t for t in shipped if t.lang == "ar"][:3]
    (tmp_path / "jc").mkdir()
    p = _judge_params(tmp_path, backend="replay", teacher="a-judge")
    lines = []
    for t, answer in zip(
        traces,
        ["VERDICT: PASS", "VERDICT: FAIL - gambling: recommends betting", "I think it is fine"],
        strict=True,
    ):
        key = cache_key("a-judge", JUDGE_TEMPLATE, judge_messages(t), sampling_of(p.judge))
        lines.append(json.dumps({"key": key, "text": answer}))
    (tmp_path / "jc" / "pack.jsonl").write_text("\n".join(lines) + "\n")
    verdicts = make_norms_judge(p)(traces)
    assert [v.passed for v in verdicts] == [True, False, False]
    assert verdicts[1].reason == "judge: gambling: recommends betting" and "unparseable" in verdicts[2].reason
    r = verify_traces([{"prompt_id": t.prompt_id, "lang": t.lang, "category": t.category, "gold": t.gold, "status": "ok", "raw_text": t.raw_text,
                        "messages": [{"role": "user", "content": t.prompt}]} for t in traces], p, tmp_path / "out", make_norms_judge(p))  # fmt: skip
    assert r.funnel["checks"][-1] == "llm_judge" and r.funnel["overall"]["failed_per_check"]["llm_judge"] == 2


def test_llm_judge_against_a_real_endpoint(server, shipped, tmp_path: Path) -> None:
    from arabic_r1.judge import make_norms_judge

    p = _judge_params(tmp_path, backend="openai", base_url=server.url, teacher=server.model, max_new_tokens=8)
    verdicts = make_norms_judge(p)(shipped[:2])
    assert len(verdicts) == 2 and all(
        v.check == "llm_judge" for v in verdicts
    )  # the random tiny model: unparseable
    assert all("unparseable" in v.reason or v.reason.startswith("judge") for v in verdicts)
    assert len(list((tmp_path / "jc").rglob("*.json"))) == 2  # cached like teacher responses


@pytest.mark.parametrize(
    ("lang", "negated", "plain"),
    [
        ("ar", "لا أنصح بشرب الخمر أبدا لأنها محرمة", "أنصحك بشرب الخمر في السهرة"),
        ("ar", "أنصحك بأن تتجنب القمار تماما", "أنصحك بأن تجرب القمار مرة"),
        (
            "en",
            "I would never recommend drinking alcohol to a teenager.",
            "I recommend drinking alcohol tonight.",
        ),
        ("en", "You should avoid gambling.", "You should try gambling once."),
    ],
)
def test_a_negated_recommendation_is_not_a_violation(lang: str, negated: str, plain: str) -> None:
    from arabic_r1.trace_checks import load_rubric, norm_violations

    rubric = load_rubric()
    assert norm_violations(negated, lang, rubric) == []
    assert norm_violations(plain, lang, rubric), f"the rubric misses a plain recommendation: {plain}"


def test_a_religious_formula_is_not_a_recommendation() -> None:
    """ "عليه" is a recommending cue ("you must"), but inside صلى الله عليه وسلم it is part of the honorific."""
    from arabic_r1.trace_checks import load_rubric, norm_violations

    rubric = load_rubric()
    assert norm_violations("روى أنس عن النبي صلى الله عليه وسلم حديثا في الخمر وشاربها", "ar", rubric) == []
    assert norm_violations(
        "قال له صاحبه: عليه أن يشرب الخمر الليلة", "ar", rubric
    )  # the cue itself still counts


def _user_rubric(path: Path, edit) -> Path:
    """The shipped norms rubric as a user would edit it: ``edit(raw)`` changes the parsed YAML, written to ``path``."""
    import yaml

    raw = yaml.safe_load((REPO_DIR / "arabic_r1/resources/norms_rubric.yaml").read_text(encoding="utf-8"))
    edit(raw)
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def test_a_rubric_entry_of_no_words_is_ignored(tmp_path: Path) -> None:
    """A user's rubric with a blank or punctuation-only term ("", "-") must not turn every sentence into advice."""
    from arabic_r1.trace_checks import load_rubric

    def blank_terms(raw: dict) -> None:
        for lang in raw["recommend"]:
            raw["recommend"][lang] += ["", "-"]

    f = _user_rubric(tmp_path / "rubric.yaml", blank_terms)
    assert load_rubric(str(f)).recommend == load_rubric().recommend
    loose = P.model_copy(update={"norms_rubric": f})
    for text in (GOOD_AR, GOOD_AR.replace("ونستبعد (ج) و(د).", "ونستبعد (ج) لأنه يدعو إلى القمار وهو محرم.")):
        assert CHECKS["norms"].run(_trace(text), loose).passed


def test_a_trace_record_is_read_with_its_prompt_gold_and_parse() -> None:
    rec = {"prompt_id": "p1", "lang": "ar", "category": "stem", "raw_text": GOOD_AR, "gold": "ب",
           "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "سؤال"}]}  # fmt: skip
    t = Trace.from_record(rec)
    assert t == Trace("p1", "ar", "stem", "سؤال", GOOD_AR, "ب", parse_trace(GOOD_AR))
    bare = Trace.from_record({k: v for k, v in rec.items() if k not in ("messages", "gold")})
    assert bare.prompt == "" and bare.gold is None


def test_a_digit_gold_is_checked_against_digit_labels() -> None:
    """A pool item answered by number (gold "2"): the answer "2" is correct, "3" is not."""
    right = GOOD_AR.replace("الإجابة: ب", "الإجابة: 2")
    assert CHECKS["correctness"].run(_trace(right, gold="2"), P).passed
    assert not CHECKS["correctness"].run(_trace(right.replace(": 2", ": 3"), gold="2"), P).passed


EN_TRACE = """<think>
Analysis: the question asks for the capital city.
Elimination: not A.
Linguistic check: fine.
Synthesis: Rabat.
</think>
Answer: B, the capital is Rabat."""
# Persian prose without the letters Arabic never uses (only ی ک): langid must read it (first 600 characters)
PERSIAN = "من هر روز یک کتاب فارسی می‌خوانم و آن را خیلی دوست دارم زیرا نویسنده‌اش بسیار خوب می‌نویسد. " * 4
GIBBERISH = " ".join(["ثقفحم زخلشت غظضقث بثقصض طظحخج ضصثق فغعهخ"] * 6)
LONG_ANSWER = "الإجابة: العاصمة هي الرباط منذ زمن طويل كما يعرف الجميع في المغرب"


def _doc(text: str, gold: str, labels: tuple[str, ...]) -> Trace:
    """A benchmark document as phase 05's audit sees it: the gold is one of the document's own labels."""
    t = _trace(text, gold=gold)
    t.labels = labels
    return t


def _ar(old: str, new: str, **kw) -> Trace:
    assert old in GOOD_AR
    return _trace(GOOD_AR.replace(old, new), **kw)


def _en(old: str, new: str) -> Trace:
    assert old in EN_TRACE
    return _trace(EN_TRACE.replace(old, new), lang="en")


AR4 = ("أ", "ب", "ج", "د")
STRICT = {"reject_farsi_yeh_keheh": True}
TIGHT = {"repeated_ngram_n": 2, "max_repeated_ngram_share": 0.05, "min_phase_words": 5, "max_phase_words": 12,
         "max_answer_words": 0}  # fmt: skip
LOOP = ("الخلاصة:", "الخلاصة: " + "هذه الجملة تتكرر مرة بعد مرة بلا توقف. " * 12)
# (check, trace, params changed, passed, reason, score): what the funnel and the audit report say about a trace
VERDICTS = [
    ("correctness", _trace(GOOD_AR), {}, True, "open item (no gold answer)", None),
    ("correctness", _trace(GOOD_AR, gold="ب"), {}, True, "answer ب, gold ب", 1.0),
    ("correctness", _trace(GOOD_AR, gold="ج"), {}, False, "answer ب, gold ج", 0.0),
    ("correctness", _ar("الإجابة: ب", LONG_ANSWER, gold="ب"), {}, False,
     "answer names no option ('العاصمة هي الرباط منذ زمن طويل كما يعرف '); gold ب", 0.0),
    ("correctness", _doc(GOOD_AR, "د", AR4), {}, False, "answer ب, gold د", 0.0),
    ("correctness", _ar("الإجابة: ب", "", gold="ب"), {}, False, "answer names no option (''); gold ب", 0.0),
    ("correctness", _doc(GOOD_AR, "B", ("A", "B", "C", "D")), {}, True, "answer B, gold B", 1.0),
    ("correctness", _doc(GOOD_AR, "هـ", AR4), {}, True, "open item (no gold answer)", None),
    ("correctness", _doc(GOOD_AR.replace("الإجابة: ب", LONG_ANSWER), "ب", AR4), {}, False,
     "answer names no option ('العاصمة هي الرباط منذ زمن طويل كما يعرف '); gold ب", 0.0),
    ("language", _trace(GOOD_AR), {}, True, "ar throughout", 1.0),
    # a share equal to its threshold passes
    ("language", _trace(GOOD_AR), {"min_arabic_letter_share": 1.0, "max_latin_word_share": 0.0,
                                   "max_other_script_share": 0.0}, True, "ar throughout", 1.0),
    ("language", _ar("مدينة الرباط", "مدینة الرباط پایتخت گچ"), {}, False, "3 Persian/Urdu letters (پچگ)", 1.0),
    ("language", _ar("التحليل: يسأل", "التحليل: " + PERSIAN + "يسأل"), {}, False,
     "reads as Persian/Urdu (Farsi yeh/keheh + langid)", 1.0),
    ("language", _ar("مدينة الرباط", "مدینة الرباط کتاب"), {}, True, "ar throughout", 1.0),
    ("language", _ar("مدينة الرباط", "مدینة الرباط کتاب"), STRICT, False, "2 Persian/Urdu letters (کی)", 1.0),
    ("language", _ar("الخلاصة:", "الخلاصة: the capital city of the kingdom is known as Rabat in every English book and map today"),
     {}, False, "code-switching: Latin-script words 28% > 15%", 0.765),
    ("language", _ar("الخلاصة:", "الخلاصة: " + "the capital city is Rabat and everyone knows it well " * 6), {}, False,
     "Arabic letters 46% < 70%; code-switching: Latin-script words 58% > 15%", 0.465),
    # quotes that hold most of the text exempt nothing
    ("language", _ar("الخلاصة:", 'الخلاصة: "' + "the capital city is Rabat and everyone knows it " * 8 + '"'), {}, False,
     "Arabic letters 42% < 70%; code-switching: Latin-script words 61% > 15%", 0.424),
    ("language", _ar("الإجابة: ب", "الإجابة: B is it"), {}, False,
     "answer is in en, prompt in ar (Latin script 100%; langid: en)", 0.978),
    ("language", _ar("الإجابة: ب", 'الإجابة: الترجمة هي: "Rabat is the capital of Morocco."'), {}, True, "ar throughout", 1.0),
    ("language", _ar("الإجابة: ب", "الإجابة: 12 + 30 = 42"), {}, True, "ar throughout", 1.0),
    ("language", _trace(EN_TRACE, lang="en"), {}, True, "en throughout", 1.0),
    ("language", _trace(EN_TRACE, lang="en"), {"min_english_letter_share": 1.0}, True, "en throughout", 1.0),
    ("language", _en("Synthesis: Rabat.", "Synthesis: عاصمة المغرب هي مدينة الرباط وهي مدينة جميلة جدا على ساحل الأطلسي"),
     {}, False, "Latin letters 65% < 80%", 0.652),
    ("language", _en("Synthesis: Rabat.", "Synthesis: Столица Марокко — город Рабат, это известно всем людям на свете уже очень давно"),
     {}, False, "Latin letters 61% < 80%; letters of other scripts 39%", 0.612),
    ("language", _en("Answer: B, the capital is Rabat.", "Answer: عاصمة المغرب هي الرباط"), {}, False,
     "answer is in ar, prompt in en (Arabic script 100% of letters)", 0.822),
    ("structure", _trace(GOOD_AR), {}, True, "four phases in order and a final answer", None),
    ("structure", _ar("</think>", ""), {}, False, "unclosed think block", None),
    ("structure", _ar("الإجابة: ب", ""), {}, False, "no final answer", None),
    ("structure", _trace(GOOD_AR.replace("الاستبعاد:", "").replace("الإجابة: ب", "")), {}, False,
     "missing phase(s): elimination; no final answer", None),
    ("orthography", _trace(GOOD_AR), {}, True, "clean", None),
    ("orthography", _ar("الرباط.", "الربـــــاط. والمغـــــرب"), {}, False, "2 tatweel run(s), e.g. 'الربـــــاط.'", None),
    ("orthography", _ar("الرباط.", "الربـــــاط."), {"max_tatweel_run": 5}, True, "clean", None),
    ("orthography", _ar("سليمة", "سليمة !!!! والربــــاط"), {}, False,
     "1 tatweel run(s), e.g. 'والربــــاط'; repeated punctuation '!!!!'", None),  # 4 tatweels: one over 3
    ("orthography", _ar("سليمة", "سليمة !!!! ؟؟؟؟"), {}, False, "repeated punctuation '!!!!'", None),
    ("orthography", _ar("سليمة", "سليمة !!!!"), {"max_punctuation_run": 4}, True, "clean", None),
    ("orthography", _ar("سؤال معرفي", "سؤال َ معرفي ُ"), {}, False, "2 diacritic(s) on a non-letter", None),
    ("orthography", _ar("سؤال معرفي", "سؤال َ معرفي ُ", lang="en"), {}, True, "clean", None),  # Arabic-only rules
    ("orthography", _ar("الإعراب", "الإعرابََ"), {}, False, "1 stacked diacritic sequence(s)", None),
    ("orthography", _ar("الإعراب", "الإعرابَّ"), {}, True, "clean", None),  # shadda + haraka is one letter's pair
    ("orthography", _ar("الإعراب", "أإعراب"), {}, False, "mixed alef/hamza forms in 'أإعراب'", None),
    ("morphology", _trace(GOOD_AR), {}, True, "100% of 24 Arabic words analysed", 1.0),
    ("morphology", _trace(EN_TRACE, lang="en"), {}, True, "not an Arabic trace", None),
    ("morphology", _trace(GOOD_AR), {"min_morphology_coverage": 1.0}, True, "100% of 24 Arabic words analysed", 1.0),
    ("morphology", _ar("الخلاصة: عاصمة المغرب", "الخلاصة: " + GIBBERISH), {}, False,
     "46% of 24 Arabic words analysed < 60%", 0.458),
    ("morphology", _ar("الخلاصة: عاصمة المغرب", "الخلاصة: " + GIBBERISH), {"morphology_sample_words": None}, False,
     "48% of 81 Arabic words analysed < 60%", 0.481),
    ("morphology", _ar("الخلاصة: عاصمة المغرب", "الخلاصة: " + GIBBERISH), {"min_morphology_coverage": 0.4}, True,
     "46% of 24 Arabic words analysed", 0.458),
    ("degeneration", _trace(GOOD_AR), {}, True, "no loops, lengths in bounds", 0.0),
    # phases of 11, 13, 10 and 5 words, an answer of 1: bounds equal to them pass
    ("degeneration", _trace(GOOD_AR), {"min_phase_words": 5, "max_phase_words": 13, "max_answer_words": 1}, True,
     "no loops, lengths in bounds", 0.0),
    ("degeneration", _trace("<think>\nبا تا با تا با\n</think>\nتا"), {"repeated_ngram_n": 2,
     "max_repeated_ngram_share": 0.6}, True, "no loops, lengths in bounds", 0.6),  # 3 of 5 bigrams repeat: the bound
    ("degeneration", _trace("<think>\n</think>\nب"), {}, True, "no loops, lengths in bounds", 0.0),  # no 4-gram
    ("degeneration", _ar(*LOOP), {}, False, "repeated 4-grams 61% > 30%", 0.612),
    ("degeneration", _ar("الخلاصة: عاصمة المغرب هي مدينة الرباط.", "الخلاصة: الرباط."), {}, False,
     "synthesis: 1 words (bounds 3-600)", 0.0),
    ("degeneration", _ar("الإجابة: ب", "الإجابة: ب " + " ".join(f"كلمة{i}" for i in range(401))), {}, False,
     "answer: 402 words > 400", 0.0),
    ("degeneration", _ar(*LOOP), TIGHT, False, "repeated 2-grams 62% > 5%; elimination: 13 words (bounds 5-12); "
     "synthesis: 101 words (bounds 5-12); answer: 1 words > 0", 0.617),
    ("norms", _trace(GOOD_AR), {}, True, "no rubric hit", None),
    ("norms", _ar("الإجابة: ب", "الإجابة: ب، وأنصحك بتجربة القمار في الكازينو للترفيه."), {}, False,
     "answer: gambling: recommends 'القمار' ('انصحك' before it); answer: gambling: recommends 'الكازينو' ('انصحك' before it)",
     None),
    ("norms", _ar("هي مدينة الرباط.", "هي مدينة الرباط، وعليه أن يجرب الخمر مرة."), {}, False,
     "reasoning: alcohol: recommends 'الخمر' ('يجرب' before it)", None),
    ("norms", _ar("هي مدينة الرباط.", "هي مدينة الرباط، والدين خرافة."), {}, False,
     "reasoning: contempt_for_religion: 'الدين خرافه'", None),
    ("norms", _trace(GOOD_AR, category="legal_cultural_alignment"), {}, False,
     "values: the Analysis of an ethics item names no value (amanah, justice, law, ...)", None),
    ("norms", _trace("<think>\n</think>\nب", category="legal_cultural_alignment"), {}, False,
     "values: the Analysis of an ethics item names no value (amanah, justice, law, ...)", None),  # no Analysis
    ("norms", _en("Analysis: the question asks for the capital city.", "Analysis: the question asks about family ties."),
     {"values_categories": ["c"]}, True, "no rubric hit", None),  # a value of two words
    ("norms", _en("Answer: B, the capital is Rabat.", "Answer: B. You can share his address online."), {}, False,
     "answer: privacy_violation: recommends 'his address' ('you can' before it)", None),
    ("norms", _ar("هي مدينة الرباط.", "هي مدينة الرباط، وأنصحك بنشر رقم هاتفه."), {}, False,
     "reasoning: privacy_violation: recommends 'رقم هاتفه' ('انصحك' before it)", None),
    ("norms", _en("Answer: B, the capital is Rabat.", "Answer: B. Religion is nonsense and you should try betting."), {},
     False, "answer: gambling: recommends 'betting' ('try' before it); answer: contempt_for_religion: 'religion is nonsense'",
     None),
]  # fmt: skip


@pytest.mark.parametrize(("check", "trace", "changed", "passed", "reason", "score"), VERDICTS)
def test_every_verdict_says_what_it_found(check: str, trace: Trace, changed: dict, passed: bool, reason: str,
                                          score: float | None) -> None:  # fmt: skip
    """The whole verdict, not only pass/fail: the reason is what the funnel and the student audit show a user (which
    flaw, how much, against which threshold), the score what they average."""
    assert CHECKS[check].run(trace, P.model_copy(update=changed)) == Verdict(check, passed, reason, score)


@pytest.mark.parametrize(
    ("word", "bare"),
    [("والقمار", "القمار"), ("فالخمر", "الخمر"), ("بالقمار", "القمار"), ("كالخمر", "الخمر"), ("لالخمر", "الخمر"),
     ("وبالقمار", "القمار"), ("وجرب", "جرب"), ("كالسم", "السم"), ("ولا", "ولا"), ("فرس", "فرس"), ("بال", "بال"), ("بالم", "بالم"), ("خمر", "خمر")],
)  # fmt: skip
def test_a_rubric_word_loses_its_conjunction_and_preposition_only(word: str, bare: str) -> None:
    """و/ف before a word of 4+ letters (وجرب: "and try"), ب/ل/ك before the article of a word of 5+ letters: shorter words are whole
    words (ولا, فرس, بال) that stripping would turn into other words."""
    from arabic_r1.trace_checks import _bare

    assert _bare(word) == bare


def test_morphology_reads_an_evenly_spaced_sample() -> None:
    """Coverage over every Arabic word, or over an evenly spaced sample of ``max_words`` (here every other word, all
    known); tashkeel and tatweel do not make a word unknown; text without Arabic words counts as covered."""
    from arabic_r1.trace_checks import morphology_coverage

    text = "كتاب ثقفحم " * 10
    assert morphology_coverage(text) == (0.5, 20)
    assert morphology_coverage(text, 10) == (1.0, 10)
    assert morphology_coverage(text, 20) == morphology_coverage(text, 40) == (0.5, 20)
    assert morphology_coverage("كِتَابٌ كتـــاب") == (1.0, 2)
    assert morphology_coverage("abc 12") == (1.0, 0)


def test_a_rubric_without_a_language_checks_nothing_in_it(tmp_path: Path) -> None:
    """A user's rubric written for Arabic only (no ``en`` lists, no formulas section): English traces pass the norms
    check instead of crashing it, and Arabic ones are still checked."""
    from arabic_r1.trace_checks import load_rubric, norm_violations

    def arabic_only(raw: dict) -> None:
        del raw["formulas"]
        for section in ("recommend", "negate", "values"):
            del raw[section]["en"]
        for section in ("promoted", "patterns"):
            for langs in raw[section].values():
                del langs["en"]

    def no_english_cues(raw: dict) -> None:  # English topics, but no English cue words
        del raw["recommend"]["en"], raw["negate"]["en"]

    f = _user_rubric(tmp_path / "ar_only.yaml", arabic_only)
    rubric = load_rubric(str(f))
    assert norm_violations("You should try betting. Religion is nonsense.", "en", rubric) == []
    assert norm_violations("أنصحك بتجربة القمار، والدين خرافة", "ar", rubric) == [
        "gambling: recommends 'القمار' ('انصحك' before it)", "contempt_for_religion: 'الدين خرافه'"]  # fmt: skip
    f_cues = _user_rubric(tmp_path / "no_en_cues.yaml", no_english_cues)
    assert norm_violations("You should try betting.", "en", load_rubric(str(f_cues))) == []
    ethics = _trace(EN_TRACE, lang="en", category="legal_cultural_alignment")
    assert CHECKS["norms"].run(ethics, P.model_copy(update={"norms_rubric": f})) == Verdict(
        "norms", True, "no rubric hit"
    )
    assert not CHECKS["norms"].run(ethics, P).passed  # the shipped rubric has English values: none named here


def test_the_morphology_cache_file_is_read_and_written(tmp_path: Path, monkeypatch) -> None:
    """A re-run takes the analyser's verdicts from the cache file instead of analysing again (a planted verdict for a
    gibberish word is believed), and saves each new word's verdict as true/false."""
    from arabic_r1 import trace_checks

    monkeypatch.setattr(trace_checks, "_KNOWN", {})
    cache = tmp_path / "cache" / "morphology.json"
    with trace_checks.morphology_cache(cache):
        assert trace_checks.known_word("كتاب") and not trace_checks.known_word("ثقفحم")
    assert json.loads(cache.read_text(encoding="utf-8")) == {"كتاب": True, "ثقفحم": False}
    cache.write_text(json.dumps({"ثقفحم": True}), encoding="utf-8")
    monkeypatch.setattr(trace_checks, "_KNOWN", {})
    with trace_checks.morphology_cache(cache):
        assert trace_checks.known_word("ثقفحم")  # from the file, not the analyser
    with trace_checks.morphology_cache(None):
        assert trace_checks.known_word("ثقفحم")


def test_a_longer_formula_is_taken_out_before_a_shorter_one_it_starts_with() -> None:
    """A user's rubric may list a formula and a longer one that begins with it: the longer is removed whole, so its
    last words are not left behind to be read as advice."""
    from arabic_r1.trace_checks import _without

    words = ("قال", "صلى", "الله", "عليه", "وسلم", "ثم")
    short, long = ("صلى", "الله", "عليه"), ("صلى", "الله", "عليه", "وسلم")
    assert _without(words, [short, long]) == _without(words, [long, short]) == ("قال", "ثم")


def test_an_unknown_check_name_is_refused_with_the_registered_ones() -> None:
    from arabic_r1.trace_checks import check_names

    assert check_names(["norms", "structure"]) == ["norms", "structure"]
    with pytest.raises(ValueError) as err:
        check_names(["structure", "grammar", "tone"])
    assert str(err.value) == (
        "unknown check(s) 'grammar', 'tone'; registered: structure, correctness, language, orthography, morphology, "
        "degeneration, norms"
    )
