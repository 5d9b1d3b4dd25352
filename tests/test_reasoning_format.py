"""The one place that maps the four-phase trace onto a student's chat format (think tags / gpt-oss harmony)."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from arabic_r1.audit import reasoning_answer
from arabic_r1.reasoning_format import assistant_turn, split_trace, to_think_tags

TRACE = (
    "<think>\nالتحليل: المطلوب عاصمة المغرب.\nالاستبعاد: نستبعد الدار البيضاء.\n"
    "التدقيق اللغوي: لا أخطاء.\nالخلاصة: العاصمة الرباط.\n</think>\nالإجابة: ب"
)
LABELS = ["أ", "ب", "ج"]


def test_think_tags_keep_the_trace_as_written_and_harmony_splits_it():
    assert assistant_turn(TRACE, "think_tags") == {"role": "assistant", "content": TRACE}
    turn = assistant_turn(TRACE, "harmony")
    assert turn["content"] == "الإجابة: ب"
    assert turn["thinking"].startswith("التحليل:") and turn["thinking"].endswith("العاصمة الرباط.")
    assert all(h in turn["thinking"] for h in ("الاستبعاد:", "التدقيق اللغوي:", "الخلاصة:"))
    with pytest.raises(ValueError, match="no closing </think>"):
        assistant_turn("<think>unfinished", "harmony")
    with pytest.raises(ValueError, match="reasoning_format"):
        assistant_turn(TRACE, "xml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("output", "choice", "failure"),
    [
        # raw gpt-oss output after the generation prompt '<|start|>assistant'
        ("<|channel|>analysis<|message|>التحليل: ...<|end|><|start|>assistant<|channel|>final<|message|>الإجابة: ب<|return|>", 1, None),
        # decoded with skip_special_tokens=True: channel names glued to the text
        ("analysisالتحليل: الخيار ب صحيح.assistantfinalالإجابة: ب", 1, None),
        ("analysisالتحليل: الخيار ب", None, "unclosed think block"),
        # commentary preamble, then final
        ("<|channel|>commentary<|message|>...<|end|><|start|>assistant<|channel|>final<|message|>The answer is C<|return|>", 2, None),
        # ran out of tokens inside the analysis channel
        ("<|channel|>analysis<|message|>التحليل: الخيار ب يبدو", None, "unclosed think block"),
        # a final channel with a constrained-format suffix (<|constrain|>)
        ("<|channel|>final <|constrain|>text<|message|>أ<|end|>", 0, None),
        # empty final message
        ("<|channel|>analysis<|message|>...<|end|><|start|>assistant<|channel|>final<|message|><|return|>", None, "no final answer"),
    ],
)  # fmt: skip
def test_harmony_outputs_are_parsed_like_think_blocks(output, choice, failure):
    assert reasoning_answer(output, LABELS, "harmony") == (choice, failure)


def test_think_tag_outputs_pass_through_unchanged():
    assert to_think_tags(TRACE, "think_tags") == TRACE
    assert reasoning_answer(TRACE, LABELS, "think_tags") == (1, None)
    assert split_trace(to_think_tags(
        "<|channel|>analysis<|message|>A<|end|><|start|>assistant<|channel|>final<|message|>B<|return|>", "harmony"
    )) == ("A", "B")  # fmt: skip


def test_harmony_training_template_masks_exactly_the_assistant_channels():
    """TRL's assistant-only loss covers the analysis + final channels and nothing of the system/user turns."""
    from arabic_r1.sft_data import assistant_mask, check_chat_template
    from arabic_r1.tiny_model import build_tiny_moe

    _, tok = build_tiny_moe("gpt_oss")
    tok.chat_template = (
        resources.files("arabic_r1").joinpath("resources", "chat_template_harmony.jinja").read_text("utf-8")
    )
    check_chat_template(tok, "harmony template")
    turn = assistant_turn(TRACE, "harmony")
    messages = [{"role": "user", "content": "ما عاصمة المغرب؟ أ) الدار البيضاء ب) الرباط ج) فاس"}, turn]
    ids, mask = assistant_mask(tok, messages)
    learned = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
    want = (
        f"<|channel|>analysis<|message|>{turn['thinking']}<|end|><|start|>assistant"
        f"<|channel|>final<|message|>{turn['content']}<|return|>"
    )
    assert learned == want
    rendered = tok.decode(ids)
    assert (
        rendered.startswith("<|start|>system<|message|>") and "<|start|>user<|message|>ما عاصمة" in rendered
    )
    assert rendered.endswith(want)


def test_verify_writes_sft_messages_in_the_students_format():
    from arabic_r1.trace_checks import Trace
    from arabic_r1.verify import sft_messages

    t = Trace.__new__(Trace)
    t.prompt, t.raw_text = "ما عاصمة المغرب؟", TRACE
    assert sft_messages(t, "harmony")[1]["thinking"] == assistant_turn(TRACE, "harmony")["thinking"]
    assert json.dumps(sft_messages(t))  # think_tags default: plain {"role","content"} messages
