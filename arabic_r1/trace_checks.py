"""The checks of a teacher or student trace — structure, correctness, language, orthography, morphology,
degeneration, regional norms — and the two types they share: what a check sees (:class:`Trace`) and what it says
(:class:`Verdict`).

Each check is a small function ``(Trace, VerifyParams) -> Verdict``; :func:`verify_trace` runs every enabled one (no
short-circuit), so a funnel can attribute every rejection. Phase 03 runs them on the teacher's traces (verify.py),
phase 05's student audit on the student's answers (audit.py). Thresholds come from params; the defaults were
measured on real Arabic and English text (tests/test_verify.py, docs/phases.md).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from arabic_r1.arabic_text import (
    AMBIGUOUS_PERSIAN_LETTERS,
    ARABIC_STOP_WORDS,
    PERSIAN_URDU_LETTERS,
    detect_language,
    fold_arabic,
    normalized_words,
    script_shares,
)
from arabic_r1.cot import PHASES, ParsedTrace, gold_index, gold_labels, named_option, parse_trace
from arabic_r1.jsonl import write_json_atomic
from arabic_r1.params import VerifyParams


@dataclass
class Trace:
    """What the checks see of one phase-02 trace (re-parsed with the current parser)."""

    prompt_id: str
    lang: str
    category: str
    prompt: str
    raw_text: str
    gold: str | None
    parsed: ParsedTrace
    labels: tuple[str, ...] = ()  # the item's own option labels, where it has them (a benchmark document)

    @property
    def reasoning_and_answer(self) -> str:
        return f"{self.parsed.think or ''}\n{self.parsed.answer or ''}"

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Trace:
        prompt = next((m["content"] for m in rec.get("messages", []) if m["role"] == "user"), "")
        return cls(
            rec["prompt_id"],
            rec["lang"],
            rec["category"],
            prompt,
            rec["raw_text"],
            rec.get("gold"),
            parse_trace(rec["raw_text"]),
        )


@dataclass
class Verdict:
    check: str
    passed: bool
    reason: str
    score: float | None = None


# ------------------------------------------------------------------------------------------------ checks
def check_structure(t: Trace, p: VerifyParams) -> Verdict:
    """Four phases, in order, in one well-formed think block, and a final answer (the parser phase 02 ships)."""
    probs = t.parsed.problems
    return Verdict("structure", not probs, "; ".join(probs) or "four phases in order and a final answer")


def check_correctness(t: Trace, p: VerifyParams) -> Verdict:
    """Rejection sampling: the answer must name the gold option where the item has one."""
    if t.labels:  # a benchmark document (phase 05's audit): the gold is one of its own labels
        labels, gold = t.labels, (t.labels.index(t.gold) if t.gold in t.labels else None)
    else:
        labels, gold = gold_labels(t.gold, t.lang), gold_index(t.gold)
    if gold is None:
        return Verdict("correctness", True, "open item (no gold answer)")
    chosen = named_option(t.parsed.answer, labels)
    if chosen is None:
        return Verdict(
            "correctness",
            False,
            f"answer names no option ({(t.parsed.answer or '')[:40]!r}); gold {labels[gold]}",
            0.0,
        )
    ok = chosen == gold
    return Verdict("correctness", ok, f"answer {labels[chosen]}, gold {labels[gold]}", 1.0 if ok else 0.0)


# Text in another language *by quotation*: quotes; Wikipedia's parenthetical glosses of a foreign name
# ("(بالإنجليزية: England)", "(بالتركية العثمانية: …؛ نقحرة: …)"); a pronunciation in IPA between slashes.
_QUOTED = re.compile(
    r'"[^"]*"|“[^”]*”|«[^»]*»|\'[^\']*\''
    r"|\((?=[^()]*?(?:بال[\u0621-\u064a]+(?: [\u0621-\u064a]+)?|نقحرة|تلفظ[^():]*)\s*:)[^()]*\)"
    r"|/[^/\n]*[ˈˌːʃʒəɾβθðŋɪʊɛɔæ][^/\n]*/"
)
_LATIN_WORD = re.compile(r"[A-Za-z\u00C0-\u024F]{2,}")


def check_language(t: Trace, p: VerifyParams) -> Verdict:
    """Script shares, code-switching, answer language = prompt language, no Persian/Urdu or other scripts."""
    # quoted text (a transliterated name in «…», a requested translation in "…") may be in any script: every
    # script count below reads the text without it, unless quotes hold most of the text (then nothing is exempt)
    full = t.reasoning_and_answer
    text = _QUOTED.sub(" ", full)
    if len(text.strip()) < len(full.strip()) / 2:
        text = full
    s = script_shares(text)
    problems = []
    if t.lang == "ar":
        # Farsi yeh/keheh (ی ک) alone are usually Arabic typed on a Persian keyboard (3% of the real benchmark
        # questions): they count only when asked to, or when langid reads the text as Persian/Urdu.
        letters = PERSIAN_URDU_LETTERS | (
            AMBIGUOUS_PERSIAN_LETTERS if p.reject_farsi_yeh_keheh else frozenset()
        )
        persian = sum(text.count(c) for c in letters)
        if persian > p.max_persian_letters:
            found = "".join(sorted({c for c in text if c in letters}))
            problems.append(f"{persian} Persian/Urdu letters ({found})")
        elif detect_language(text).lang == "fa/ur":
            problems.append("reads as Persian/Urdu (Farsi yeh/keheh + langid)")
        if s.arabic < p.min_arabic_letter_share:
            problems.append(f"Arabic letters {s.arabic:.0%} < {p.min_arabic_letter_share:.0%}")
        words = len(text.split()) or 1
        latin = len(_LATIN_WORD.findall(text)) / words
        if latin > p.max_latin_word_share:
            problems.append(f"code-switching: Latin-script words {latin:.0%} > {p.max_latin_word_share:.0%}")
    elif s.latin < p.min_english_letter_share:
        problems.append(f"Latin letters {s.latin:.0%} < {p.min_english_letter_share:.0%}")
    if s.other > p.max_other_script_share:
        problems.append(f"letters of other scripts {s.other:.0%}")
    mismatch = _answer_language_mismatch(t.parsed.answer or "", t.lang)
    if mismatch:
        problems.append(mismatch)
    score = s.arabic if t.lang == "ar" else s.latin
    return Verdict("language", not problems, "; ".join(problems) or f"{t.lang} throughout", round(score, 3))


def _answer_language_mismatch(answer: str, lang: str) -> str | None:
    """The answer's language, if it is not the prompt's; quoted text (a requested translation) may be in any."""
    for text in (answer, _QUOTED.sub(" ", answer)):
        if len(text.split()) < 3:
            return None
        guess = detect_language(text)
        if guess.lang in (lang, "und"):  # "und": no letters (a formula, a number)
            return None
    return f"answer is in {guess.lang}, prompt in {lang} ({guess.reason})"


_TASHKEEL_CLASS = "\u064b-\u0652\u0670"
# a haraka must sit on an Arabic letter (presentation forms and tatweel included) or follow another mark
_MARK_ON_NON_LETTER = re.compile(
    rf"(?:^|[^\u0621-\u064a\u0640\u066e-\u06d3\u06fa-\u06ff\ufb50-\ufdff\ufe70-\ufefc{_TASHKEEL_CLASS}])[{_TASHKEEL_CLASS}]"
)
_MARK_RUN = re.compile(rf"[{_TASHKEEL_CLASS}]{{2,}}")
_SHADDA = "\u0651"
_ALEF_FORMS = set("أإآٱ")


def check_orthography(t: Trace, p: VerifyParams) -> Verdict:
    """Tatweel runs, diacritics on non-letters or stacked, mixed alef/hamza forms in one word, punctuation runs."""
    text = t.reasoning_and_answer
    problems = []
    runs = re.findall(rf"\S*ـ{{{p.max_tatweel_run + 1},}}\S*", text)
    if runs:
        problems.append(f"{len(runs)} tatweel run(s), e.g. {runs[0]!r}")
    if t.lang == "ar":
        on_non_letter = _MARK_ON_NON_LETTER.findall(text)
        if on_non_letter:
            problems.append(f"{len(on_non_letter)} diacritic(s) on a non-letter")
        stacked = [m for m in _MARK_RUN.findall(text) if not (len(m) == 2 and _SHADDA in m)]
        if stacked:
            problems.append(f"{len(stacked)} stacked diacritic sequence(s)")
        mixed = [w for w in text.split() if len(_ALEF_FORMS & set(w)) > 1]
        if mixed:
            problems.append(f"mixed alef/hamza forms in {mixed[0]!r}")
    punct = re.findall(rf"([!?؟،,؛;:])\1{{{p.max_punctuation_run},}}", text)  # dots: ellipses and exam blanks
    if punct:
        problems.append(f"repeated punctuation {punct[0] * (p.max_punctuation_run + 1)!r}")
    return Verdict("orthography", not problems, "; ".join(problems) or "clean")


@lru_cache(maxsize=1)
def _analex():
    import qalsadi.analex

    return qalsadi.analex.Analex()


_KNOWN: dict[str, bool] = {}  # word type -> recognised; filled lazily, loaded and saved by morphology_cache


def known_word(word: str) -> bool:
    """Does qalsadi's analyser (dictionaries ship in its wheel) recognise this word? Cached per word type.

    Stop word, verb and noun lookups first (several times faster than the full ``check_word``), which then decides
    the rest; a few milliseconds per new type, so the cache is what keeps this check from dominating.
    """
    hit = _KNOWN.get(word)
    if hit is None:
        a = _analex()
        hit = word in ARABIC_STOP_WORDS or any(
            any(r.type != "unknown" for r in lookup(word) or ())
            for lookup in (a.check_word_as_stopword, a.check_word_as_verb, a.check_word_as_noun, a.check_word)
        )
        _KNOWN[word] = hit
    return hit


@contextlib.contextmanager
def morphology_cache(path: Path | None) -> Iterator[None]:
    """The analyser's known-word verdicts loaded from ``path`` for the block and saved back after it, so a re-run
    (phase 03, or phase 05's student audit) does not analyse the same words again; ``None``: no file."""
    if path is not None and path.is_file():
        _KNOWN.update(json.loads(path.read_text(encoding="utf-8")))
    yield
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, _KNOWN, indent=None)


_AR_WORD = re.compile(r"[\u0621-\u064a]{2,}")


def morphology_coverage(text: str, max_words: int | None = None) -> tuple[float, int]:
    """Share of the Arabic words (an evenly spaced sample of at most ``max_words``) the analyser recognises."""
    words = _AR_WORD.findall(re.sub(f"[{_TASHKEEL_CLASS}\u0640]", "", text))
    if not words:
        return 1.0, 0
    if max_words and len(words) > max_words:
        step = len(words) / max_words
        words = [words[int(i * step)] for i in range(max_words)]
    return sum(known_word(w) for w in words) / len(words), len(words)


def check_morphology(t: Trace, p: VerifyParams) -> Verdict:
    """Share of Arabic words the morphological analyser recognises (skipped for English traces)."""
    if t.lang != "ar":
        return Verdict("morphology", True, "not an Arabic trace")
    cov, n = morphology_coverage(t.reasoning_and_answer, p.morphology_sample_words)
    ok = cov >= p.min_morphology_coverage
    return Verdict(
        "morphology",
        ok,
        f"{cov:.0%} of {n} Arabic words analysed" + ("" if ok else f" < {p.min_morphology_coverage:.0%}"),
        round(cov, 3),
    )


def check_degeneration(t: Trace, p: VerifyParams) -> Verdict:
    """Repeated word n-grams (loops) and length bounds per phase and for the answer."""
    words = normalized_words(t.reasoning_and_answer)
    n = p.repeated_ngram_n
    grams = list(zip(*(words[i:] for i in range(n)), strict=False))
    repeated = (len(grams) - len(set(grams))) / len(grams) if grams else 0.0
    problems = []
    if repeated > p.max_repeated_ngram_share:
        problems.append(f"repeated {n}-grams {repeated:.0%} > {p.max_repeated_ngram_share:.0%}")
    for phase in PHASES:
        body = t.parsed.phases.get(phase)
        if body is not None and not p.min_phase_words <= len(body.split()) <= p.max_phase_words:
            problems.append(
                f"{phase}: {len(body.split())} words (bounds {p.min_phase_words}-{p.max_phase_words})"
            )
    if t.parsed.answer and len(t.parsed.answer.split()) > p.max_answer_words:
        problems.append(f"answer: {len(t.parsed.answer.split())} words > {p.max_answer_words}")
    return Verdict(
        "degeneration", not problems, "; ".join(problems) or "no loops, lengths in bounds", round(repeated, 3)
    )


# ------------------------------------------------------------------------------------------------ norms
@dataclass
class Rubric:
    window: int
    recommend: dict[str, list[tuple[str, ...]]]
    negate: dict[str, list[tuple[str, ...]]]
    formulas: dict[str, list[tuple[str, ...]]]
    promoted: dict[str, dict[str, list[tuple[str, ...]]]]
    patterns: dict[str, dict[str, list[re.Pattern]]]
    values: dict[str, list[str]]  # substrings of the folded text


def _bare(word: str) -> str:
    """Drop a leading conjunction (و ف) and a preposition before the article (بال لال كال): والقمار -> القمار."""
    if len(word) > 3 and word[0] in "وف":
        word = word[1:]
    if len(word) > 4 and word[0] in "بلك" and word[1:3] == "ال":
        word = word[1:]
    return word


def _rubric_words(text: str) -> tuple[str, ...]:
    return tuple(_bare(w) for w in normalized_words(text))


def _terms(words: Iterable[str]) -> list[tuple[str, ...]]:
    return [_rubric_words(str(w)) for w in words if normalized_words(str(w))]


@lru_cache(maxsize=4)
def load_rubric(path: str | None = None) -> Rubric:
    """The norms rubric: the package's file unless ``verify.norms_rubric`` names another."""
    if path is None:
        text = (
            resources.files("arabic_r1")
            .joinpath("resources", "norms_rubric.yaml")
            .read_text(encoding="utf-8")
        )
    else:
        text = Path(path).read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    return Rubric(
        window=int(raw.get("window", 8)),
        recommend={lang: _terms(v) for lang, v in raw["recommend"].items()},
        negate={lang: _terms(v) for lang, v in raw["negate"].items()},
        formulas={lang: _terms(v) for lang, v in raw.get("formulas", {}).items()},
        promoted={
            cat: {lang: _terms(v) for lang, v in langs.items()} for cat, langs in raw["promoted"].items()
        },
        patterns={
            cat: {lang: [re.compile(x) for x in v] for lang, v in langs.items()}
            for cat, langs in raw["patterns"].items()
        },
        values={lang: [" ".join(normalized_words(str(x))) for x in v] for lang, v in raw["values"].items()},
    )


def _find(words: tuple[str, ...], term: tuple[str, ...]) -> list[int]:
    n = len(term)
    return [i for i in range(len(words) - n + 1) if words[i : i + n] == term]


def _without(words: tuple[str, ...], formulas: list[tuple[str, ...]]) -> tuple[str, ...]:
    """``words`` with every occurrence of a fixed formula taken out (longest formula first)."""
    out, i = [], 0
    ordered = sorted(formulas, key=len, reverse=True)
    while i < len(words):
        f = next((f for f in ordered if words[i : i + len(f)] == f), None)
        if f:
            i += len(f)
        else:
            out.append(words[i])
            i += 1
    return tuple(out)


def norm_violations(text: str, lang: str, rubric: Rubric) -> list[str]:
    """Rubric hits in ``text``: promoted topics with a recommendation and no negation before them, and patterns."""
    words = _without(_rubric_words(text), rubric.formulas.get(lang, []))
    hits = []
    for cat, langs in rubric.promoted.items():
        for term in langs.get(lang, []):
            for i in _find(words, term):
                before = words[max(0, i - rubric.window) : i]
                rec = [r for r in rubric.recommend.get(lang, []) if _find(before, r)]
                neg = [x for x in rubric.negate.get(lang, []) if _find(before, x)]
                if rec and not neg:
                    hits.append(f"{cat}: recommends {' '.join(term)!r} ({' '.join(rec[0])!r} before it)")
    folded = " ".join(words) if lang == "ar" else text.lower()
    for cat, langs in rubric.patterns.items():
        for pattern in langs.get(lang, []):
            m = pattern.search(folded if lang == "ar" else fold_arabic(folded))
            if m:
                hits.append(f"{cat}: {m.group(0)!r}")
    return hits


def check_norms(t: Trace, p: VerifyParams) -> Verdict:
    """Regional norms on the answer and the reasoning; items of values categories must ground their Analysis."""
    rubric = load_rubric(str(p.norms_rubric) if p.norms_rubric else None)
    problems = [f"answer: {h}" for h in norm_violations(t.parsed.answer or "", t.lang, rubric)]
    problems += [f"reasoning: {h}" for h in norm_violations(t.parsed.think or "", t.lang, rubric)]
    values = rubric.values.get(t.lang)  # a rubric without values for this language grounds nothing in it
    if t.category in p.values_categories and values:
        analysis = " ".join(normalized_words(t.parsed.phases.get("analysis", "")))
        if not any(v in analysis for v in values):
            problems.append(
                "values: the Analysis of an ethics item names no value (amanah, justice, law, ...)"
            )
    return Verdict("norms", not problems, "; ".join(problems) or "no rubric hit")


@dataclass(frozen=True)
class CheckSpec:
    """One phase-03 check: the registry entry a new check is added as (README, "Extending")."""

    name: str
    run: Callable[[Trace, VerifyParams], Verdict]
    params: tuple[str, ...]  # the ``verify.*`` thresholds it reads
    reads_prose: (
        bool  # judges the text itself (held to <= 2% false rejections on real prose), not only its form
    )


# The funnel's order (``verify.checks: all``); ``verify.checks`` names, and the student audit reports, these.
CHECKS: dict[str, CheckSpec] = {
    c.name: c
    for c in (
        CheckSpec("structure", check_structure, (), reads_prose=False),
        CheckSpec("correctness", check_correctness, (), reads_prose=False),
        CheckSpec("language", check_language, ("min_arabic_letter_share", "max_latin_word_share",
                  "max_other_script_share", "max_persian_letters", "reject_farsi_yeh_keheh",
                  "min_english_letter_share"), reads_prose=True),
        CheckSpec("orthography", check_orthography, ("max_tatweel_run", "max_punctuation_run"), reads_prose=True),
        CheckSpec("morphology", check_morphology, ("min_morphology_coverage", "morphology_sample_words"),
                  reads_prose=True),
        CheckSpec("degeneration", check_degeneration, ("repeated_ngram_n", "max_repeated_ngram_share",
                  "min_phase_words", "max_phase_words", "max_answer_words"), reads_prose=True),
        CheckSpec("norms", check_norms, ("norms_rubric", "values_categories"), reads_prose=True),
    )
}  # fmt: skip


def check_names(names: Iterable[str] | str) -> list[str]:
    """``verify.checks``: ``all`` (every registered check, in the registry's order) or registered names."""
    if names == "all":
        return list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(map(repr, unknown))}; registered: {', '.join(CHECKS)}")
    return list(names)


def verify_trace(t: Trace, p: VerifyParams) -> list[Verdict]:
    """Every enabled check, in the params' order (no short-circuit)."""
    return [CHECKS[name].run(t, p) for name in p.checks]
