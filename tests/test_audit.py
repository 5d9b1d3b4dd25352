"""Phase 05's audit in process, on crafted outputs: which output counts as parsed, truncated or four-phase, the rates
and failure reasons it sums to, the files it writes and the bars a run is held to (test_student.py holds the smoke
student to them end to end)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_verify import GOOD_AR

from arabic_r1.audit import (
    AUDIT_CSV,
    AUDIT_FILE,
    Output,
    as_trace,
    audit,
    audit_models,
    named_text,
    reasoning_answer,
    shortfalls,
    summarize,
    write_audit,
)
from arabic_r1.params_loading import load_params
from arabic_r1.trace_checks import Verdict

VP = load_params("smoke").verify
LABELS = ("أ", "ب", "ج", "د")
NO_PHASE = GOOD_AR.replace("التدقيق اللغوي:", "ملاحظة:")  # three phases, still a closed block and an answer


def _out(
    text: str, i: str = "1", benchmark: str = "arabic_mmlu", truncated: bool = False, tokens=None
) -> Output:
    return Output(i, benchmark, text, "ب", LABELS, "ar", tokens, truncated)


@pytest.mark.parametrize(
    ("text", "truncated", "parsed", "counted_truncated", "four_phase"),
    [
        (GOOD_AR, False, True, False, True),
        (GOOD_AR, True, True, False, True),  # the budget ran out after the answer: an answer all the same
        (GOOD_AR.split("</think>")[0], True, False, True, False),  # cut inside the reasoning
        (
            GOOD_AR.split("</think>")[0],
            False,
            False,
            False,
            False,
        ),  # unclosed but the model stopped: a parse failure
        (GOOD_AR.replace("الإجابة: ب", ""), False, False, False, False),  # no final answer
        (GOOD_AR.replace("الإجابة: ب", "الإجابة: الرباط"), False, False, False, False),  # names no option
        (NO_PHASE, False, True, False, False),  # parsed, but not four phases
    ],
)
def test_each_output_is_parsed_truncated_or_four_phase(
    text, truncated, parsed, counted_truncated, four_phase
) -> None:
    (row,) = audit([_out(text, truncated=truncated, tokens=7)], VP)
    assert (row["parsed"], row["truncated"], row["four_phase"]) == (parsed, counted_truncated, four_phase)
    assert row["id"] == "1" and row["benchmark"] == "arabic_mmlu" and row["tokens"] == 7
    assert [v.check for v in row["verdicts"]] == list(VP.checks)
    assert all(v.passed for v in row["verdicts"]) is (text == GOOD_AR)


def test_a_harmony_output_is_read_as_its_think_form() -> None:
    harmony = (GOOD_AR.replace("<think>\n", "<|channel|>analysis<|message|>")
               .replace("\n</think>\n", "<|end|><|start|>assistant<|channel|>final<|message|>"))  # fmt: skip
    (row,) = audit([_out(harmony)], VP, "harmony")
    assert row["four_phase"] and all(v.passed for v in row["verdicts"])
    assert as_trace(_out(harmony), "harmony").parsed == as_trace(_out(GOOD_AR), "think_tags").parsed
    assert not audit([_out(harmony)], VP, "think_tags")[0][
        "four_phase"
    ]  # read in the wrong format: no think block


def test_answers_in_words_for_text_benchmarks() -> None:
    yes_no = ["صحيح", "غير صحيح"]
    assert named_text("الجواب: غير صحيح تماما", yes_no) == 1  # the longer choice wins over the one inside it
    assert named_text("العبارة صحيحة؟ نعم، صحيح", yes_no) == 0
    assert named_text("لا أعرف", yes_no) is None
    assert named_text("صحيحا", yes_no) is None  # whole words only
    assert named_text("الأول ثم الثاني", ["الثاني", "الأول"]) == 1  # same length: the first stated
    assert named_text("قد يكون", ["", "قد يكون"]) == 1  # an empty choice never matches
    assert named_text("؟", ["", "نعم"]) is None  # not even an answer of no words
    assert named_text("الأول ثم الثاني ثم الأول", ["الثاني", "الأول"]) == 1  # first stated, wherever repeated
    text = GOOD_AR.replace("الإجابة: ب", "الإجابة: مدينة الرباط")
    assert reasoning_answer(text, ["الدار البيضاء", "مدينة الرباط"], answers="text") == (1, None)
    assert reasoning_answer(text, ["فاس"], answers="text") == (None, "answer names no option")
    (row,) = audit([Output("1", "alrage", text, None, ("الدار البيضاء", "مدينة الرباط"))], VP)
    assert row["parsed"]  # alrage's choices are texts: named in words
    assert not audit([_out(text)], VP)[0]["parsed"]  # a labelled benchmark needs a label


def _row(parsed: bool, four: bool, truncated: bool, tokens, *verdicts: Verdict) -> dict:
    return {
        "parsed": parsed,
        "four_phase": four,
        "truncated": truncated,
        "tokens": tokens,
        "verdicts": list(verdicts),
    }


def test_summary_rates_tokens_and_top_reasons() -> None:
    ok, bad = Verdict("structure", True, "ok"), Verdict("structure", False, "missing 2 phases; order 1, 3")
    rows = [
        _row(True, True, False, 10, ok, Verdict("norms", True, "")),
        _row(True, False, False, None, bad, Verdict("norms", True, "")),
        _row(
            False,
            False,
            True,
            30,
            Verdict("structure", False, "missing 3 phases"),
            Verdict("norms", False, "x" * 100),
        ),
        _row(False, False, False, 20, Verdict("structure", False, "no answer"), Verdict("norms", True, "")),
    ]
    assert summarize(rows, ["structure", "norms", "language"], top=1) == {
        "n": 4, "parsed": 0.5, "truncated": 0.25, "four_phase": 0.25,
        "pass_rate": {"structure": 0.25, "norms": 0.75, "language": 0.0},
        "all_checks": 0.25, "mean_output_tokens": 20.0,
        "top_failures": {"structure": {"missing N phases": 2}, "norms": {"x" * 90: 1}},
    }  # fmt: skip
    assert summarize(rows[:1], ["structure"])["top_failures"] == {}
    assert summarize(rows[1:2], ["structure"])["mean_output_tokens"] is None
    assert (
        summarize([_row(True, True, False, 1), _row(True, True, False, 2)] * 2 + [_row(0, 0, 0, 2)], [])[
            "parsed"
        ]
        == 0.8
    )
    assert summarize([], ["structure"]) == {"n": 0}
    three = [_row(True, True, False, 1, Verdict("s", False, r)) for r in "aabbbcd"]
    assert summarize(three, ["s"])["top_failures"] == {"s": {"b": 3, "a": 2, "c": 1}}  # the default top is 3


def test_models_by_benchmark_and_the_files_written(tmp_path: Path) -> None:
    outputs = {
        "finetuned": [_out(GOOD_AR, "1"), _out(NO_PHASE, "2", "madinah_qa", tokens=4)],
        "base": [_out(NO_PHASE, "1", tokens=2)],
    }
    result = audit_models(outputs, VP, "think_tags")
    assert result["checks"] == list(VP.checks)
    thresholds = VP.model_dump(mode="json")
    for left_out in ("judge", "llm_judge", "morphology_cache"):
        thresholds.pop(left_out)
    assert result["thresholds"] == thresholds
    ft = result["models"]["finetuned"]
    assert ft["overall"] == summarize(audit(outputs["finetuned"], VP), list(VP.checks))
    assert ft["benchmarks"]["madinah_qa"] == summarize(audit(outputs["finetuned"][1:], VP), list(VP.checks))
    assert set(ft["benchmarks"]) == {"arabic_mmlu", "madinah_qa"} and ft["overall"]["four_phase"] == 0.5
    result["models"]["empty"] = {"overall": {"n": 0}, "benchmarks": {"arabic_mmlu": {"n": 0}}}
    js, table = write_audit(result, tmp_path)
    assert (js, table) == (tmp_path / AUDIT_FILE, tmp_path / AUDIT_CSV)
    assert json.loads(js.read_text(encoding="utf-8")) == result
    with table.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["benchmark"]) for r in rows] == [
        ("finetuned", "arabic_mmlu"), ("finetuned", "madinah_qa"), ("finetuned", "all"), ("base", "arabic_mmlu"),
        ("base", "all"),
    ]  # fmt: skip
    assert list(rows[0]) == ["model", "benchmark", "n", "parsed", "truncated", "four_phase", "all_checks",
                             *VP.checks, "mean_output_tokens"]  # fmt: skip
    s = ft["benchmarks"]["madinah_qa"]
    assert rows[1] == {
        "model": "finetuned", "benchmark": "madinah_qa", "n": "1", "parsed": str(s["parsed"]),
        "truncated": str(s["truncated"]), "four_phase": str(s["four_phase"]), "all_checks": str(s["all_checks"]),
        **{c: str(s["pass_rate"][c]) for c in VP.checks}, "mean_output_tokens": "4.0",
    }  # fmt: skip
    assert rows[2]["n"] == "2" and rows[0]["mean_output_tokens"] == ""


def _summary(n: int, parsed: float, four: float) -> dict:
    return {"n": n, "parsed": parsed, "four_phase": four, "top_failures": {"structure": {"no answer": 1}}}


def _result(ft: dict, base_four: float = 0.0, **overall) -> dict:
    ft_overall = {"parsed": 0.95, "four_phase": 0.9, "top_failures": {"structure": {"لا": 1}}} | overall
    return {"models": {"finetuned": {"overall": ft_overall, "benchmarks": ft},
                       "base": {"overall": {"four_phase": base_four}, "benchmarks": {}}}}  # fmt: skip


MC_OK = {b: _summary(10, 0.75, 0.8) for b in
         ("arabic_mmlu", "arabic_exams", "arabic_mmlu_ht", "madinah_qa", "aratrust", "alghafa")}  # fmt: skip


def test_the_bars_a_run_is_held_to() -> None:
    assert (
        shortfalls(_result(MC_OK, base_four=0.1, parsed=0.9, four_phase=0.8)) == []
    )  # every bar met exactly
    tail = 'fine-tuned\'s top failures: {"structure": {"لا": 1}}'
    assert shortfalls(_result(MC_OK | {"alghafa": _summary(9, 1, 1)})) == [
        "alghafa: 9 reasoning prompts < 10",
        tail,
    ]
    missing = {k: v for k, v in MC_OK.items() if k != "aratrust"}
    assert shortfalls(_result(missing)) == ["aratrust: 0 reasoning prompts < 10", tail]
    assert shortfalls(_result(MC_OK, parsed=0.89)) == [
        "fine-tuned names an option in 89% of its outputs < 90%",
        tail,
    ]
    low = MC_OK | {"madinah_qa": _summary(10, 0.7, 0.8)}
    assert shortfalls(_result(low)) == ["fine-tuned names an option in 70% of madinah_qa < 75%", tail]
    assert shortfalls(_result(MC_OK, four_phase=0.79)) == [
        "fine-tuned writes four phases + an answer in 79% < 80%",
        tail,
    ]
    assert shortfalls(_result(MC_OK, base_four=0.11)) == ["the base writes four phases in 11% > 10%", tail]
    r = _result(MC_OK, base_four=0.5)
    del r["models"]["finetuned"]["overall"]["top_failures"]
    assert shortfalls(r)[-1] == "fine-tuned's top failures: {}"


def test_models_are_audited_in_their_format_with_json_thresholds(tmp_path: Path) -> None:
    harmony = (GOOD_AR.replace("<think>\n", "<|channel|>analysis<|message|>")
               .replace("\n</think>\n", "<|end|><|start|>assistant<|channel|>final<|message|>"))  # fmt: skip
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text(
        (Path(__file__).parents[1] / "arabic_r1/resources/norms_rubric.yaml").read_text(encoding="utf-8")
    )
    vp = VP.model_copy(update={"norms_rubric": rubric})
    result = audit_models({"m": [_out(harmony)]}, vp, "harmony")
    assert result["models"]["m"]["overall"]["four_phase"] == 1.0  # read as harmony, not as think tags
    assert result["thresholds"]["norms_rubric"] == str(rubric)  # JSON values: the audit file is JSON
    assert json.loads(json.dumps(result["thresholds"])) == result["thresholds"]
    ok, bad = Verdict("s", True, ""), Verdict("s", False, "x")
    thirds = [
        _row(True, True, False, 1, ok),
        _row(False, False, True, 2, bad),
        _row(False, False, False, 2, bad),
    ]
    assert summarize(thirds, ["s"]) == {  # rates to four decimals, tokens to one
        "n": 3, "parsed": 0.3333, "truncated": 0.3333, "four_phase": 0.3333, "pass_rate": {"s": 0.3333},
        "all_checks": 0.3333, "mean_output_tokens": 1.7, "top_failures": {"s": {"x": 2}},
    }  # fmt: skip


def test_the_document_s_own_labels_category_and_answer_kind_reach_the_checks() -> None:
    """A document labelled 0-3 is checked against its own labels (gold "0" is an option, not an open item); a
    teacher trace audited by its category meets that category's norms (values grounding); a benchmark whose choices
    are texts reads the answer as words, not as an option label in another script."""
    wrong = GOOD_AR.replace("الإجابة: ب", "الإجابة: 2")
    (row,) = audit([Output("1", "alghafa", wrong, "0", ("0", "1", "2", "3"))], VP)
    assert [v.passed for v in row["verdicts"] if v.check == "correctness"] == [False]
    two_options = Output("1", "arabic_mmlu", GOOD_AR.replace("الإجابة: ب", "الإجابة: ج"), "ب", ("أ", "ب"))
    (row,) = audit([two_options], VP)
    (correctness,) = [v for v in row["verdicts"] if v.check == "correctness"]
    assert correctness.reason == "answer names no option ('ج'); gold ب"  # a two-option document has no ج
    (row,) = audit([Output("1", "legal_cultural_alignment", GOOD_AR, "ب", LABELS)], VP)
    assert [v.passed for v in row["verdicts"] if v.check == "norms"] == [False]  # no values named
    latin = GOOD_AR.replace("الإجابة: ب", "الإجابة: B")
    # a teacher trace (no benchmark spec) answers with labels: "B" names ب
    assert audit([Output("1", "legal_cultural_alignment", latin, "ب", LABELS)], VP)[0]["parsed"]
    assert audit([Output("1", "arabic_mmlu", GOOD_AR, "ب", LABELS)], VP)[0]["verdicts"] == audit(
        [_out(GOOD_AR)], VP)[0]["verdicts"]  # fmt: skip
    assert not audit([Output("1", "alrage", GOOD_AR, None, ("B",))], VP)[0]["parsed"]  # "ب" is no word of "B"
    assert audit([Output("1", "arabic_mmlu", GOOD_AR, None, ("B",))], VP)[0][
        "parsed"
    ]  # as a label it names B
