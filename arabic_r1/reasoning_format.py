"""Where a student model keeps its reasoning: the one place that maps the four-phase trace onto a chat format.

The teacher always writes ``<think>`` four phases ``</think>`` then the answer (the templates ask for it, phase 03
checks it). Students differ:

- ``think_tags`` (DeepSeek-R1, Qwen3 thinking models, the embedded tiny MoE): the assistant content is the trace as
  written; the chat template may open ``<think>`` itself, so an output can start inside the block.
- ``harmony`` (gpt-oss): reasoning goes to the ``analysis`` channel and the answer to the ``final`` channel. In chat
  messages that is ``{"role": "assistant", "thinking": ..., "content": ...}`` (the key gpt-oss's chat template and
  Unsloth read); in raw output it is ``<|channel|>analysis<|message|>...<|end|>`` then
  ``<|start|>assistant<|channel|>final<|message|>...<|return|>``.

Training (phase 03's SFT messages) goes through :func:`assistant_turn`; evaluation (phase 05's answer parsing)
through :func:`to_think_tags`, after which every format is read by the same parser.
"""

from __future__ import annotations

import re
from typing import Literal

ReasoningFormat = Literal["think_tags", "harmony"]
FORMATS: tuple[str, ...] = ("think_tags", "harmony")

_HARMONY_MSG = re.compile(
    r"<\|channel\|>(?P<channel>\w+)(?:(?!<\|message\|>|<\|channel\|>).)*<\|message\|>"
    r"(?P<body>.*?)(?=<\|end\|>|<\|return\|>|<\|call\|>|<\|start\|>|$)",
    re.S,
)
# the same output decoded with skip_special_tokens=True: channel names glued to the text
_HARMONY_GLUED = re.compile(r"^\s*analysis(?P<analysis>.*?)assistantfinal(?P<final>.*)$", re.S)


def split_trace(text: str) -> tuple[str, str]:
    """(reasoning, answer) of a think-tag trace; the reasoning keeps its four phase headings."""
    open_i, close_i = text.find("<think>"), text.find("</think>")
    if close_i < 0:
        raise ValueError("trace has no closing </think>")
    start = open_i + len("<think>") if 0 <= open_i < close_i else 0
    return text[start:close_i].strip(), text[close_i + len("</think>") :].strip()


def with_reasoning(content: str, reasoning: str | None) -> str:
    """A chat answer whose server returned the think block apart (vLLM/SGLang with a reasoning parser, the DeepSeek
    API: ``message.reasoning_content``, newer vLLM ``message.reasoning``) rebuilt as the trace the model wrote:
    ``<think>`` reasoning ``</think>`` answer. An answer that already has its block is kept as it is."""
    if not reasoning or not reasoning.strip() or "</think>" in content:
        return content
    return f"<think>\n{reasoning.strip()}\n</think>\n\n{content.strip()}"


def assistant_turn(trace: str, fmt: ReasoningFormat) -> dict[str, str]:
    """The assistant message that teaches a student of format ``fmt`` the teacher's trace."""
    if fmt == "think_tags":
        start = trace.find("<think>")
        return {"role": "assistant", "content": trace[start:].strip() if start >= 0 else trace.strip()}
    if fmt == "harmony":
        thinking, answer = split_trace(trace)
        return {"role": "assistant", "thinking": thinking, "content": answer}
    raise ValueError(f"model.reasoning_format: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def to_think_tags(output: str, fmt: ReasoningFormat) -> str:
    """A model's raw output rewritten as ``<think>reasoning</think> answer``; no final answer = an unclosed block."""
    if fmt == "think_tags":
        return output
    if fmt != "harmony":
        raise ValueError(
            f"model.reasoning_format: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}"
        )
    glued = _HARMONY_GLUED.match(output) if "<|" not in output else None
    if glued:
        return f"<think>{glued.group('analysis').strip()}</think>\n{glued.group('final').strip()}"
    messages = [(m.group("channel"), m.group("body").strip()) for m in _HARMONY_MSG.finditer(output)]
    if not messages:  # a template that opened the analysis channel itself: the output starts inside it
        if "<|channel|>" not in output and "<|message|>" not in output:
            return f"<think>{output.strip()}"
        messages = [("analysis", output.split("<|message|>", 1)[-1])]
    analysis = "\n".join(body for channel, body in messages if channel in ("analysis", "commentary"))
    final = [body for channel, body in messages if channel == "final"]
    if not final:
        return f"<think>{analysis}"
    return f"<think>{analysis}</think>\n{final[-1]}"
