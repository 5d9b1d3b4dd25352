"""Arabic-aware text normalisation, word tokenisation, script ratios and offline language ID.

datatrove's defaults miss Arabic spelling variation (أ/إ/آ/ا, ى/ي, ة/ه, tashkeel, tatweel) and its spaCy
tokenizer is slow; :class:`ArabicWordTokenizer` plugs into any datatrove block that takes ``language=`` (MinHash,
Gopher filters) and folds those variants, so dedup and decontamination see ``إِلَى`` and ``الى`` as one word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import regex
from datatrove.utils.word_tokenizers import WordTokenizer

# ------------------------------------------------------------------------------------------------ folding
TASHKEEL = (
    "\u0610\u0611\u0612\u0613\u0614\u0615\u0616\u0617\u0618\u0619\u061a"
    + "".join(chr(c) for c in range(0x064B, 0x0660))
    + "\u0670\u06d6\u06d7\u06d8\u06d9\u06da\u06db\u06dc\u06df\u06e0\u06e1\u06e2\u06e3\u06e4\u06e7\u06e8\u06ea\u06eb\u06ec\u06ed"
)
TATWEEL = "\u0640"
_FOLD_MAP = {
    "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ٲ": "ا", "ٳ": "ا",
    "ى": "ي", "ئ": "ي", "ی": "ي",
    "ؤ": "و",
    "ة": "ه",
    "ک": "ك",
    "٠": "0", "١": "1", "٢": "2", "٣": "3", "٤": "4", "٥": "5", "٦": "6", "٧": "7", "٨": "8", "٩": "9",
    "۰": "0", "۱": "1", "۲": "2", "۳": "3", "۴": "4", "۵": "5", "۶": "6", "۷": "7", "۸": "8", "۹": "9",
}  # fmt: skip
_FOLD_TABLE = str.maketrans({**{c: None for c in TASHKEEL + TATWEEL}, **_FOLD_MAP})
_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)  # letters and digits; punctuation and underscores split words
_SENT_RE = re.compile(r"[^.!?؟\n]+[.!?؟]*")


def fold_arabic(text: str) -> str:
    """Remove tashkeel/tatweel, unify alef/hamza forms, ى→ي, ة→ه, Eastern digits→ASCII, lower-case Latin."""
    return text.translate(_FOLD_TABLE).lower()


@lru_cache(maxsize=256)
def normalized_words(text: str) -> tuple[str, ...]:
    """Folded words with punctuation dropped: the unit of dedup, decontamination and quality statistics.

    Cached: each filter of a pipeline asks for the words of the same document in turn (read-only tuple).
    """
    return tuple(_WORD_RE.findall(fold_arabic(text)))


def normalized_text(text: str) -> str:
    """A canonical string for exact-duplicate hashing."""
    return " ".join(normalized_words(text))


class ArabicWordTokenizer(WordTokenizer):
    """A datatrove ``WordTokenizer``: Arabic-folding regex words (5x faster than spaCy's for MinHash, measured here)."""

    def __init__(self) -> None:
        super().__init__("ar")

    def word_tokenize(self, text: str) -> list[str]:
        return normalized_words(text)  # type: ignore[return-value]  # a tuple: datatrove only reads it

    def sent_tokenize(self, text: str) -> list[str]:
        return [s.strip() for s in _SENT_RE.findall(text) if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in _SENT_RE.finditer(text) if m.group().strip()]


# ------------------------------------------------------------------------------------------- stop words
_AR_STOP = """
في من على إلى عن أن إن ما لا لم لن هل هو هي هم هن أنت أنا نحن هذا هذه ذلك تلك الذي التي الذين كان كانت يكون
قد كل بعض مع عند بين حتى ثم أو أم بل لكن إذا إذ كما لأن لماذا كيف متى أين أي غير بعد قبل فوق تحت حول منذ
ليس ليست يا أيها هنا هناك فيه فيها منه منها عليه عليها له لها به بها هذان هاتان أولئك هؤلاء ولا وما وهو وهي وفي
ومن وعلى وإن وأن فإن فلا لقد وقد كذلك أيضا جدا مثل دون عبر خلال لدى نحو إلا سوف
إنه إنها أنه أنها إنهم أنهم لديه لديها لدينا لديهم عليهم إليه إليها إليهم منهم فيهم بهم لهم لنا لي لك به
بأن لأنه لأنها ولكن وكان وكانت وكل وهذا وهذه وذلك فقد فقط حيث بحيث بشكل لهذا بهذا لذلك بذلك هذه ذات عدة
أكثر أقل كلا أحد إحدى وقال قال يقول تكون يكون كانوا يمكن يجب ضد ثم إذن وإذا فإذا عندما بينما كي لكي لما
"""
_EN_STOP = """
the be to of and a an in that have has had it for not on with he she as you do at this but his by from they we
her its our their or will would there what so if about which who when can is are was were been one all my your
"""
ARABIC_STOP_WORDS = frozenset(fold_arabic(w) for w in _AR_STOP.split())
ENGLISH_STOP_WORDS = frozenset(_EN_STOP.split())
STOP_WORDS = ARABIC_STOP_WORDS | ENGLISH_STOP_WORDS


# --------------------------------------------------------------------------------------- scripts and LID
# Letters of Persian/Urdu that Arabic never uses. Farsi yeh (ی) and keheh (ک) are left out on purpose: Arabic
# typed on Persian keyboards is full of them (seen in real Arabic Wikipedia paragraphs).
PERSIAN_URDU_LETTERS = frozenset("پچژگٹڈڑںےۀ")
AMBIGUOUS_PERSIAN_LETTERS = frozenset("یک")


@dataclass(frozen=True)
class ScriptShares:
    letters: int
    arabic: float  # share of letters in Arabic script
    latin: float
    other: float
    non_arabic_letters_in_arabic_script: float  # Persian/Urdu letters among Arabic-script letters
    ambiguous_letters: float = (
        0.0  # Farsi yeh/keheh among Arabic-script letters (Persian, or Arabic typed on a Persian keyboard)
    )


# Letters only (no digits, punctuation or harakat): Arabic-script letters of the Arabic blocks, Latin letters.
_ARABIC_LETTERS_RE = re.compile(
    r"[\u0620-\u064A\u066E-\u06D3\u06D5\u06EE-\u06FF\u0750-\u077F\u08A0-\u08FF\uFB50-\uFDFF\uFE70-\uFEFC]"
)
_LATIN_LETTERS_RE = re.compile(r"[A-Za-z\u00C0-\u024F\u1E00-\u1EFF]")
_LETTERS_RE = regex.compile(r"\p{L}")


def script_shares(text: str) -> ScriptShares:
    """Letter counts by script (digits, punctuation and marks are not letters), at C speed."""
    ar = len(text) - len(_ARABIC_LETTERS_RE.sub("", text))
    la = len(text) - len(_LATIN_LETTERS_RE.sub("", text))
    # letters of other scripts are counted only when these two leave much of the text unexplained
    n = ar + la if ar + la >= 0.5 * len(text) else len(_LETTERS_RE.findall(text))
    if n == 0:
        return ScriptShares(0, 0.0, 0.0, 0.0, 0.0)
    foreign = sum(text.count(c) for c in PERSIAN_URDU_LETTERS) if ar else 0
    ambiguous = sum(text.count(c) for c in AMBIGUOUS_PERSIAN_LETTERS) if ar else 0
    return ScriptShares(
        n, ar / n, la / n, (n - ar - la) / n, foreign / ar if ar else 0.0, ambiguous / ar if ar else 0.0
    )


# Candidate languages for Latin-script text: limiting langid to widely written languages stops short prompts
# full of names being read as, e.g., Extremaduran ("ext"); all 600 English UD-PUD sentences stay "en". Of the
# model's Arabic codes (ar, arz, ary) only "ar" is listed, so Arabic always reads as "ar".
LID_LANGUAGES = [
    "ar",
    "en",
    "fr",
    "es",
    "de",
    "it",
    "pt",
    "nl",
    "tr",
    "id",
    "ms",
    "sw",
    "fa",
    "ur",
    "ru",
    "pl",
    "sv",
    "ro",
    "cs",
    "vi",
]


LID_CHARS = 600  # langid reads this many characters: plenty for prose, and it is the slowest step


@lru_cache(maxsize=1)
def _langid():
    """py3langid ships its model inside the wheel: offline, no download."""
    import py3langid

    py3langid.set_languages(LID_LANGUAGES)
    return py3langid


@dataclass(frozen=True)
class LanguageGuess:
    lang: str  # "ar", "en", another ISO code, "fa/ur" or "und"
    score: float
    reason: str


def detect_language(
    text: str, *, min_script_share: float = 0.6, max_foreign_letters: float = 0.02
) -> LanguageGuess:
    """Script ratios first (fast, decisive for Arabic vs Latin); the shipped langid model for Latin text."""
    s = script_shares(text)
    if s.letters == 0:
        return LanguageGuess("und", 0.0, "no letters")
    if s.arabic >= min_script_share:
        if s.non_arabic_letters_in_arabic_script > max_foreign_letters:
            return LanguageGuess(
                "fa/ur",
                s.arabic,
                f"Persian/Urdu letters are {s.non_arabic_letters_in_arabic_script:.0%} of Arabic-script letters",
            )
        if s.ambiguous_letters > max_foreign_letters:  # ی/ک: Persian, or Arabic typed on a Persian keyboard
            code, _ = _langid().classify(text[:LID_CHARS])
            if code in ("fa", "ur"):
                return LanguageGuess(
                    "fa/ur", s.arabic, f"Farsi yeh/keheh {s.ambiguous_letters:.0%} of letters; langid: {code}"
                )
        return LanguageGuess("ar", s.arabic, f"Arabic script {s.arabic:.0%} of letters")
    if s.latin >= min_script_share:
        code, _ = _langid().classify(text[:LID_CHARS])
        return LanguageGuess(code, s.latin, f"Latin script {s.latin:.0%}; langid: {code}")
    return LanguageGuess(
        "und", max(s.arabic, s.latin), f"mixed scripts (Arabic {s.arabic:.0%}, Latin {s.latin:.0%})"
    )


# ------------------------------------------------------------------- spelling variants (tests, benchmarks)
_HARAKAT = ("\u064e", "\u064f", "\u0650", "\u0652")  # fatha, damma, kasra, sukun
_ARABIC_LETTER = re.compile(r"[\u0621-\u064a]")


def add_tashkeel(text: str) -> str:
    """Put a haraka after every Arabic letter (deterministic), as a fully vocalised copy would."""
    out, k = [], 0
    for ch in text:
        out.append(ch)
        if _ARABIC_LETTER.match(ch):
            out.append(_HARAKAT[k % len(_HARAKAT)])
            k += 1
    return "".join(out)


def _word_final(text: str, a: str, b: str) -> str:
    return re.sub(rf"{a}(?=\W|$)", b, text)


def _tatweel(text: str) -> str:
    """Stretch the longest Arabic words with a tatweel run (the way headlines and poetry are typed)."""
    words = text.split(" ")
    longest = sorted(range(len(words)), key=lambda i: -len(words[i]))[:2]
    for i in longest:
        w = words[i]
        if len(w) >= 4 and _ARABIC_LETTER.match(w[1]) and _ARABIC_LETTER.match(w[2]):
            words[i] = w[:2] + TATWEEL * 3 + w[2:]
    return " ".join(words)


SPELLING_VARIANTS = {
    "exact": lambda t: t,
    "tashkeel": add_tashkeel,
    "alef": lambda t: re.sub("[أإآ]", "ا", t),
    "ya": lambda t: _word_final(_word_final(t, "ى", "\x00"), "ي", "ى").replace("\x00", "ي"),
    "ta_marbuta": lambda t: _word_final(t, "ة", "ه"),
    "tatweel": _tatweel,
}
SPELLING_VARIANTS["all"] = lambda t: SPELLING_VARIANTS["tatweel"](
    SPELLING_VARIANTS["ta_marbuta"](SPELLING_VARIANTS["ya"](SPELLING_VARIANTS["alef"](t)))
)
