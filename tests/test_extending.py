"""The README's "Extending" recipes, each done exactly as written on a synthetic example, and the registry coverage
tests that keep every derived list equal to its registry."""

from __future__ import annotations

import csv
import re
from dataclasses import fields
from pathlib import Path

import pytest
from test_verify import GOOD_AR

from arabic_r1 import benchmarks
from arabic_r1.arabic_text import normalized_words
from arabic_r1.audit import Output, audit_models
from arabic_r1.benchmark_mirrors import check_mirror, fixture_mirror_dir, iter_mirror_rows, write_mirror
from arabic_r1.benchmarks import BENCHMARKS, BenchmarkSpec, lighteval_arabic, oall_subsets
from arabic_r1.decontam import build_index
from arabic_r1.eval_generation import read_outputs
from arabic_r1.evaluate import evaluate_model, tidy_rows
from arabic_r1.oall_tasks import Warts, lighteval_configs
from arabic_r1.paper_tables import oall_table
from arabic_r1.params import DecontaminationParams, EvalParams, VerifyParams
from arabic_r1.reference import paper_table1
from arabic_r1.report_tables import Run
from arabic_r1.tiny_model import save_tiny_moe
from arabic_r1.trace_checks import CHECKS, CheckSpec, Verdict
from arabic_r1.verify import verify_traces


# ------------------------------------------------------------------------------------------ coverage
@pytest.mark.parametrize("key", list(BENCHMARKS))
def test_every_view_covers_the_registry(key: str) -> None:
    """Each registered benchmark is in every list derived from the registry: drop it from one (a paper row, a mirror
    folder, its lighteval configs, the params whitelist) and this fails naming it."""
    spec = BENCHMARKS[key]
    assert key in EvalParams().benchmarks and key in DecontaminationParams().benchmarks
    if spec.scoring == "judged":  # generated and scored by an LLM judge, which params then require
        with pytest.raises(ValueError, match="set eval.judge"):
            EvalParams(benchmarks=[key])
    else:
        assert EvalParams(benchmarks=[key]).benchmarks == [key]
    subsets = oall_subsets(key)
    configs = lighteval_configs(key)
    assert subsets and sorted(c.hf_subset or "default" for c in configs) == sorted(subsets), key
    assert {benchmarks.benchmark_of(c.name) for c in configs} == {key}
    assert not [p for p in check_mirror(fixture_mirror_dir(), [key]) if "no mirror" in p or "is missing" in p]
    assert spec.docs > 0 and spec.text_fields and spec.eval_split in spec.splits
    rows = list(iter_mirror_rows(fixture_mirror_dir(), key, [spec.eval_split]))
    assert rows, f"{key}: no {spec.eval_split} rows in the fixture mirror"
    if spec.paper_title is not None:
        assert spec.paper_title in paper_table1()["rows"], (
            f"{key}: paper title {spec.paper_title!r} not in the CSV"
        )


def test_the_paper_table_has_no_row_outside_the_registry() -> None:
    titles = {s.paper_title for s in BENCHMARKS.values()}
    assert set(paper_table1()["rows"]) - titles == {"Average"}
    assert benchmarks.counted_in_average(BENCHMARKS) == [k for k, s in BENCHMARKS.items() if s.paper_title]


def test_one_average_rule() -> None:
    scores = {k: 0.5 for k in BENCHMARKS}
    assert benchmarks.average(scores, BENCHMARKS) == 0.5
    assert benchmarks.average({**scores, "alghafa": None}, BENCHMARKS) is None  # never a mean over fewer
    assert benchmarks.average(
        {"arabic_mmlu": 0.2, "aratrust": 0.4}, ["aratrust", "arabic_mmlu"]
    ) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        benchmarks.average(scores, ["nope"])


def test_every_check_threshold_is_a_params_key_and_every_key_has_a_reader() -> None:
    keys = set(VerifyParams.model_fields)
    read = {k for c in CHECKS.values() for k in c.params}
    assert read <= keys, read - keys
    general = {"checks", "morphology_cache", "llm_judge", "judge"}  # not thresholds of one check
    assert keys - read == general, keys - read - general
    assert VerifyParams().checks == list(CHECKS) == VerifyParams(checks="all").checks
    with pytest.raises(ValueError, match="unknown check"):
        VerifyParams(checks=["structure", "spelling"])


# ------------------------------------------------------------------------------ recipe: a benchmark
BOOLQ = BenchmarkSpec(
    key="boolq_ar",
    title="BoolQ-ar",
    task="boolq_ar",
    hf_repo="OALL/AlGhafa-Arabic-LLM-Benchmark-Translated",
    eval_split="test",
    splits=("test", "validation"),
    text_fields=("question", "passage"),
    docs=3_260,
    lighteval_tasks=lighteval_arabic("boolq_ar_task"),
    subsets=("boolq_ar",),
    answers="text",  # its Doc.choices are the words نعم / لا, not option letters
)
PASSAGES = [
    (
        "هل الرباط عاصمة المغرب",
        "الرباط هي عاصمة المملكة المغربية ومقر الحكومة والبرلمان منذ الاستقلال.",
        True,
    ),
    (
        "هل النيل أقصر أنهار أفريقيا",
        "النيل أطول أنهار أفريقيا ويمر بإحدى عشرة دولة قبل أن يصب في البحر.",
        False,
    ),
    ("هل تقع دمشق في سوريا", "دمشق عاصمة الجمهورية العربية السورية ومن أقدم المدن المأهولة في العالم.", True),
    ("هل الجمل من الزواحف", "الجمل حيوان ثديي من رتبة مزدوجات الأصابع يتحمل العطش في الصحراء طويلا.", False),
]


@pytest.fixture
def ninth(tmp_path: Path):
    """README recipe "Add a benchmark", steps 1-2: its spec in the registry, its rows in the mirror."""
    benchmarks.register(BOOLQ)
    try:
        mirror = tmp_path / "mirror"
        for key in BENCHMARKS:
            if key != BOOLQ.key:
                repo = fixture_mirror_dir() / BENCHMARKS[key].hf_repo
                (mirror / BENCHMARKS[key].hf_repo).parent.mkdir(parents=True, exist_ok=True)
                (mirror / BENCHMARKS[key].hf_repo).symlink_to(repo, target_is_directory=True)
        rows = [{"question": q, "passage": p, "answer": a} for q, p, a in PASSAGES]
        write_mirror(mirror, BOOLQ.key, {("boolq_ar", "test"): rows, ("boolq_ar", "validation"): rows[:1]})
        yield mirror
    finally:
        BENCHMARKS.pop(BOOLQ.key)


def test_recipe_add_a_benchmark_runs_phases_01_05_06(ninth: Path, tmp_path: Path) -> None:
    assert BOOLQ.key in EvalParams().benchmarks  # the params whitelist follows the registry
    with pytest.raises(benchmarks.BenchmarkError, match="already registered"):
        benchmarks.register(BOOLQ)
    # phase 01: its rows are indexed, and a training document quoting one is caught
    index = build_index(iter_mirror_rows(ninth, BOOLQ.key), n=8, min_short_words=8, max_items_per_ngram=50,
                        min_content_words=3)  # fmt: skip
    assert index.stats[BOOLQ.key]["items"] == len(PASSAGES) + 1
    leaked = "مقال: " + PASSAGES[2][1] + " انتهى."
    hit = index.match(normalized_words(leaked))
    assert hit is not None and index.benchmark_of(hit[0]) == BOOLQ.key
    # phase 05: both scorings; the reasoning outputs are parsed as answer texts
    ep = EvalParams(source="mirror", mirror_dir=ninth, benchmarks=["arabic_exams", BOOLQ.key], batch_size=4,
                    scoring=["loglikelihood", "reasoning"], reasoning_max_new_tokens=8)  # fmt: skip
    model = save_tiny_moe(tmp_path / "tiny")
    phase = tmp_path / "run" / "05_oall_evaluation"
    phase.mkdir(parents=True)
    ms = evaluate_model("base", str(model), ep, phase, Warts(), None, "float32", "think_tags")
    assert set(ms.leaderboard) == {"arabic_exams", BOOLQ.key} and 0 <= ms.leaderboard[BOOLQ.key] <= 1
    assert ms.subsets.keys() >= {"boolq_ar"} and set(ms.reasoning) == {"arabic_exams", BOOLQ.key}
    outputs = [o for o in read_outputs(phase / "reasoning_base.jsonl") if o.benchmark == BOOLQ.key]
    assert len(outputs) == len(PASSAGES) and {o.labels for o in outputs} == {("نعم", "لا")}
    rows = tidy_rows([ms])
    with (phase / "scores.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    # the average counts the leaderboard's benchmarks only: an added one is shown beside it, not inside it
    average = next(r for r in rows if r["benchmark"] == "average")
    assert average["value"] == round(ms.leaderboard["arabic_exams"], 4)
    # phase 06: Table 1 shows it with empty paper columns; the paper's average stays the seven's (missing here)
    run = Run(
        tmp_path / "run",
        {"oall_evaluation": {"outputs": {"scores": {"path": "05_oall_evaluation/scores.csv"}}}},
    )
    table = oall_table(run)
    row = next(r for r in table.rows if r[0] == "BoolQ-ar")
    assert row[1] == pytest.approx(100 * ms.leaderboard[BOOLQ.key], abs=0.01)
    assert row[table.columns.index("OALL category leader model")] is None
    assert next(r for r in table.rows if r[0] == "Average")[1] is None
    assert [r[0] for r in table.rows][-2:] == ["BoolQ-ar", "Average"]


def test_a_text_answer_benchmark_is_scored_on_its_words_not_as_option_letters(
    ninth: Path, tmp_path: Path
) -> None:
    """Phase 05's reasoning scoring reads a benchmark's answers as its spec says: BoolQ-ar's choices are the words
    نعم / لا, and an answer written with diacritics still names one (as option labels it would be a parse failure)."""
    from arabic_r1.eval_generation import Generation, run_reasoning
    from arabic_r1.oall_tasks import task_configs

    ep = EvalParams(source="mirror", mirror_dir=ninth, benchmarks=[BOOLQ.key], scoring=["reasoning"])
    configs, _ = task_configs(ep, BOOLQ.key, Warts())
    said = "<think>\nالتحليل: المقطع يذكر ذلك صراحة.\n</think>\nالإجابة: نَعَمْ"
    scores = run_reasoning(
        lambda prompts, n: [Generation(said, False)] * len(prompts), configs, ep, tmp_path / "r.jsonl"
    )
    (task,) = scores.values()
    assert task["parse_failure_rate"] == 0.0 and task["n"] == len(PASSAGES)
    assert task["accuracy"] == pytest.approx(
        sum(a for _, _, a in PASSAGES) / len(PASSAGES)
    )  # "yes" is right twice


# --------------------------------------------------------------------------------- recipe: a check
def check_no_links(t, p) -> Verdict:
    """The recipe's example: a teacher's reasoning that cites a web link is rejected (the student would copy it)."""
    links = re.findall(r"https?://\S+", t.raw_text)
    return Verdict("no_links", not links, f"links: {links[:2]}" if links else "no links")


GOOD = GOOD_AR  # a four-phase Arabic trace that passes every check


def test_recipe_add_a_check_reaches_the_funnel_and_the_student_audit(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(CHECKS, "no_links", CheckSpec("no_links", check_no_links, (), reads_prose=False))
    p = VerifyParams(checks="all")
    assert p.checks[-1] == "no_links"
    linked = GOOD.replace("مدينة الرباط.", "مدينة الرباط (https://ar.wikipedia.org/wiki/الرباط).")
    records = [{"prompt_id": str(i), "lang": "ar", "category": "c", "raw_text": text, "gold": "ب", "status": "ok",
                "messages": [{"role": "user", "content": "ما عاصمة المغرب؟"}]}
               for i, text in enumerate([GOOD, linked])]  # fmt: skip
    funnel = verify_traces(records, p, tmp_path).funnel
    assert funnel["checks"][-1] == "no_links"
    assert funnel["overall"]["failed_per_check"]["no_links"] == 1 and funnel["overall"]["kept"] == 1
    outputs = [
        Output(str(i), "arabic_exams", text, "ب", ("أ", "ب", "ج", "د"))
        for i, text in enumerate([GOOD, linked])
    ]
    audit = audit_models({"finetuned": outputs}, p, "think_tags")
    assert audit["checks"][-1] == "no_links"
    assert audit["models"]["finetuned"]["overall"]["pass_rate"]["no_links"] == 0.5


def test_spec_fields_are_documented() -> None:
    """Every BenchmarkSpec field has its comment in the registry module (the recipe points there)."""
    src = Path(benchmarks.__file__).read_text(encoding="utf-8")
    for f in fields(BenchmarkSpec):
        assert re.search(rf"^    {f.name}: .+  # ", src, re.M), f.name
