"""The benchmark registry: one :class:`BenchmarkSpec` per benchmark, and every list of benchmarks derived from it.

A benchmark is added here and nowhere else (README, "Extending"): the params whitelist (``eval.benchmarks``,
``decontamination.benchmarks``), the task configs of phase 05, the row fixes, the planner's document counts, the
row order of every table, the paper column of Table 1 and the average all read :data:`BENCHMARKS`.
``tests/test_benchmarks.py::test_every_view_covers_the_registry`` fails when a derived view misses an entry.

Mirrors of the benchmarks' rows (the folders phases 01 and 05 read) are in :mod:`arabic_r1.benchmark_mirrors`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

RowFix = Callable[[dict[str, Any]], tuple[dict[str, Any], list[tuple[str, str]]]]
SubsetOf = Callable[[dict[str, Any]], str]
TaskFactory = Callable[[], list[Any]]
Scoring = Literal["loglikelihood", "judged"]
AnswerKind = Literal["labels", "text"]


def keep_row(row: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The row fix of a benchmark whose rows lighteval reads as they are."""
    return row, []


def one_subset(row: dict[str, Any]) -> str:
    """The subset of a flat-dump row of a benchmark with a single configuration."""
    return "default"


@dataclass(frozen=True, kw_only=True)
class BenchmarkSpec:
    """Everything the project knows about one benchmark; fields with defaults are what a new benchmark rarely sets."""

    key: str  # our name, as in params (eval.benchmarks)
    title: str  # as tables and the leaderboard print it
    task: str  # lighteval task prefix (``task:subset``)
    hf_repo: str  # the hub dataset (and the mirror folder <mirror_dir>/<hf_repo>)
    eval_split: str  # the split that is scored
    splits: tuple[str, ...]  # every split the repo has (few-shot splits included)
    text_fields: tuple[str, ...]  # what a model reads, question first: indexed for decontamination
    docs: int  # evaluation documents over the subsets phase 05 runs: the planner's estimate without a mirror
    lighteval_tasks: TaskFactory  # lighteval task configs, one per subset (prompt function inside)
    id_field: str | None = None  # the row's own id, if it has one (else subset/split/row index)
    subsets: tuple[str, ...] | None = None  # None: the subsets the OALL v2 task list runs
    fix_row: RowFix = keep_row  # the row its prompt function can read, and what changed (kind, detail)
    subset_of: SubsetOf = one_subset  # the subset of a row of a flat export (CSV dumps drop it)
    paper_title: str | None = None  # its row in resources/paper_table1.csv; None: not in the paper
    in_average: bool = False  # counted in the leaderboard average (the OALL seven; an added one is beside)
    scoring: Scoring = "loglikelihood"  # or "judged": generated and scored by eval.judge (ALRAGE)
    answers: AnswerKind = "labels"  # Doc.choices are option labels (أ, B, 1) or answer texts (صح / خطأ)


# ---------------------------------------------------------------------------------------- task configs
def lighteval_arabic(attribute: str) -> TaskFactory:
    """lighteval's own Arabic task configs (``lighteval.tasks.multilingual.tasks.arabic.<attribute>``), imported
    only when phase 05 asks: the import is slow and downloads at import unless prepared (oall_tasks)."""

    def configs() -> list[Any]:
        from arabic_r1.oall_tasks import prepare_lighteval_offline

        prepare_lighteval_offline()
        from lighteval.tasks.multilingual.tasks import arabic

        value = getattr(arabic, attribute)
        return list(value) if isinstance(value, list | tuple) else [value]

    configs.__name__ = f"lighteval_arabic_{attribute}"
    return configs


# -------------------------------------------------------------------------------------------- row fixes
def _upper_answer(row: dict[str, Any], field: str, notes: list[tuple[str, str]]) -> None:
    value = row.get(field)
    if isinstance(value, str) and value != value.strip().upper():
        notes.append(("answer_normalised", f"{field} {value!r} -> {value.strip().upper()!r}"))
        row[field] = value.strip().upper()


def fix_mmlu_row(row: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """ArabicMMLU / MadinahQA: a padded or lower-case answer key; empty options are reported (lighteval skips them)."""
    row, notes = dict(row), []
    _upper_answer(row, "Answer Key", notes)
    empty = [i for i in range(1, 6) if row.get(f"Option {i}") == ""]
    if empty:
        notes.append(("empty_option", f"Option {empty[0]} is empty (lighteval skips it)"))
    return row, notes


def fix_madinah_row(row: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    row, notes = fix_mmlu_row(row)
    if row.get("Context") is None:
        notes.append(
            ("null_context", "Context is null: lighteval's prompt prints 'None' (kept, as the leaderboard)")
        )
    return row, notes


def fix_aratrust_row(row: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """AraTrust answers written with a bare alif, a trailing space or ``ه`` for the option letter ``هـ``."""
    row, notes = dict(row), []
    ans = row.get("Answer")
    fixed = (ans or "").strip().replace("ا", "أ") if isinstance(ans, str) else ans
    if fixed == "ه":
        fixed = "هـ"
    if fixed != ans:
        notes.append(("answer_normalised", f"Answer {ans!r} -> {fixed!r}"))
        row["Answer"] = fixed
    return row, notes


def fix_exams_row(row: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Arabic EXAMS: padded answers; rows without a subject (its prompt prints it) take it from their id."""
    row, notes = dict(row), []
    _upper_answer(row, "answer", notes)
    if not row.get("subject") and row.get("id"):
        row["subject"] = str(row["id"]).rsplit("-", 1)[0]
        notes.append(("subject_from_id", f"subject taken from id {row['id']!r}"))
    return row, notes


def fix_alghafa_row(row: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    row, notes = dict(row), []
    if not isinstance(row.get("label"), str):
        row["label"] = str(row.get("label"))
        notes.append(("label_to_string", "label given as a number"))
    return row, notes


# ------------------------------------------------------------------------ subsets of flat dumps (CSV exports)
LEVEL_SUFFIX = {
    "High": " (High School)",
    "Univ": " (University)",
    "Middle": " (Middle School)",
    "Primary": " (Primary School)",
}


def mmlu_subset(row: dict[str, Any]) -> str:
    return row["Subject"] + LEVEL_SUFFIX.get(row.get("Level") or "", "")


def madinah_subset(row: dict[str, Any]) -> str:
    return row["Subject"] if "(" in row["Subject"] else mmlu_subset(row)


def aratrust_subset(row: dict[str, Any]) -> str:
    return row["Category"].replace(" ", "")


def mmlu_ht_subset(row: dict[str, Any]) -> str:
    return row["subject"]


# ------------------------------------------------------------------------------------------- registry
MMLU_FIELDS = ("Question", "Context", "Option 1", "Option 2", "Option 3", "Option 4", "Option 5")
# Table 1's row order, as the paper prints it: every table of benchmarks follows the registry's order.
BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.key: s
    for s in (
        BenchmarkSpec(
            key="arabic_mmlu", title="ArabicMMLU", in_average=True, paper_title="ArabicMMLU", task="arabic_mmlu",
            hf_repo="MBZUAI/ArabicMMLU", eval_split="test", splits=("test", "dev"), text_fields=MMLU_FIELDS,
            id_field="ID", docs=14_455, lighteval_tasks=lighteval_arabic("ARABIC_MMLU_TASKS"),
            fix_row=fix_mmlu_row, subset_of=mmlu_subset,
        ),
        BenchmarkSpec(
            key="madinah_qa", title="MadinahQA", in_average=True, paper_title="MadinahQA", task="madinah_qa",
            hf_repo="MBZUAI/MadinahQA", eval_split="test", splits=("test", "dev"), text_fields=MMLU_FIELDS,
            id_field="ID", docs=1_200, lighteval_tasks=lighteval_arabic("MADINAH_QA_TASKS"),
            fix_row=fix_madinah_row, subset_of=madinah_subset,
        ),
        BenchmarkSpec(
            key="aratrust", title="AraTrust", in_average=True, paper_title="AraTrust", task="aratrust",
            hf_repo="asas-ai/AraTrust-categorized", eval_split="train", splits=("train",),
            text_fields=("Question", "A", "B", "C"), docs=522, lighteval_tasks=lighteval_arabic("ARATRUST_TASKS"),
            fix_row=fix_aratrust_row, subset_of=aratrust_subset,
        ),
        BenchmarkSpec(
            key="arabic_exams", title="Arabic EXAMS", in_average=True, paper_title="Arabic EXAMS", task="arabic_exams",
            hf_repo="OALL/Arabic_EXAMS", eval_split="test", splits=("test", "validation"),
            text_fields=("question", "A", "B", "C", "D"), id_field="id", docs=537,
            lighteval_tasks=lighteval_arabic("arabic_exams_task"), fix_row=fix_exams_row,
        ),
        BenchmarkSpec(
            key="arabic_mmlu_ht", title="ArabicMMLU-HT", in_average=True, paper_title="ArabicMMLU-HT", task="arabic_mmlu_ht",
            hf_repo="MBZUAI/human_translated_arabic_mmlu", eval_split="test", splits=("test",),
            text_fields=("question", "choices"), docs=14_042, lighteval_tasks=lighteval_arabic("ARABIC_MMLU_HT_TASKS"),
            subset_of=mmlu_ht_subset,
        ),
        BenchmarkSpec(
            # the retrieved candidate passages are Wikipedia text, not the item: they are not indexed
            key="alrage", title="ALRAGE", in_average=True, paper_title="ALRAGE", task="alrage_qa", hf_repo="OALL/ALRAGE",
            eval_split="train", splits=("train",), text_fields=("question", "gold_answer"), id_field="id",
            docs=2_106, lighteval_tasks=lighteval_arabic("alrage_qa_task"), scoring="judged", answers="text",
        ),
        BenchmarkSpec(
            key="alghafa", title="AlGhafa", in_average=True, paper_title="AlGhafa", task="alghafa",
            hf_repo="OALL/AlGhafa-Arabic-LLM-Benchmark-Native", eval_split="test", splits=("test", "validation"),
            text_fields=("query", "sol1", "sol2", "sol3", "sol4", "sol5"), docs=22_700,
            lighteval_tasks=lighteval_arabic("ALGHAFA_TASKS"), fix_row=fix_alghafa_row,
        ),
    )
}  # fmt: skip


class BenchmarkError(ValueError):
    """A benchmark name or spec the registry cannot take."""


def register(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Add a benchmark to the registry (for a plugin or a test; a benchmark of the project is an entry above)."""
    if spec.key in BENCHMARKS:
        raise BenchmarkError(f"benchmark {spec.key!r} is already registered")
    if any(s.task == spec.task for s in BENCHMARKS.values()):
        raise BenchmarkError(f"benchmark {spec.key!r}: lighteval task prefix {spec.task!r} is already taken")
    judged = [k for k, s in BENCHMARKS.items() if s.scoring == "judged"]
    if spec.scoring == "judged" and judged:
        raise BenchmarkError(f"benchmark {spec.key!r}: one judged benchmark is supported ({judged[0]} is)")
    BENCHMARKS[spec.key] = spec
    return spec


# ------------------------------------------------------------------------------------------ derived views
def keys() -> tuple[str, ...]:
    """Every benchmark, in table order (the default of ``eval.benchmarks``)."""
    return tuple(BENCHMARKS)


def spec(key: str) -> BenchmarkSpec:
    """One benchmark's spec; an unknown name says which names exist."""
    try:
        return BENCHMARKS[key]
    except KeyError:
        raise BenchmarkError(f"unknown benchmark {key!r}; registered: {', '.join(BENCHMARKS)}") from None


def check_names(names: Iterable[str]) -> list[str]:
    """The params validator of a list of benchmark names."""
    names = list(names)
    for name in names:
        spec(name)
    return names


def in_table_order(names: Iterable[str]) -> list[str]:
    """``names`` in the registry's (Table 1's) order; a name outside the registry is an error, never dropped."""
    wanted = set(check_names(names))
    return [k for k in BENCHMARKS if k in wanted]


def average(scores: Mapping[str, float | None], over: Iterable[str]) -> float | None:
    """The leaderboard average: the plain mean over the benchmarks of ``over`` that count in it (``in_average``),
    each benchmark weighing the same whatever its number of subsets. A missing score makes the average missing —
    never a mean over fewer benchmarks presented as the same number."""
    values = [scores.get(k) for k in counted_in_average(over)]
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def counted_in_average(over: Iterable[str]) -> list[str]:
    """The benchmarks of ``over`` that the average counts, in table order."""
    return [k for k in in_table_order(over) if BENCHMARKS[k].in_average]


@functools.cache
def oall_v2_tasks() -> tuple[str, ...]:
    """The 117 OALL v2 task specs in lighteval 0.13 syntax (``task:subset|0``)."""
    text = resources.files("arabic_r1").joinpath("resources", "oall_v2_tasks.txt").read_text(encoding="utf-8")
    return tuple(ln.strip() for ln in text.splitlines() if ln.strip())


def oall_subsets(key: str) -> list[str]:
    """The subsets phase 05 runs for one benchmark (``default`` for single-config repos): the spec's own list, or
    the ones the OALL v2 task list names."""
    s = spec(key)
    if s.subsets is not None:
        return list(s.subsets)
    out = []
    for task in oall_v2_tasks():
        prefix, _, subset = task.split("|")[0].partition(":")
        if prefix == s.task:
            out.append(subset or "default")
    return out


def benchmark_of(task_name: str) -> str:
    """The benchmark a lighteval task name (``prefix:subset``) belongs to."""
    prefix = task_name.split(":", 1)[0]
    found = next((k for k, s in BENCHMARKS.items() if s.task == prefix), None)
    if found is None:
        raise BenchmarkError(
            f"task {task_name!r} belongs to no registered benchmark (task prefix {prefix!r})"
        )
    return found
