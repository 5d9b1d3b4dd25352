from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import read_jsonl

from arabic_r1.arabic_text import (
    SPELLING_VARIANTS,
    ArabicWordTokenizer,
    LanguageGuess,
    ScriptShares,
    detect_language,
    fold_arabic,
    normalized_text,
    normalized_words,
    script_shares,
)


@pytest.mark.parametrize(
    ("variant", "canonical"),
    [
        ("إِلَى المَدْرَسَةِ", "الي المدرسه"),
        ("أحمد وآمنة وإيمان", "احمد وامنه وايمان"),
        ("مستشفى على", "مستشفي علي"),
        ("الجميلــــة", "الجميله"),
        ("العدد ٣٤٥ و۷", "العدد 345 و7"),
        ("Hello, WORLD!", "hello world"),
        ("مسؤول، شاطئ", "مسوول شاطي"),
    ],
)
def test_folding(variant: str, canonical: str) -> None:
    assert normalized_text(variant) == canonical


def test_fold_keeps_other_scripts_and_length_sane() -> None:
    assert fold_arabic("ABC абв 中文") == "abc абв 中文"


def test_tokenizer_implements_datatrove_interface() -> None:
    tok = ArabicWordTokenizer()
    assert list(tok.word_tokenize("قالَ: «مرحباً»؛ ثم ذهب.")) == ["قال", "مرحبا", "ثم", "ذهب"]
    assert tok.sent_tokenize("جملة أولى. جملة ثانية؟ وثالثة!") == ["جملة أولى.", "جملة ثانية؟", "وثالثة!"]
    text = "جملة أولى. جملة ثانية؟"
    assert [text[a:b].strip() for a, b in tok.span_tokenize(text)] == ["جملة أولى.", "جملة ثانية؟"]


def test_every_spelling_variant_folds_to_the_original(shared_data: Path) -> None:
    texts = [r["text"] for r in read_jsonl(shared_data / "corpus" / "ar_pud_sentences.jsonl")[:100]]
    for name, vary in SPELLING_VARIANTS.items():
        changed = sum(vary(t) != t for t in texts)
        assert name == "exact" or changed > 20, f"variant {name} changed only {changed} texts"
        assert all(normalized_words(vary(t)) == normalized_words(t) for t in texts), name


def test_language_id_on_real_corpora(shared_data: Path) -> None:
    ar = [r["text"] for r in read_jsonl(shared_data / "corpus" / "ar_pud_sentences.jsonl")]
    ar += [r["context"] for r in read_jsonl(shared_data / "corpus" / "ar_arcd_paragraphs.jsonl")]
    en = [r["text"] for r in read_jsonl(shared_data / "corpus" / "en_pud_sentences.jsonl")]
    got_ar = Counter(detect_language(t).lang for t in ar)
    got_en = Counter(detect_language(t).lang for t in en)
    assert got_ar["ar"] == len(ar), got_ar
    assert got_en["en"] >= len(en) - 1, got_en


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("این یک جمله فارسی است که برای آزمایش نوشته شده", "fa/ur"),
        ("یہ ایک اردو جملہ ہے جو جانچ کے لیے لکھا گیا ہے", "fa/ur"),
        ("Ceci est une phrase écrite en français pour le test.", "fr"),
        ("12345 !!! ???", "und"),
        ("Who wrote One Hundred Years of Solitude? A) Jorge Luis Borges B) Gabriel García Márquez", "en"),
    ],
)
def test_language_id_rejects_other_languages(text: str, lang: str) -> None:
    assert detect_language(text).lang == lang


def test_script_shares() -> None:
    s = script_shares("abc ابت ١٢٣")
    assert s.letters == 6 and s.arabic == 0.5 and s.latin == 0.5


def test_the_spelling_variants_the_decontamination_tests_plant() -> None:
    """The generators of the variants an exam copied onto the web carries: exact outputs, since the recall tests on
    real rows rest on them planting what they say (every letter vocalised in turn; the two longest words stretched
    after their second letter, a short word never)."""
    from arabic_r1.arabic_text import SPELLING_VARIANTS, TATWEEL

    fatha, damma, kasra, sukun = "\u064e", "\u064f", "\u0650", "\u0652"
    assert SPELLING_VARIANTS["tashkeel"]("من 1 باب") == f"م{fatha}ن{damma} 1 ب{kasra}ا{sukun}ب{fatha}"
    t = TATWEEL * 3
    assert SPELLING_VARIANTS["tatweel"]("في المدرسة الكبيرة كتاب") == f"في ال{t}مدرسة ال{t}كبيرة كتاب"
    assert (
        SPELLING_VARIANTS["tatweel"]("من  بيت كبير") == f"من  بيت كب{t}ير"
    )  # two spaces kept; 3 letters: never
    for word in ("abcd", "ك1تب", "كت1ب"):  # the letters on both sides of the tatweel must be Arabic
        assert SPELLING_VARIANTS["tatweel"](f"{word} من") == f"{word} من"


@pytest.mark.parametrize(
    ("text", "shares"),
    [
        ("", (0, 0.0, 0.0, 0.0, 0.0, 0.0)),
        ("12345 !!! ؟؟", (0, 0.0, 0.0, 0.0, 0.0, 0.0)),  # digits and punctuation are not letters
        ("abc", (3, 0.0, 1.0, 0.0, 0.0, 0.0)),
        ("كِتَابٌ", (4, 1.0, 0.0, 0.0, 0.0, 0.0)),  # harakat are not letters
        ("كتاب abcd", (8, 0.5, 0.5, 0.0, 0.0, 0.0)),
        # Arabic + Latin explain 6 of 8 characters: other scripts are not looked for (the fast path)
        ("كتابab Ж", (6, 4 / 6, 2 / 6, 0.0, 0.0, 0.0)),
        ("ab Жж", (4, 0.0, 0.5, 0.5, 0.0, 0.0)),  # 2 of 5 characters explained: other letters counted
        ("abЖж", (2, 0.0, 1.0, 0.0, 0.0, 0.0)),  # exactly half explained: the fast path
        ("abcd Жжжжжжж", (11, 0.0, 4 / 11, 7 / 11, 0.0, 0.0)),
        ("پچ كتاب", (6, 1.0, 0.0, 0.0, 2 / 6, 0.0)),
        ("یک كتاب", (6, 1.0, 0.0, 0.0, 0.0, 2 / 6)),
    ],
)
def test_script_shares_count_letters_by_script(text: str, shares: tuple) -> None:
    """Every share of the letters: what the language check's thresholds compare (Arabic, Latin, other scripts,
    Persian/Urdu letters and the ambiguous ی/ک among the Arabic-script ones)."""
    assert script_shares(text) == ScriptShares(*shares)


@pytest.mark.parametrize(
    ("text", "kwargs", "guess"),
    [
        ("12345 !!! ???", {}, ("und", 0.0, "no letters")),
        ("پچ كتاب", {}, ("fa/ur", 1.0, "Persian/Urdu letters are 33% of Arabic-script letters")),
        # 2% Persian letters (then 2% ی): the bound itself, accepted
        ("پ" + "ب" * 49, {}, ("ar", 1.0, "Arabic script 100% of letters")),
        ("ی" + "ب" * 49, {}, ("ar", 1.0, "Arabic script 100% of letters")),
        ("مجھ کو یہ کتاب دو", {}, ("fa/ur", 1.0, "Farsi yeh/keheh 23% of letters; langid: ur")),
        ("كتاب abcd", {}, ("und", 0.5, "mixed scripts (Arabic 50%, Latin 50%)")),
        ("كتاب abcd", {"min_script_share": 0.5}, ("ar", 0.5, "Arabic script 50% of letters")),
        ("abc ك", {"min_script_share": 0.75}, ("ar", 0.75, "Latin script 75%; langid: ar")),
        (
            "Ceci est une phrase écrite en français pour le test.",
            {},
            ("fr", 1.0, "Latin script 100%; langid: fr"),
        ),
        ("Привет мир как дела", {}, ("und", 0.0, "mixed scripts (Arabic 0%, Latin 0%)")),
    ],
)
def test_every_language_guess_gives_its_score_and_reason(text: str, kwargs: dict, guess: tuple) -> None:
    """The guess, its script share and the reason the student audit and phase 03 print, at each bound (a share equal
    to a threshold is on the accepting side)."""
    assert detect_language(text, **kwargs) == LanguageGuess(*guess)
    assert detect_language("x = 5").lang != "und"  # one letter is a letter
