"""What every notebook view shares: text that stays readable when Arabic and markup mix in one block."""

from __future__ import annotations

import html
import re

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
