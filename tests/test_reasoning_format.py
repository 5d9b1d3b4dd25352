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


def test_an_unknown_format_names_the_key_and_the_known_ones():
    from arabic_r1.reasoning_format import assistant_turn, to_think_tags

    expected = "model.reasoning_format: unknown format 'chatml'; expected one of think_tags, harmony"
    for call in (
        lambda: to_think_tags("x", "chatml"),
        lambda: assistant_turn("<think>a</think> b", "chatml"),
    ):
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == expected


def test_harmony_output_that_starts_inside_the_analysis_channel():
    """A template that opens the analysis channel itself: the output is reasoning until a channel switch; no token
    of the format may reach the reasoning, and commentary counts as reasoning, one message per line."""
    from arabic_r1.reasoning_format import to_think_tags

    assert to_think_tags(" still thinking\n", "harmony") == "<think>still thinking"
    assert (
        to_think_tags("<|channel|>analysis", "harmony") == "<think><|channel|>analysis"
    )  # cut off: no crash
    assert to_think_tags("<|message|>still <b>thinking</b>", "harmony") == "<think>still <b>thinking</b>"
    assert to_think_tags("a<|message|>b<|message|>c", "harmony") == "<think>b<|message|>c"
    two = "<|channel|>analysis<|message|>A<|end|><|start|>assistant<|channel|>commentary<|message|>C<|end|>"
    assert (
        to_think_tags(two + "<|start|>assistant<|channel|>final<|message|>B", "harmony")
        == "<think>A\nC</think>\nB"
    )


def test_split_trace_and_rebuilt_reasoning_at_their_edges():
    """Text before <think> is not reasoning; a later <think> or </think> inside the answer is the answer's; a
    server's separate reasoning is put back only when there is some and the content has no block of its own."""
    from arabic_r1.reasoning_format import assistant_turn, split_trace, with_reasoning

    assert split_trace("</think>A") == ("", "A")
    assert split_trace("x<think>R</think>A</think>") == ("R", "A</think>")
    assert split_trace("R</think>A<think>") == ("R", "A<think>")
    assert split_trace("t<think>R<think>S</think>A") == ("R<think>S", "A")
    with pytest.raises(ValueError) as err:
        split_trace("<think>R")
    assert str(err.value) == "trace has no closing </think>"
    assert with_reasoning("A", "R") == "<think>\nR\n</think>\n\nA"
    assert with_reasoning("A", " ") == with_reasoning("A", None) == "A"
    assert with_reasoning("<think>S</think>A", "R") == "<think>S</think>A"
    assert assistant_turn("x<think>R</think>A<think>", "think_tags")["content"] == "<think>R</think>A<think>"
    assert assistant_turn("R</think>A", "think_tags")["content"] == "R</think>A"
