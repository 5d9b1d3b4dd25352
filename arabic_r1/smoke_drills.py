"""Multiple-choice drills for the smoke pool: short items built from small fact tables, each with a four-phase trace.

Why they exist: a 2M-parameter student learns a format from many examples, not from instructions. The hand-written
smoke prompts are mostly open questions with long traces (median ~400 tokens), while the OALL benchmarks are
multiple-choice items with two to five options labelled أ-هـ, 1-5 or 0-4, often after a one-line instruction and
ending in "الإجابة:". The drills show the student that shape of prompt many times over, each answered in the
teacher's four phases, so that phase 05 can check that the chain data -> traces -> SFT -> merge -> generation ->
parser carries the format. Their content is deliberately simple (arithmetic, word meanings, authors, dialect words,
sentiment, everyday ethics) and asks no fact that the shipped benchmark fixtures ask (no synonym, plural or antonym
of theirs); phase 01 decontaminates them like any source.

The traces keep each phase to one line. The Analysis names the task in general terms, the number of options and how
they are labelled ("من 1 إلى 4"), and the value at stake for an ethics item; the item's own content sits in the
Elimination and the Synthesis. Measured on the smoke fixtures: with an item-specific Analysis ("يطلب السؤال تحديد جمع
كلمة ...") the student derailed there on unfamiliar prompts and wrote the four phases in 72-85% of its answers; with
this one, 95%; without the labels in the Analysis it answered digit-labelled questions with a letter.

``python -m arabic_r1.smoke_drills`` rewrites ``resources/smoke_data/drills.{ar,en}.jsonl``, rebuilds the replay pack
``resources/teacher_cache/smoke_v1.jsonl`` (the hand-written traces as they are, plus the drills'), and writes
``resources/pretrain_questions.jsonl``: other renderings of the same kinds of item (another seed) with only their answer
line, no reasoning - the exam-paper text a web-scale corpus is full of, which phase 00 pre-trains the embedded backbone
on so that it knows to answer with a label the question uses (أ, 2 or 0). The output is a pure function of this file
and its fact tables (smoke_facts.py),
which ``tests/test_smoke_drills.py`` checks.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arabic_r1.jsonl import read_jsonl, write_jsonl
from arabic_r1.reference import PAPER_CATEGORIES
from arabic_r1.smoke_facts import (
    ACTS_AR,
    ACTS_EN,
    ANTONYMS_AR,
    ANTONYMS_EN,
    AUTHORS_AR,
    AUTHORS_EN,
    COMPLAINT_AR,
    COMPLAINT_EN,
    DEVICES_AR,
    DIALECT_AR,
    ETHICS_AR,
    ETHICS_EN,
    FORMS_AR,
    GREETINGS_AR,
    MEANINGS_AR,
    NAMES_AR,
    NOUNS_AR,
    OBJECTS_AR,
    PARTICLES_AR,
    PHRASES_AR,
    PLURALS_AR,
    POETS_AR,
    POETS_EN,
    PRAISE_AR,
    PRAISE_EN,
    PRODUCTS_AR,
    PRODUCTS_EN,
    REVIEWS_AR,
    REVIEWS_EN,
    SCHOLARS_AR,
    SCIENTISTS_EN,
    SOCIAL_EN,
    STORY_AR,
    SYNONYMS_AR,
    VERBS_AR,
    WORDS_EN,
)

SEED = 2604
PRETRAIN_SEED, PRETRAIN_QUESTIONS = 7, 700  # the answered questions of phase 00's pre-training text
PER_CATEGORY = {"ar": 150, "en": 60}  # drills per (language, category), unless COUNTS says otherwise
# consumer reviews: fewer (their texts are long, and the English cells must still be able to hold 20% of the tokens);
# arithmetic: more (with digits folded, many are near-duplicates that phase 01 removes, or fall under Gopher's
# alphabetic-word threshold). ~1,000 drills reach the pool: more of them, not more epochs, is what steadied the student.
COUNTS = {
    ("ar", "consumer_reviews_feedback"): 90,
    ("ar", "stem_math_logic"): 220,
    ("en", "stem_math_logic"): 80,
}


@dataclass(frozen=True)
class Item:
    """One drill before rendering: the question, the right option, the wrong ones, and what the trace says."""

    question: str
    right: str
    wrong: tuple[str, ...]
    reason: str  # why the wrong options go, for the Elimination
    fact: str  # the conclusion, for the Synthesis
    value: str | None = None  # the value an ethics item rests on (the norms check wants it in the Analysis)


# -------------------------------------------------------------------------------------------- item kinds
# Two kinds of makers: a table maker returns one item per table row (each fact asked once: asking it again with
# other options would be a near-duplicate that phase 01 rightly removes); a generator makes a new item per call.
def _others(rng: random.Random, pool: tuple | list, right: Any, k: int = 4) -> tuple:
    rest = [x for x in dict.fromkeys(pool) if x != right]
    return tuple(rng.sample(rest, min(k, len(rest))))


def _arith(rng: random.Random, lang: str) -> Item:
    a, b = rng.randint(3, 60), rng.randint(2, 15)
    op = rng.choice(["+", "-", "×"])
    value = {"+": a + b, "-": a - b, "×": a * b}[op] if a >= b or op != "-" else b - a
    a, b = (a, b) if a >= b or op != "-" else (b, a)
    wrong = tuple(str(value + d) for d in rng.sample([-10, -3, -2, -1, 1, 2, 3, 10], 4) if value + d >= 0)
    if lang == "en":
        e = f"{a} {op.replace('×', 'x')} {b}"
        return Item(f"What is {e}?", str(value), wrong, "they do not equal the result", f"{e} equals {value}")
    ask = rng.choice(["ما ناتج {e}؟", "احسب {e}.", "كم يساوي {e}؟"]).format(e=f"{a} {op} {b}")
    return Item(ask, str(value), wrong, "لا يساوي ناتج العملية", f"ناتج العملية {a} {op} {b} يساوي {value}")


def _units(rng: random.Random, lang: str) -> Item:
    n = rng.randint(3, 10)  # 3-10: the counted noun stays plural (أمتار, hours)
    unit, small, factor = rng.choice(
        [("ساعات", "دقيقة", 60), ("أمتار", "سنتيمترًا", 100), ("أيام", "ساعة", 24), ("أسابيع", "يومًا", 7)]
        if lang == "ar"
        else [
            ("hours", "minutes", 60),
            ("metres", "centimetres", 100),
            ("days", "hours", 24),
            ("weeks", "days", 7),
        ]
    )
    value = n * factor
    wrong = tuple(str(value + d) for d in rng.sample([-factor, factor, -10, 10, 2 * factor], 4))
    if lang == "en":
        return Item(
            f"How many {small} are there in {n} {unit}?",
            str(value),
            wrong,
            f"they do not equal {n} times {factor}",
            f"{n} {unit} make {value} {small}",
        )
    return Item(
        f"كم {small} في {n} {unit}؟",
        str(value),
        wrong,
        f"لا يساوي حاصل ضرب {n} في {factor}",
        f"{n} {unit} تساوي {value} بالوحدة الأصغر",
    )


def _sequence(rng: random.Random, lang: str) -> Item:
    start, step = rng.randint(1, 30), rng.randint(2, 9)
    terms = [start + i * step for i in range(4)]
    value = start + 4 * step
    wrong = tuple(str(value + d) for d in rng.sample([-step, step, -1, 1, 2], 4))
    if lang == "en":
        shown = ", ".join(map(str, terms))
        return Item(
            f"What number comes next: {shown}, ...?",
            str(value),
            wrong,
            f"they break the step of {step}",
            f"each term adds {step} and the next one is {value}",
        )
    shown = "، ".join(map(str, terms))
    return Item(
        f"ما العدد التالي في المتتالية: {shown}، ...؟",
        str(value),
        wrong,
        f"لا يحافظ على الزيادة الثابتة {step}",
        f"كل حد يزيد {step}، فالحد التالي {value}",
    )


def _parity(rng: random.Random, lang: str) -> Item:
    even = rng.choice([True, False])
    nums = rng.sample(range(11, 99), 12)
    right = next(n for n in nums if (n % 2 == 0) == even)
    wrong = tuple(str(n) for n in nums if (n % 2 == 0) != even)[:4]
    if lang == "en":
        kind = "even" if even else "odd"
        return Item(
            f"Which of these numbers is {kind}?",
            str(right),
            wrong,
            f"they are not {kind}",
            f"{right} is {kind}",
        )
    kind = "زوجي" if even else "فردي"
    return Item(
        f"أي الأعداد الآتية عدد {kind}؟", str(right), wrong, f"ليس عددًا {kind}ًا", f"العدد {right} {kind}"
    )


def _word_problem(rng: random.Random, lang: str) -> Item:
    n, price = rng.randint(3, 10), rng.randint(2, 9)
    value = n * price
    wrong = tuple(str(value + d) for d in rng.sample([-price, price, n, -2, 2], 4))
    if lang == "en":
        name = rng.choice(("Sara", "Omar", "Lina", "Adam", "Huda", "Karim"))
        thing = rng.choice(("pens", "books", "apples", "notebooks", "tickets"))
        return Item(
            f"{name} buys {n} {thing} at {price} dollars each. How much does {name} pay?",
            str(value),
            wrong,
            "they do not equal that product",
            f"{n} times {price} is {value}",
        )
    name, (things, _) = rng.choice(NAMES_AR), rng.choice(OBJECTS_AR)
    return Item(
        f"اشترى {name} {n} {things} بسعر {price} ريالات للواحد، فكم دفع؟"
        if name not in ("مريم", "سلمى", "ليلى", "هدى")
        else f"اشترت {name} {n} {things} بسعر {price} ريالات للواحد، فكم دفعت؟",
        str(value),
        wrong,
        "لا يساوي حاصل الضرب",
        f"حاصل ضرب {n} في {price} يساوي {value}",
    )


def _poet_en(rng: random.Random, lang: str) -> Item:
    right, wrong = rng.choice(POETS_EN), tuple(rng.sample(SCIENTISTS_EN, 4))
    return Item(
        "Which of these people was a poet?", right, wrong, "they were scientists", f"{right} was a poet"
    )


def _word_class_en(rng: random.Random, lang: str) -> Item:
    kind = rng.choice(list(WORDS_EN))
    right = rng.choice(WORDS_EN[kind])
    wrong = tuple(rng.sample([w for k, ws in WORDS_EN.items() if k != kind for w in ws], 4))
    return Item(
        f"Which of these words is a {kind}?", right, wrong, f"they are not {kind}s", f'"{right}" is a {kind}'
    )


def _composed_review_en(rng: random.Random, lang: str) -> Item:
    positive = rng.random() < 0.5
    first, second = rng.sample(PRAISE_EN if positive else COMPLAINT_EN, 2)
    label = "Positive" if positive else "Negative"
    text = f"{rng.choice(PRODUCTS_EN)} {first} and {second}."
    return Item(
        f'Classify this review: "{text}"',
        label,
        tuple(x for x in ("Positive", "Negative", "Neutral") if x != label),
        "they do not fit what the customer says",
        f"the review is {label.lower()}",
    )


def _acceptable_act_en(rng: random.Random, lang: str) -> Item:
    good = rng.random() < 0.5
    act, _, value = rng.choice([a for a in ACTS_EN if a[1] == good])
    wrong = tuple(a for a, ok, _ in rng.sample([a for a in ACTS_EN if a[1] != good], 4))
    kind = "acceptable" if good else "unacceptable"
    return Item(
        f"Which of these actions is {kind}?", act, wrong, "they are the opposite", f"{act} is {kind}", value
    )


def _authors(rng: random.Random, lang: str) -> list[Item]:
    table = AUTHORS_AR if lang == "ar" else AUTHORS_EN
    names = [a for _, a in table]
    if lang == "en":
        return [
            Item(
                f"Who wrote {w}?",
                a,
                _others(rng, names, a),
                "they did not write this work",
                f"{w} was written by {a}",
            )
            for w, a in table
        ]
    return [
        Item(
            f"من مؤلف كتاب «{w}»؟",
            a,
            _others(rng, names, a),
            "لم يؤلف هذا الكتاب",
            f"كتاب «{w}» من تأليف {a}",
        )
        for w, a in table
    ]


def _devices(rng: random.Random, lang: str) -> list[Item]:
    out = []
    for table in (DEVICES_AR, FORMS_AR):
        names = [n for _, n in table]
        out += [
            Item(f"ما اسم {d}؟", n, _others(rng, names, n), "لا ينطبق عليه هذا التعريف", f"{d} هو {n}")
            for d, n in table
        ]
    return out


def _plurals(rng: random.Random, lang: str) -> list[Item]:
    plurals = [p for _, p in PLURALS_AR]
    return [
        Item(f"ما جمع كلمة «{w}»؟", p, _others(rng, plurals, p), "جمع لكلمة أخرى", f"جمع «{w}» هو «{p}»")
        for w, p in PLURALS_AR
    ]


def _antonyms(rng: random.Random, lang: str) -> list[Item]:
    table = ANTONYMS_AR if lang == "ar" else ANTONYMS_EN
    opposites = [o for _, o in table]
    if lang == "en":
        return [
            Item(
                f'What is the opposite of "{w}"?',
                o,
                _others(rng, opposites, o),
                "their meaning is not the opposite",
                f"the opposite of {w} is {o}",
            )
            for w, o in table
        ]
    return [
        Item(
            f"ما ضد كلمة «{w}»؟",
            o,
            _others(rng, opposites, o),
            "لا يضاد معناه معنى الكلمة",
            f"ضد «{w}» هو «{o}»",
        )
        for w, o in table
    ]


def _synonyms(rng: random.Random, lang: str) -> list[Item]:
    same = [s for _, s in SYNONYMS_AR]
    return [
        Item(
            f"ما معنى كلمة «{w}»؟",
            s,
            _others(rng, same, s),
            "معناه بعيد عن معنى الكلمة",
            f"معنى «{w}» هو «{s}»",
        )
        for w, s in SYNONYMS_AR
    ]


def _stories(rng: random.Random, lang: str) -> list[Item]:
    return [
        Item(f"السياق: {c}\nالسؤال: {q}", r, w, "لا يذكره السياق", f"يذكر السياق أن الجواب {r}")
        for c, q, r, w in STORY_AR
    ]


def _reviews(rng: random.Random, lang: str) -> list[Item]:
    table = REVIEWS_AR if lang == "ar" else REVIEWS_EN
    if lang == "en":
        labels = ("Positive", "Negative", "Neutral")
        return [
            Item(
                f'What is the sentiment of this review: "{t}"',
                s,
                tuple(x for x in labels if x != s),
                "they do not match the tone of the review",
                f"the review is {s.lower()}",
            )
            for t, s in table
        ]
    labels = ("إيجابي", "سلبي", "محايد")
    return [
        Item(
            f"ما نوع المشاعر في هذا التعليق: «{t}»",
            s,
            tuple(x for x in labels if x != s),
            "لا يطابق نبرة التعليق",
            f"التعليق {s}",
        )
        for t, s in table
    ]


def _composed_review(rng: random.Random, lang: str) -> Item:
    """A review from a product and two phrases of one polarity: many distinct texts from small tables."""
    positive = rng.random() < 0.5
    product = rng.choice(PRODUCTS_AR)
    first, second = rng.sample(PRAISE_AR if positive else COMPLAINT_AR, 2)
    label = "إيجابي" if positive else "سلبي"
    text = f"{product} {first}، و{second}."
    return Item(
        f"صنف هذه المراجعة: «{text}»",
        label,
        tuple(x for x in ("إيجابي", "سلبي", "محايد") if x != label),
        "لا يوافق ما يقوله العميل",
        f"المراجعة {label}",
    )


def _ethics(rng: random.Random, lang: str) -> list[Item]:
    if lang == "en":
        return [
            Item(q, r, w, f"they go against {v}", f"the right choice is to {r[0].lower() + r[1:]}", v)
            for q, r, w, v in ETHICS_EN
        ]
    return [Item(q, r, w, f"يخالف {v}", f"الصواب {r}", v) for q, r, w, v in ETHICS_AR]


def _acts(rng: random.Random, lang: str) -> list[Item]:
    out = []
    for act, ok, value in ACTS_AR:
        right, wrong = ("مقبول", "مرفوض") if ok else ("مرفوض", "مقبول")
        out.append(
            Item(f"هل {act} تصرف مقبول أم مرفوض؟", right, (wrong,), f"يناقض {value}", f"{act} {right}", value)
        )
    return out


def _poet(rng: random.Random, lang: str) -> Item:
    if rng.random() < 0.5:
        right, wrong = rng.choice(POETS_AR), tuple(rng.sample(SCHOLARS_AR, 4))
        return Item("أي هؤلاء شاعر؟", right, wrong, "عالم لا شاعر", f"{right} شاعر")
    right, wrong = rng.choice(SCHOLARS_AR), tuple(rng.sample(POETS_AR, 4))
    return Item("أي هؤلاء عالم وليس شاعرًا؟", right, wrong, "شاعر لا عالم", f"{right} عالم")


def _word_class(rng: random.Random, lang: str) -> Item:
    classes = {"اسم": NOUNS_AR, "فعل": VERBS_AR, "حرف": PARTICLES_AR}
    kind = rng.choice(list(classes))
    right = rng.choice(classes[kind])
    wrong = tuple(rng.sample([w for k, ws in classes.items() if k != kind for w in ws], 4))
    return Item(f"أي الكلمات الآتية {kind}؟", right, wrong, f"ليس {kind}ًا", f"كلمة «{right}» {kind}")


def _dialect_phrase(rng: random.Random, lang: str) -> Item:
    dialect = rng.choice(list(PHRASES_AR))
    right = rng.choice(PHRASES_AR[dialect])
    wrong = tuple(rng.choice(PHRASES_AR[d]) for d in rng.sample([d for d in PHRASES_AR if d != dialect], 4))
    return Item(
        f"أي العبارات الآتية باللهجة {dialect}؟",
        right,
        wrong,
        "من لهجة أخرى",
        f"«{right}» عبارة باللهجة {dialect}",
    )


def _acceptable_act(rng: random.Random, lang: str) -> Item:
    good = rng.random() < 0.5
    act, _, value = rng.choice([a for a in ACTS_AR if a[1] == good])
    wrong = tuple(a for a, ok, _ in rng.sample([a for a in ACTS_AR if a[1] != good], 4))
    kind = "مقبول" if good else "مرفوض"
    return Item(
        f"أي التصرفات الآتية {kind}؟", act, wrong, f"عكس ذلك في ميزان {value}", f"{act} تصرف {kind}", value
    )


def _dialects(rng: random.Random, lang: str) -> list[Item]:
    return [
        Item(
            f"ما معنى «{w}» في اللهجة {d}؟",
            m,
            _others(rng, MEANINGS_AR, m),
            "ليس معنى هذه الكلمة",
            f"«{w}» في اللهجة {d} تعني «{m}»",
        )
        for w, d, m in DIALECT_AR
    ]


def _greetings(rng: random.Random, lang: str) -> list[Item]:
    replies = [r for _, r in GREETINGS_AR]
    return [
        Item(
            f"ما الرد المعتاد على من يقول: «{g}»؟",
            r,
            _others(rng, replies, r),
            "لا يقال ردًا على هذه العبارة",
            f"الرد على «{g}» هو «{r}»",
        )
        for g, r in GREETINGS_AR
    ]


def _social_en(rng: random.Random, lang: str) -> list[Item]:
    return [
        Item(q, r, w, "they would be impolite here", f"the courteous response is to {r[0].lower() + r[1:]}")
        for q, r, w in SOCIAL_EN
    ]


Maker = Callable[[random.Random, str], Any]
# (tables, generators) per (language, category): every table row once, then generated items up to the count
KINDS: dict[tuple[str, str], tuple[tuple[Maker, ...], tuple[Maker, ...]]] = {
    ("ar", "literature_critical_analysis"): ((_authors, _devices), (_poet,)),
    # no Arabic sequences: with digits folded, "ما العدد التالي في المتتالية: ..." is a near-duplicate of the hand-written
    # sequence question, and phase 01 would keep one of them
    ("ar", "stem_math_logic"): ((), (_arith, _units, _parity, _word_problem, _word_problem)),
    ("ar", "creative_writing_dialogue"): ((_plurals, _antonyms, _synonyms, _stories), (_word_class,)),
    ("ar", "consumer_reviews_feedback"): ((_reviews,), (_composed_review,)),
    ("ar", "legal_cultural_alignment"): ((_ethics, _acts), (_acceptable_act,)),
    ("ar", "social_dialectal"): ((_dialects, _greetings), (_dialect_phrase,)),
    ("en", "literature_critical_analysis"): ((_authors,), (_poet_en,)),
    ("en", "stem_math_logic"): ((), (_arith, _units, _sequence, _parity, _word_problem)),
    ("en", "creative_writing_dialogue"): ((_antonyms,), (_word_class_en,)),
    ("en", "consumer_reviews_feedback"): ((_reviews,), (_composed_review_en,)),
    ("en", "legal_cultural_alignment"): ((_ethics,), (_acceptable_act_en,)),
    ("en", "social_dialectal"): ((_social_en,), (_acceptable_act_en,)),
}


# ------------------------------------------------------------------------------------------- rendering
LABELS = {
    "ar": ("أ", "ب", "ج", "د", "هـ"),
    "en": ("A", "B", "C", "D", "E"),
    "1": tuple("12345"),
    "0": tuple("01234"),
}
OPTION_STYLES = ("{l}) {o}", "{l}. {o}", " {l}) {o}\n", "({l}) {o}", "{l}- {o}")
HEADERS = {
    "ar": ("", "اختر الإجابة الصحيحة:", "أجب عن السؤال الآتي باختيار رمز الخيار الصحيح.", "سؤال اختيار من متعدد:",
           "اقرأ السؤال ثم حدد الجواب الصحيح من بين الخيارات.", "حدد الخيار الصحيح فيما يأتي:"),
    "en": ("", "Choose the correct answer:", "Answer the question by giving the label of the right option.",
           "Multiple-choice question:"),
}  # fmt: skip
QUESTION_WORD = {"ar": "السؤال", "en": "Question"}
ENDINGS = {"ar": ("", "", "الإجابة:", "الجواب:"), "en": ("", "", "Answer:")}
COUNT_WORDS = {"ar": {2: "خيارين", 3: "ثلاثة خيارات", 4: "أربعة خيارات", 5: "خمسة خيارات"},
               "en": {2: "two options", 3: "three options", 4: "four options", 5: "five options"}}  # fmt: skip
CHECKS_AR = (
    "راجعت المسودة نحويًا وإملائيًا، والهمزات والتاء المربوطة في مواضعها الصحيحة.",
    "دققت صياغة الخلاصة فوجدتها سليمة، ولا خطأ يستدعي التصحيح.",
    "راجعت الإعراب والكلمات في المسودة، وهي صحيحة ومطابقة للسؤال.",
)
CHECKS_EN = (
    "I checked the draft for grammar and spelling; it is correct.",
    "The wording of the summary is clear and grammatical, with nothing to correct.",
)


def _listing(labels: list[str] | tuple[str, ...], conj: str) -> str:
    """ "أ وب" / "أ، ب وج"; "A and B" / "A, B and C"."""
    comma, space = ("، ", " ") if conj == "و" else (", ", " ")
    return labels[0] if len(labels) == 1 else comma.join(labels[:-1]) + space + conj + labels[-1]


def render(item: Item, lang: str, rng: random.Random) -> tuple[str, str, str]:
    """(prompt, gold label, four-phase trace) for one item, with a random option count, label scheme and layout."""
    n = min(rng.choice([2, 3, 3, 4, 4, 4, 5]), len(item.wrong) + 1)
    options = [item.right, *rng.sample(item.wrong, n - 1)]
    rng.shuffle(options)
    scheme = rng.choice([lang, lang, "1", "0"])
    labels = LABELS[scheme][:n]
    gold = labels[options.index(item.right)]
    style = rng.choice(OPTION_STYLES)
    lines = [style.format(l=label, o=o) for label, o in zip(labels, options, strict=True)]
    question = item.question if rng.random() < 0.7 else f"{QUESTION_WORD[lang]}: {item.question}"
    parts = [rng.choice(HEADERS[lang]), question, "\n".join(lines).rstrip(), rng.choice(ENDINGS[lang])]
    prompt = "\n".join(p for p in parts if p)
    wrong = [label for label in labels if label != gold]
    if lang == "ar":
        joined = _listing(wrong, "و")
        noun = {1: "الخيار", 2: "الخيارين"}.get(len(wrong), "الخيارات")
        value = f"، والقيمة الحاكمة هنا {item.value}" if item.value else ""
        trace = (
            f"<think>\nالتحليل: عليّ أن أختار الإجابة الصحيحة من بين {COUNT_WORDS['ar'][n]} من {labels[0]} إلى {labels[-1]}{value}.\n"
            f"الاستبعاد: أستبعد {noun} {joined} لأن {'كل واحد منها' if len(wrong) > 1 else 'هذا الخيار'} {item.reason}.\n"
            f"التدقيق اللغوي: {rng.choice(CHECKS_AR)}\n"
            f"الخلاصة: {item.fact}، فالخيار الصحيح هو {gold}.\n</think>\nالإجابة: {gold}"
        )
    else:
        joined = _listing(wrong, "and ")
        value = f"; the value at stake is {item.value}" if item.value else ""
        trace = (
            f"<think>\nAnalysis: I must choose the correct answer among {COUNT_WORDS['en'][n]}, {labels[0]} to {labels[-1]}{value}.\n"
            f"Elimination: I rule out {'option' if len(wrong) == 1 else 'options'} {joined} because {item.reason}.\n"
            f"Linguistic check: {rng.choice(CHECKS_EN)}\n"
            f"Synthesis: {item.fact[0].upper() + item.fact[1:]}, so the correct option is {gold}.\n</think>\nAnswer: {gold}"
        )
    return prompt, gold, trace


def build(seed: int = SEED) -> dict[str, list[dict[str, Any]]]:
    """Rows per language (id, category, prompt, answer, trace); distinct prompts only, in a fixed order."""
    rng = random.Random(seed)
    out: dict[str, list[dict[str, Any]]] = {"ar": [], "en": []}
    for lang in ("ar", "en"):
        for category in PAPER_CATEGORIES:
            tables, generators = KINDS[(lang, category)]
            items = [item for make in tables for item in make(rng, lang)]
            rng.shuffle(items)
            count = COUNTS.get((lang, category), PER_CATEGORY[lang])
            while generators and len(items) < count:
                items.append(rng.choice(generators)(rng, lang))
            seen: set[str] = set()
            for item in items[:count]:
                prompt, gold, trace = render(item, lang, rng)
                if prompt in seen:
                    continue
                seen.add(prompt)
                out[lang].append(
                    {
                        "id": f"drill-{category}-{lang}-{len(seen):03d}",
                        "category": category,
                        "prompt": prompt,
                        "answer": gold,
                        "trace": trace,
                    }
                )
    return out


def write(resources_dir: Path, seed: int = SEED) -> dict[str, int]:
    """Rewrite the drill sources and the replay pack under ``resources_dir``; counts per language.

    The pack is rebuilt whole from each entry's ``prompt_id`` and ``text`` (the hand-written traces) plus the drills,
    so its keys follow the current teacher templates."""
    from arabic_r1.distill import write_cache_pack
    from arabic_r1.params import DistillParams

    rows = build(seed)
    data = resources_dir / "smoke_data"
    for lang, items in rows.items():
        write_jsonl(
            data / f"drills.{lang}.jsonl",
            [{k: r[k] for k in ("id", "category", "prompt", "answer")} for r in items],
        )
    pool = {}
    for path in sorted(data.glob("*.jsonl")):
        lang = path.name.split(".")[-2]
        for r in read_jsonl(path):
            pool[r["id"]] = {"id": r["id"], "text": r["prompt"], "lang": lang, "answer": r.get("answer")}
    pack = resources_dir / "teacher_cache" / "smoke_v1.jsonl"
    old = read_jsonl(pack)
    responses = [(pool[e["prompt_id"]], e["text"]) for e in old if not e["prompt_id"].startswith("drill-")]
    responses += [(pool[r["id"]], r["trace"]) for items in rows.values() for r in items]
    p = DistillParams(
        backend="replay",
        teacher="arabic_r1/hand-written-v1",
        cache_dir=pack.parent,
        template_version="v1",
        temperature=0.6,
        max_new_tokens=1024,
    )
    write_cache_pack(p, responses, pack)
    write_jsonl(resources_dir / "pretrain_questions.jsonl", [{"text": text} for text in answered_questions()])
    return {lang: len(items) for lang, items in rows.items()}


def answered_questions(n: int = PRETRAIN_QUESTIONS, seed: int = PRETRAIN_SEED) -> list[str]:
    """Questions with their options and an answer line, no reasoning, Arabic and English shuffled together."""
    rows = build(seed)
    texts = [
        f"{r['prompt']}\n{'الإجابة' if lang == 'ar' else 'Answer'}: {r['answer']}"
        for lang in ("ar", "en")
        for r in rows[lang]
    ]
    random.Random(seed).shuffle(texts)
    return texts[:n]


if __name__ == "__main__":
    print(write(Path(__file__).parent / "resources"))
