"""The four-phase chain of thought: teacher prompt templates, the one parser every phase shares, and the reader of
phase 02's ``traces.jsonl`` (the file phases 03 and 05 consume).

A trace is ``<think>`` Analysis -> Elimination -> Linguistic check -> Synthesis ``</think>`` followed by one line
``الإجابة: ...`` / ``Answer: ...``. :func:`parse_trace` turns any teacher or student text into its parts and lists
what is wrong with it; distillation records it, verification judges it, evaluation reads the answer from it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from arabic_r1.jsonl import read_jsonl

PHASES = ("analysis", "elimination", "linguistic_check", "synthesis")
HEADINGS = {
    "analysis": ("التحليل", "Analysis"),
    "elimination": ("الاستبعاد", "Elimination"),
    "linguistic_check": ("التدقيق اللغوي", "Linguistic check"),
    "synthesis": ("الخلاصة", "Synthesis"),
}
ANSWER_PREFIXES = ("الإجابة النهائية", "الإجابة", "الجواب", "Final answer", "Answer")
# Multiple-choice items label their options with letters (أ-هـ, A-E) or numbers (1-5, and 0-4 in AlGhafa): the
# answer is the label as the item writes it.
ANSWER_RULES = {
    ("ar", True): "هذا سؤال متعدد الخيارات: اكتب بعد «الإجابة:» رمز الخيار الصحيح فقط كما ورد في السؤال (حرفًا أو رقمًا).",
    ("ar", False): "هذا سؤال مفتوح: اكتب بعد «الإجابة:» إجابتك النهائية موجزة ومكتملة.",
    ("en", True): "This is a multiple-choice question: after 'Answer:' write only the label of the correct option as the question writes it (a letter or a number).",
    ("en", False): "This is an open question: after 'Answer:' write your final answer, concise and complete.",
}  # fmt: skip
ARABIC_OPTION_LETTERS = ("أ", "ب", "ج", "د", "هـ")
LATIN_OPTION_LETTERS = ("A", "B", "C", "D", "E")
DIGIT_LABELS = tuple("0123456789")  # a digit gold names itself, whether the item counts from 0 or from 1

_OPT = r"[ \t]*(?:[-*•#>]+[ \t]*|\d+[.)][ \t]*)*\**[ \t]*"  # bullets, numbering, markdown emphasis
_HEADING_RE = re.compile(
    rf"^{_OPT}(?P<h>{'|'.join(re.escape(h) for pair in HEADINGS.values() for h in pair)})[ \t]*\**[ \t]*[:：\-–][ \t]*",
    re.MULTILINE | re.IGNORECASE,
)
_ANSWER_RE = re.compile(
    rf"^{_OPT}(?:{'|'.join(re.escape(p) for p in ANSWER_PREFIXES)})[ \t]*\**[ \t]*[:：][ \t]*\**(?P<a>.*)$",
    re.MULTILINE | re.IGNORECASE,
)
_PHASE_OF = {h.lower(): key for key, pair in HEADINGS.items() for h in pair}


# ------------------------------------------------------------------------------------------ templates
@lru_cache(maxsize=8)
def template(version: str, lang: str) -> str:
    """The system prompt file ``resources/templates/cot_<version>.<lang>.txt``."""
    path = resources.files("arabic_r1").joinpath("resources", "templates", f"cot_{version}.{lang}.txt")
    if not path.is_file():
        raise FileNotFoundError(f"no teacher template for version {version!r}, language {lang!r} ({path})")
    return path.read_text(encoding="utf-8")


def teacher_messages(
    prompt: str, lang: str, version: str, multiple_choice: bool, messages: list[dict[str, str]] | None = None
) -> list[dict[str, str]]:
    """System prompt from the versioned template + the item's own turns (or its prompt as one user turn)."""
    system = template(version, lang).strip().replace("{answer_rule}", ANSWER_RULES[(lang, multiple_choice)])
    turns = [m for m in (messages or []) if m.get("role") != "system"] or [
        {"role": "user", "content": prompt}
    ]
    return [{"role": "system", "content": system}, *turns]


# ---------------------------------------------------------------------------------------------- parser
@dataclass
class ParsedTrace:
    think: str | None  # the reasoning (None when there is no think block at all)
    closed: bool  # a well-formed <think>...</think> block was found
    phases: dict[str, str] = field(default_factory=dict)  # phase key -> its text
    order: list[str] = field(default_factory=list)  # phase keys in the order they appear
    answer: str | None = None  # the final answer text (None when unclosed or absent)
    problems: list[str] = field(default_factory=list)

    @property
    def well_formed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_trace(text: str) -> ParsedTrace:
    """Split a response into think block, phases and final answer, listing every structural problem."""
    text = text or ""
    open_i, close_i = text.find("<think>"), text.find("</think>")
    problems: list[str] = []
    if close_i >= 0:
        think = text[open_i + len("<think>") if 0 <= open_i < close_i else 0 : close_i]
        closed, tail = True, text[close_i + len("</think>") :]
        if open_i < 0:
            problems.append("no opening <think> (reasoning starts at the top)")
        if text.count("<think>") > 1 or text.count("</think>") > 1:
            problems.append("more than one think block")
    elif open_i >= 0:
        think, closed, tail = text[open_i + len("<think>") :], False, ""
        problems.append("unclosed think block")
    else:
        think, closed, tail = None, False, text
        problems.append("no think block")

    parsed = ParsedTrace(think=think.strip() if think is not None else None, closed=closed, problems=problems)
    if think is not None:
        marks = [(m.start(), m.end(), _PHASE_OF[m.group("h").lower()]) for m in _HEADING_RE.finditer(think)]
        for i, (_, end, key) in enumerate(marks):
            nxt = marks[i + 1][0] if i + 1 < len(marks) else len(think)
            if key in parsed.phases:
                problems.append(f"phase repeated: {key}")
                continue
            parsed.phases[key] = think[end:nxt].strip()
            parsed.order.append(key)
        missing = [p for p in PHASES if p not in parsed.phases]
        if missing:
            problems.append("missing phase(s): " + ", ".join(missing))
        present = [p for p in PHASES if p in parsed.order]
        if parsed.order != present:
            problems.append("phases out of order: " + " > ".join(parsed.order))
        empty = [p for p, body in parsed.phases.items() if not body]
        if empty:
            problems.append("empty phase(s): " + ", ".join(empty))
    if closed or think is None:
        answers = list(_ANSWER_RE.finditer(tail))
        if answers:
            parsed.answer = answers[-1].group("a").strip().strip("*").strip() or None
        elif tail.strip():
            parsed.answer = tail.strip()
            problems.append("no 'Answer:' line after the reasoning")
        if not parsed.answer:
            parsed.answer = None
            problems.append("no final answer")
    return parsed


# ------------------------------------------------------------------------------------------- answers
_KEEP_CASE_FOLD = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ـ": None, "ة": "ه"})


def _label_pattern(label: str) -> str:
    return rf"(?<![^\W\d_]){re.escape(label)}(?![^\W\d_])"


def extract_option(answer: str | None, labels: list[str] | tuple[str, ...]) -> int | None:
    """Index of the option an answer names: Arabic or Latin letters, digits; ``ا``/``ه`` accepted for ``أ``/``هـ``.

    The first label standing alone (not inside a word) wins: "الإجابة: (ب)", "B) Paris", "2." all parse.
    """
    if not answer:
        return None
    folded = answer.translate(_KEEP_CASE_FOLD)
    for flags in (0, re.IGNORECASE):  # "B" before "b": a lone article "a" must not beat the option letter
        cands = []
        for i, label in enumerate(labels):
            m = re.search(_label_pattern(label.translate(_KEEP_CASE_FOLD)), folded, flags=flags)
            if m:
                cands.append((m.start(), i))
        if cands:
            return min(cands)[1]
    return None


_OTHER_SCRIPT = dict(zip(ARABIC_OPTION_LETTERS, LATIN_OPTION_LETTERS, strict=True)) | dict(
    zip(LATIN_OPTION_LETTERS, ARABIC_OPTION_LETTERS, strict=True)
)


def named_option(answer: str | None, labels: list[str] | tuple[str, ...]) -> int | None:
    """The option an answer names among ``labels``, also when it uses the other script ("B" for an option labelled
    "ب" and the other way round): what a student's answer is scored by, and a teacher's answer checked by."""
    choice = extract_option(answer, labels)
    if choice is None:
        other = [_OTHER_SCRIPT.get(label) for label in labels]
        if all(other):
            choice = extract_option(answer, other)  # type: ignore[arg-type]
    return choice


def option_labels(lang: str, n: int) -> tuple[str, ...]:
    return (ARABIC_OPTION_LETTERS if lang == "ar" else LATIN_OPTION_LETTERS)[:n]


def gold_labels(gold: str | None, lang: str) -> tuple[str, ...]:
    """The label set a pool item's gold answer belongs to: digits for a digit gold, else the item's letters."""
    if gold is not None and gold.strip() in DIGIT_LABELS:
        return DIGIT_LABELS
    return option_labels(lang, 5)


def gold_index(gold: str | None) -> int | None:
    """A pool item's gold label (أ..هـ or A..E in any spelling, or a digit) as an index into its label set."""
    if not gold:
        return None
    for labels in (ARABIC_OPTION_LETTERS, LATIN_OPTION_LETTERS):
        i = extract_option(gold, labels)
        if i is not None:
            return i
    return DIGIT_LABELS.index(gold.strip()) if gold.strip() in DIGIT_LABELS else None


def read_traces(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The traces of a ``traces.jsonl``, one per prompt: the last record per prompt id wins, as when phase 02
    retried a failed prompt by appending its new record."""
    return read_jsonl(path, key="prompt_id", repair=repair)
