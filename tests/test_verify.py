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
from arabic_r1.trace_checks import CHECKS, Trace, verify_trace
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


def test_a_rubric_entry_of_no_words_is_ignored(tmp_path: Path) -> None:
    """A user's rubric with a blank or punctuation-only term ("", "-") must not turn every sentence into advice."""
    import yaml

    from arabic_r1.params import REPO_DIR as repo
    from arabic_r1.trace_checks import load_rubric

    raw = yaml.safe_load((repo / "arabic_r1/resources/norms_rubric.yaml").read_text(encoding="utf-8"))
    for lang in raw["recommend"]:
        raw["recommend"][lang] += ["", "-"]
    f = tmp_path / "rubric.yaml"
    f.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
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
