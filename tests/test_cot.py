"""The shared four-phase parser and answer extraction."""

from __future__ import annotations

import pytest

from arabic_r1.cot import (
    PHASES,
    extract_option,
    gold_index,
    gold_labels,
    option_labels,
    parse_trace,
    teacher_messages,
)

AR = """<think>
التحليل: السؤال عن عاصمة المغرب، ولا قيم خاصة هنا.
الاستبعاد: نستبعد (أ) لأنها أكبر مدينة وليست العاصمة، و(ج) و(د).
التدقيق اللغوي: «الرباط» اسم علم مرفوع، والجملة سليمة.
الخلاصة: العاصمة هي الرباط.
</think>
الإجابة: ب"""

EN = """<think>
**Analysis:** the question asks for the red planet.
- Elimination: A, C and D are not red.
### Linguistic check: "Mars" is spelled correctly.
1. Synthesis: Mars.
</think>

**Answer:** B) Mars"""


def test_well_formed_arabic_trace() -> None:
    p = parse_trace(AR)
    assert p.well_formed and p.closed and p.order == list(PHASES)
    assert p.phases["elimination"].startswith("نستبعد") and p.answer == "ب"
    assert extract_option(p.answer, option_labels("ar", 4)) == 1


def test_markdown_headings_and_latin_letters() -> None:
    p = parse_trace(EN)
    assert p.well_formed, p.problems
    assert p.answer == "B) Mars" and extract_option(p.answer, option_labels("en", 4)) == 1


def test_unclosed_think_has_no_answer() -> None:
    p = parse_trace("<think>\nالتحليل: بداية بلا نهاية\nالإجابة: أ")
    assert not p.closed and p.answer is None and "unclosed think block" in p.problems


def test_missing_and_misordered_phases() -> None:
    p = parse_trace("<think>\nالاستبعاد: x\nالتحليل: y\nالخلاصة: z\n</think>\nالإجابة: ج")
    assert "missing phase(s): linguistic_check" in p.problems
    assert any(x.startswith("phases out of order: elimination > analysis") for x in p.problems)
    assert p.answer == "ج"


def test_no_think_block_and_no_answer_line() -> None:
    p = parse_trace("Just an answer without reasoning.")
    assert (
        p.think is None
        and "no think block" in p.problems
        and "no 'Answer:' line after the reasoning" in p.problems
    )
    q = parse_trace("<think>\nAnalysis: a\nElimination: b\nLinguistic check: c\nSynthesis: d\n</think>\n")
    assert q.answer is None and "no final answer" in q.problems


def test_repeated_and_empty_phases() -> None:
    p = parse_trace(
        "<think>\nAnalysis:\nAnalysis: again\nElimination: b\nLinguistic check: c\nSynthesis: d\n</think>\nAnswer: A"
    )
    assert "phase repeated: analysis" in p.problems and "empty phase(s): analysis" in p.problems


@pytest.mark.parametrize(
    ("answer", "labels", "index"),
    [
        ("ب", option_labels("ar", 4), 1), ("(ج)", option_labels("ar", 4), 2), ("الخيار د لأنه الأصح", option_labels("ar", 4), 3),
        ("ا", option_labels("ar", 4), 0), ("هـ", option_labels("ar", 5), 4), ("ه", option_labels("ar", 5), 4),
        ("الرباط", option_labels("ar", 4), None), ("C", option_labels("en", 4), 2), ("b) mars", option_labels("en", 4), 1),
        ("It is a B", option_labels("en", 4), 1), ("2", ["1", "2", "3", "4"], 1), ("0", ["0", "1", "2"], 0), ("", option_labels("en", 4), None),
    ],
)  # fmt: skip
def test_extract_option(answer: str, labels, index) -> None:
    assert extract_option(answer, labels) == index


def test_gold_letters_in_any_spelling() -> None:
    assert [gold_index(g) for g in ("أ", "ا", " ب ", "D", "x", None)] == [0, 0, 1, 3, None, None]
    # digit labels (ArabicMMLU-HT counts from 1, AlGhafa from 0) name themselves; "12" is no label
    assert [gold_index(g) for g in ("2", " 0 ", "12")] == [2, 0, None]
    assert gold_labels("3", "ar")[3] == "3" and gold_labels("ب", "ar")[1] == "ب"


def test_teacher_messages_use_versioned_templates() -> None:
    mc = teacher_messages("سؤال؟", "ar", "v1", True)
    assert (
        mc[0]["role"] == "system"
        and "التدقيق اللغوي" in mc[0]["content"]
        and "رمز الخيار" in mc[0]["content"]
    )
    assert mc[1] == {"role": "user", "content": "سؤال؟"}
    chat = teacher_messages(
        "x", "en", "v1", False, [{"role": "system", "content": "old"}, {"role": "user", "content": "hi"}]
    )
    assert [m["role"] for m in chat] == ["system", "user"] and "Linguistic check" in chat[0]["content"]
    with pytest.raises(FileNotFoundError, match="no teacher template for version 'v9'"):
        teacher_messages("x", "en", "v9", False)


def test_a_model_that_corrects_itself_is_read_by_its_last_answer_line() -> None:
    p = parse_trace(AR + "\nلا، أخطأت في القراءة.\nالإجابة: ج")
    assert p.answer == "ج"
    q = parse_trace(EN + "\nWait, that is wrong.\nAnswer: C) Venus")
    assert q.answer == "C) Venus"


def test_the_first_standalone_label_names_the_option() -> None:
    assert extract_option("ب) القاهرة، وليست أ", ["أ", "ب", "ج", "د"]) == 1
    assert extract_option("B, not A", ["A", "B", "C", "D"]) == 1


_P = "Analysis: a\nElimination: b\nLinguistic check: c\nSynthesis: d\n"
_ALL = {"analysis": "a", "elimination": "b", "linguistic_check": "c", "synthesis": "d"}
_BODY = _P.rstrip("\n")


@pytest.mark.parametrize(
    ("text", "think", "closed", "phases", "answer", "problems"),
    [
        ("", None, False, {}, None, ["no think block", "no final answer"]),
        (None, None, False, {}, None, ["no think block", "no final answer"]),
        ("Answer: D", None, False, {}, "D", ["no think block"]),
        (_P + "</think>\nAnswer: B", _BODY, True, _ALL, "B", ["no opening <think> (reasoning starts at the top)"]),
        ("Sure. <think>\n" + _P + "</think>\nAnswer: B", _BODY, True, _ALL, "B", []),
        ("</think>Answer: B", "", True, {}, "B", ["no opening <think> (reasoning starts at the top)",
                                                  "missing phase(s): analysis, elimination, linguistic_check, synthesis"]),
        ("<think>\nAnalysis: a\n</think>\n<think>\n" + _P + "</think>\nAnswer: C", "Analysis: a", True, {"analysis": "a"},
         "C", ["more than one think block", "missing phase(s): elimination, linguistic_check, synthesis"]),
        ("<think>\n<think>\n" + _P + "</think>\nAnswer: C", "<think>\n" + _BODY, True, _ALL, "C", ["more than one think block"]),
        ("<think>\n" + _P + "</think>\nAnswer: A\n</think>\nAnswer: C", _BODY, True, _ALL, "C", ["more than one think block"]),
        ("Sure. <think>\nAnalysis: a\nElimination: b", "Analysis: a\nElimination: b", False,
         {"analysis": "a", "elimination": "b"}, None, ["unclosed think block", "missing phase(s): linguistic_check, synthesis"]),
        ("<think>\nAnalysis: a\nAnalysis: again\nElimination: b\nLinguistic check: c\nSynthesis: d\n</think>\nAnswer: A",
         "Analysis: a\nAnalysis: again\nElimination: b\nLinguistic check: c\nSynthesis: d", True, _ALL, "A",
         ["phase repeated: analysis"]),
        ("<think>\nAnalysis:\nElimination:\nSynthesis: d\n</think>\n**Answer:** **X-ray**", "Analysis:\nElimination:\nSynthesis: d",
         True, {"analysis": "", "elimination": "", "synthesis": "d"}, "X-ray",
         ["missing phase(s): linguistic_check", "empty phase(s): analysis, elimination"]),
    ],
    ids=["empty", "none", "no_block", "no_opening", "text_before", "closing_first", "two_blocks", "two_openings",
         "two_closings", "unclosed", "repeated", "empty_phases"],
)  # fmt: skip
def test_every_part_of_a_malformed_trace(text, think, closed, phases, answer, problems) -> None:
    """The whole parse of each malformed shape: what phase 03 rejects, phase 04 trains on and phase 05 scores depends
    on every field, not only on the problem list being non-empty. A repeated phase keeps its first text."""
    p = parse_trace(text)
    assert (p.think, p.closed, p.phases, p.answer, p.problems) == (think, closed, phases, answer, problems)
    assert p.order == list(phases)


def test_reading_traces_never_rewrites_the_file_unless_asked(tmp_path) -> None:
    """Phase 03 reads phase 02's file as it is (a torn last line is skipped, the file left alone); only phase 02
    itself, resuming, cuts the torn line off before appending."""
    from arabic_r1.cot import read_traces

    path = tmp_path / "traces.jsonl"
    whole = b'{"prompt_id": "a", "v": 1}\n{"prompt_id": "a", "v": 2}\n'
    path.write_bytes(whole + b'{"prompt_id": "b", "v"')
    assert read_traces(path) == [{"prompt_id": "a", "v": 2}] and path.read_bytes().startswith(whole + b"{")
    assert read_traces(path, repair=True) == [{"prompt_id": "a", "v": 2}] and path.read_bytes() == whole
