"""What every notebook view shares: tables a reader need not decode, and text that stays readable when Arabic and
markup mix in one block."""

from __future__ import annotations

import html
import re
from typing import Any

# chat-template and reasoning markup (<|im_start|>, <think>, </think>): left-to-right tokens inside Arabic text
MARKUP = re.compile(r"<\|[^<>|]*\|>|</?[A-Za-z_]+>")


def bidi_html(text: str) -> str:
    """``text`` escaped for HTML, each markup tag isolated left-to-right: inside a right-to-left block the browser
    would otherwise mirror ``</think>`` into ``<think/>`` and ``<|im_end|>`` into ``|<im_end|>``."""
    out, last = [], 0
    for m in MARKUP.finditer(text):
        out += [html.escape(text[last : m.start()]), f"<bdi dir='ltr'>{html.escape(m.group())}</bdi>"]
        last = m.end()
    return "".join(out) + html.escape(text[last:])


def table(
    frame: Any, caption: str = "", max_rows: int | None = 30, formats: dict[str, str] | None = None
) -> Any:
    """``frame`` as a reader sees it (a pandas Styler): every cell whole (pandas would cut text at 50 characters),
    empty cells as an em dash instead of ``NaN``, integers with thousands separators, floats to three places (or
    per column with ``formats``, e.g. ``{"share": "{:.1%}"}``), and a caption that says what the numbers are."""
    shown = frame.head(max_rows) if max_rows and len(frame) > max_rows else frame
    if len(shown) < len(frame):
        caption = f"{caption} (first {max_rows} of {len(frame)} rows)".strip()
    styler = shown.style.format(na_rep="—", precision=3, thousands=",")
    if formats:
        styler = styler.format({k: v for k, v in formats.items() if k in shown.columns}, na_rep="—")
    if caption:
        styler = styler.set_caption(caption).set_table_styles(
            [{"selector": "caption", "props": "text-align: left; font-weight: bold"}]
        )
    return styler


def smoke_caveat(params: Any) -> Any:
    """The sentence a reader of the smoke profile's scores must see next to them (Markdown; empty for a real
    backbone)."""
    from IPython.display import Markdown

    if not params.model.is_embedded:
        return Markdown("")
    return Markdown(
        f"**Scores at chance, by construction** (profile *{params.profile}*): the embedded student is a tiny MoE "
        "trained for minutes on a CPU and knows no facts. These numbers prove the machinery runs end to end; what "
        "the student learned is the trace format: the four-phase and parse rates of its reasoning outputs."
    )
