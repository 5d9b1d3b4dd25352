"""Phase 05 against real benchmark rows, lighteval's own Pipeline and a real OpenAI-compatible judge server."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import FLAT_SPLITS, read_jsonl
from teacher_server import FlakyProxy
from test_teachers import _alone

from arabic_r1.audit import reasoning_answer
from arabic_r1.benchmark_mirrors import check_mirror, fixture_mirror_dir, iter_mirror_rows
from arabic_r1.benchmarks import spec
from arabic_r1.eval_generation import parse_judge_score
from arabic_r1.eval_models import model_cache_dir
from arabic_r1.evaluate import ModelScores, evaluate_model, tidy_rows
from arabic_r1.oall_tasks import (
    ACC_NORM,
    EvalSetupError,
    GuardedPrompt,
    Warts,
    lighteval_configs,
    task_configs,
    write_mirror_from_hub,
)
from arabic_r1.params import DistillParams, EvalParams
from arabic_r1.tiny_model import save_tiny_moe


@pytest.fixture(autouse=True)
def _grad_mode_restored():
    """lighteval's direct Pipeline (called below as a reference) switches autograd off process-wide."""
    import torch

    with torch.set_grad_enabled(True):
        yield


AR_GOLD = {"أ": 0, "ا": 0, "ب": 1, "ج": 2, "د": 3}


def expected_gold(benchmark: str, row: dict) -> int:
    """The gold index read off the row by hand, independently of fix_row (warts included)."""
    if benchmark == "aratrust":
        return AR_GOLD[row["Answer"].strip()]
    if benchmark == "arabic_exams":
        return "ABCD".index(row["answer"].strip().upper())
    pos = "ABCDE".index(row["Answer Key"].strip().upper())  # lighteval drops empty options before indexing
    return sum(1 for i in range(pos) if row.get(f"Option {i + 1}"))


@pytest.mark.parametrize("benchmark", sorted(FLAT_SPLITS))
def test_prompts_equal_lighteval_and_gold_right_on_real_rows(shared_data: Path, benchmark: str):
    configs = {c.hf_subset or "default": c for c in lighteval_configs(benchmark)}
    warts, clean, warty = Warts(), 0, 0
    for split in FLAT_SPLITS[benchmark]:
        for i, row in enumerate(read_jsonl(shared_data / "oall" / benchmark / f"{split}.jsonl")):
            config = configs[spec(benchmark).subset_of(row)]
            hub_row = dict(row)
            if benchmark == "arabic_exams":  # OALL's copy carries `subject`; the rows here do not
                hub_row["subject"] = row["id"].rsplit("-", 1)[0]
            try:
                ref = config.prompt_function(hub_row, config.name)
            except (ValueError, KeyError):
                ref = None
            ours = GuardedPrompt(benchmark, config.prompt_function, warts)(
                {**row, "__index": f"{split}:{i}"}, config.name
            )
            if ref is not None:
                clean += 1
                assert (ours.query, list(ours.choices), ours.gold_index) == (
                    ref.query,
                    list(ref.choices),
                    ref.gold_index,
                ), f"{benchmark}/{split} row {i}: prompt differs from lighteval's"
            else:
                warty += 1
                assert ours is not None, f"{benchmark}/{split} row {i} dropped: {warts.rows[-1:]}"
                assert ours.gold_index == expected_gold(benchmark, row), f"{benchmark}/{split} row {i}"
                assert any(w["row"] == f"{split}:{i}" and w["task"] == config.name for w in warts.rows)
    assert clean >= 5
    if benchmark == "aratrust":
        assert warty >= 1  # the bare-alif answer lighteval's letter lookup raises on
        assert warts.summary()["counts"]["answer_normalised"] == warty
    if benchmark == "arabic_exams":  # every row needed its subject from the id, and got exactly OALL's
        assert warts.summary()["counts"]["subject_from_id"] == clean + warty


def test_unreadable_rows_are_reported_and_skipped_not_fatal():
    config = next(c for c in lighteval_configs("arabic_mmlu") if c.hf_subset == "Driving Test")
    warts = Warts()
    guarded = GuardedPrompt("arabic_mmlu", config.prompt_function, warts)
    row = {"Question": "س", "Answer Key": " b ", "Option 1": "x", "Option 2": "y", "Option 3": None}
    assert guarded({**row, "__index": 0}, config.name).gold_index == 1
    answer_is_empty = {**row, "Answer Key": "B", "Option 2": "", "__index": 1}
    assert guarded(answer_is_empty, config.name) is None
    kinds = {(w["row"], w["kind"]) for w in warts.rows}
    assert {(0, "answer_normalised"), (1, "empty_option"), (1, "skipped")} <= kinds
    assert "ValueError" in next(w["detail"] for w in warts.rows if w["kind"] == "skipped")


def test_task_set_is_oall_v2_and_zero_shot(tmp_path: Path):
    counts = {b: len(lighteval_configs(b)) for b in FLAT_SPLITS} | {
        b: len(lighteval_configs(b)) for b in ("alghafa", "arabic_mmlu_ht", "alrage")
    }
    assert counts == {"arabic_mmlu": 40, "madinah_qa": 2, "aratrust": 8, "arabic_exams": 1, "alghafa": 8,
                      "arabic_mmlu_ht": 57, "alrage": 1}  # fmt: skip
    assert sum(counts.values()) == 117
    ep = EvalParams(source="mirror", mirror_dir=fixture_mirror_dir(), benchmarks=["arabic_mmlu"])
    configs, missing = task_configs(ep, "arabic_mmlu", Warts())
    assert len(configs) + len(missing) == 40 and configs
    assert all(c.few_shots_split is None and Path(c.hf_repo).is_dir() for c in configs)
    assert all(isinstance(c.prompt_function, GuardedPrompt) for c in configs)
    # the registry's originals are left as lighteval built them
    assert all(not isinstance(c.prompt_function, GuardedPrompt) for c in lighteval_configs("arabic_mmlu"))


def test_setup_errors_name_what_is_wrong(tmp_path: Path):
    with pytest.raises(ValueError, match="benchmark mirror folder does not exist"):
        EvalParams(source="mirror", mirror_dir=tmp_path / "nowhere", benchmarks=["aratrust"])
    ep = EvalParams(
        source="mirror", mirror_dir=tmp_path, benchmarks=["aratrust"]
    )  # a folder, but no aratrust
    with pytest.raises(EvalSetupError, match=r"aratrust: no mirror at .*asas-ai"):
        task_configs(ep, "aratrust", Warts())
    ep = EvalParams(source="mirror", mirror_dir=fixture_mirror_dir(), benchmarks=["aratrust"],
                    subsets={"aratrust": ["Ethics", "NotASubset"]})  # fmt: skip
    assert [c.hf_subset for c in task_configs(ep, "aratrust", Warts())[0]] == ["Ethics"]
    ep = ep.model_copy(update={"subsets": {"aratrust": ["NotASubset"]}})
    with pytest.raises(EvalSetupError, match="NotASubset"):
        task_configs(ep, "aratrust", Warts())
    with pytest.raises(ValueError, match="alrage is judged by an LLM"):
        EvalParams(source="mirror", mirror_dir=fixture_mirror_dir(), benchmarks=["alrage"])


@pytest.mark.parametrize(
    ("text", "labels", "choice", "failure"),
    [
        ("<think>التحليل: ... الاستبعاد: ...</think>\nالإجابة: ب", ["أ", "ب", "ج", "د"], 1, None),
        ("<think>...</think>\n**الإجابة النهائية: (ج)**", ["أ", "ب", "ج", "د"], 2, None),
        ("<think>...</think>\nالإجابة: ا) الرباط", ["أ", "ب", "ج"], 0, None),  # bare alif
        ("<think>...</think>\nهـ", ["أ", "ب", "ج", "د", "هـ"], 4, None),
        ("<think>...</think>\nThe answer is C.", ["أ", "ب", "ج", "د"], 2, None),  # Latin for Arabic labels
        ("<think>...</think>\nالإجابة: د", ["أ", "ج", "د"], 2, None),  # an empty option dropped
        ("<think>نفكر</think>\n3. الخيار الثالث", ["1", "2", "3", "4"], 2, None),  # MMLU-HT numbers
        ("<think>...</think>\nالإجابة: 0) نعم", ["0", "1"], 0, None),  # AlGhafa, 0-based
        ("<think>\nالتحليل: الخيار ب يبدو صحيحا", ["أ", "ب", "ج"], None, "unclosed think block"),
        ("<think>...</think>\n", ["أ", "ب", "ج"], None, "no final answer"),
        ("<think>...</think>\nلا أعرف", ["أ", "ب", "ج"], None, "answer names no option"),
        ("الإجابة: ب", ["أ", "ب", "ج"], 1, None),  # no think block at all: still an answer
    ],
)
def test_reasoning_answer_parsing(text, labels, choice, failure):
    assert reasoning_answer(text, labels) == (choice, failure)


@pytest.mark.parametrize(
    ("text", "score"),
    [("8", 0.8), ("الدرجة: 10", 1.0), ("Score: 7/10", 0.7), ("0", 0.0), ("9.5", 0.95), ("١٠", None),
     ("no number", None), ("", None), ("15", None), ("10.5", 1.0)],  # 10.5 is capped at the top of the scale
)  # fmt: skip
def test_judge_rubric(text, score):
    assert parse_judge_score(text) == score


def test_tidy_table_averages_benchmarks_not_tasks():
    m = ModelScores("m", "p", leaderboard={b: 0.5 for b in ("arabic_mmlu", "arabic_exams", "arabic_mmlu_ht",
                                                           "madinah_qa", "aratrust", "alghafa")},
                    lighteval_all=0.3, judged={"benchmark": "alrage", "score": 0.2, "judge": "openai:j"},
                    reasoning={"aratrust": {"accuracy": 0.25, "parse_failure_rate": 0.5, "truncated_rate": 0.25}})  # fmt: skip
    rows = {(r["benchmark"], r["metric"].split(" (")[0]): r for r in tidy_rows([m])}
    assert rows[("average", "mean of 7 benchmarks")]["value"] == round((6 * 0.5 + 0.2) / 7, 4)
    assert "not over benchmarks" in rows[("lighteval all", "lighteval's 'all': mean over every task, not over benchmarks")]["metric"]  # fmt: skip
    assert "openai:j" in next(r["metric"] for k, r in rows.items() if k[0] == "alrage")
    assert rows[("aratrust", "parse failure rate")]["value"] == 0.5
    assert rows[("aratrust", "truncated rate")]["value"] == 0.25


def test_real_generations_cut_off_by_the_budget_are_flagged_truncated(tmp_path: Path):
    """Before: a thinking model's outputs cut off by reasoning_max_new_tokens were parse failures, a budget artefact
    reported as inability. Now: real generations of the tiny model with a 3-token budget are all flagged truncated
    (the model's own stop token never came), not parse failures."""
    from arabic_r1.eval_generation import generator, run_reasoning

    ep = _ep(benchmarks=["aratrust"], max_samples_per_task=2, reasoning_max_new_tokens=3)
    configs, _ = task_configs(ep, "aratrust", Warts())
    real = generator(str(save_tiny_moe(tmp_path / "m")), ep, "float32")
    out = run_reasoning(real, configs[:1], ep, tmp_path / "real.jsonl")
    (task,) = out.values()
    assert task["truncated_rate"] == 1.0 and task["parse_failure_rate"] == 0.0


def test_outputs_cut_off_by_the_budget_are_counted_apart_from_parse_failures(tmp_path: Path):
    """The scores and the student audit count a truncated output apart from one the model ended unparseable (its
    own test: every audit and trace-check mutant runs this one under mutmut, and need not re-run the generation)."""
    from arabic_r1.audit import audit_models
    from arabic_r1.eval_generation import Generation, _docs, read_outputs, run_reasoning
    from arabic_r1.params import VerifyParams

    ep3 = _ep(benchmarks=["arabic_exams"], max_samples_per_task=3)
    exams, _ = task_configs(ep3, "arabic_exams", Warts())
    label = _docs(exams[0], 3)[2].choices[0]
    answers = iter(
        [
            Generation("<think>\nالتحليل: سؤال\n", True),  # cut off mid-thought
            Generation("<think>\nالتحليل: سؤال\n", False),  # the model stopped without closing it
            Generation(f"<think>\nالتحليل\n</think>\nالإجابة: {label}", True),
        ]
    )  # answered as the budget ran out
    fake = lambda prompts, n: [next(answers) for _ in prompts]  # noqa: E731
    out = run_reasoning(fake, exams, ep3, tmp_path / "fake.jsonl")
    (task,) = out.values()
    assert task["n"] == 3 and task["truncated_rate"] == pytest.approx(1 / 3)
    assert task["parse_failure_rate"] == pytest.approx(1 / 3)
    rows = [json.loads(x) for x in (tmp_path / "fake.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[0]["failure"] == "truncated at 1024 tokens" and rows[1]["failure"] == "unclosed think block"
    summary = audit_models({"m": read_outputs(tmp_path / "fake.jsonl")}, VerifyParams(), "think_tags")
    overall = summary["models"]["m"]["overall"]
    assert overall["truncated"] == pytest.approx(1 / 3, abs=1e-3) and overall["parsed"] == pytest.approx(
        1 / 3, abs=1e-3
    )


# ------------------------------------------------------------------------------- against lighteval itself
MC = {"arabic_exams": None, "madinah_qa": None, "aratrust": None, "alghafa": None}


def _ep(**kw) -> EvalParams:
    return EvalParams(
        **{
            "source": "mirror",
            "mirror_dir": fixture_mirror_dir(),
            "benchmarks": list(MC),
            "batch_size": 4,
            **kw,
        }
    )


def _direct_lighteval(model_dir: Path, out: Path) -> dict:
    """lighteval's Pipeline as its docs use it: a model config naming the folder, its own configs, no wrappers."""
    from lighteval.logging.evaluation_tracker import EvaluationTracker
    from lighteval.models.transformers.transformers_model import TransformersModelConfig
    from lighteval.pipeline import ParallelismManager, Pipeline, PipelineParameters

    configs = []
    for b in MC:
        for c in lighteval_configs(b):
            c = copy.deepcopy(c)
            c.hf_repo = str(fixture_mirror_dir() / c.hf_repo)
            c.few_shots_split = c.few_shots_select = None
            if Path(c.hf_repo).is_dir() and (c.hf_subset or "default") in _present(Path(c.hf_repo)):
                configs.append(c)
    module = types.ModuleType("direct_tasks")
    module.TASKS_TABLE = configs
    pipeline = Pipeline(
        tasks=",".join(f"{c.name}|0" for c in configs),
        pipeline_parameters=PipelineParameters(launcher_type=ParallelismManager.NONE, custom_tasks_directory=module),
        evaluation_tracker=EvaluationTracker(output_dir=str(out)),
        model_config=TransformersModelConfig(model_name=str(model_dir), batch_size=4, device="cpu",
                                             cache_dir=str(out / "cache")),
    )  # fmt: skip
    pipeline.evaluate()
    return pipeline.get_results()


def _present(repo: Path) -> set[str]:
    from arabic_r1.benchmark_mirrors import mirror_configs

    return set(mirror_configs(repo))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_moe(tmp_path_factory.mktemp("eval") / "tiny")


def test_mirror_mode_scores_equal_lighteval_pipeline(tiny: Path, tmp_path: Path, monkeypatch):
    import datasets
    import torch

    # the direct baseline reads the fixture folders as lighteval's docs do, so the datasets cache keys them by folder
    # name: a fresh cache keeps it from returning rows of an earlier version of the fixtures
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")

    ours = evaluate_model("tiny", str(tiny), _ep(), tmp_path / "ours", Warts(), judge=None)
    assert (
        torch.is_grad_enabled()
    )  # lighteval turns autograd off process-wide; training afterwards must still work
    direct_copy = shutil.copytree(
        tiny, tmp_path / "direct_model"
    )  # lighteval would write its cache next to it
    direct = _direct_lighteval(direct_copy, tmp_path / "direct")
    res = {
        k.rsplit("|", 1)[0].removesuffix(":0"): v[ACC_NORM]
        for k, v in direct["results"].items()
        if k != "all"
    }
    want = {k: v for k, v in res.items() if not k.endswith(":_average")}
    assert len(ours.subsets) >= 10 and set(ours.subsets) == set(want)
    assert ours.subsets == pytest.approx(want, abs=1e-9)
    # per-benchmark mean over subsets: lighteval's own group average where it computes one
    groups = {k.split(":")[0]: v for k, v in res.items() if k.endswith(":_average")}
    assert groups and {b: ours.leaderboard[b] for b in groups} == pytest.approx(groups, abs=1e-9)
    assert ours.lighteval_all == pytest.approx(direct["results"]["all"][ACC_NORM], abs=1e-9)
    # the per-document scores phase 06 resamples average to lighteval's subset scores, one id per document
    items = ours.items["leaderboard"]
    assert set(items) == set(want) and all(len(v) >= 1 for v in items.values())
    assert {t: sum(v.values()) / len(v) for t, v in items.items()} == pytest.approx(want, abs=1e-9)
    assert all(x in (0.0, 1.0) for v in items.values() for x in v.values())
    # results JSON and per-sample details as lighteval writes them
    assert list((tmp_path / "ours" / "lighteval" / "tiny" / "results").rglob("results_*.json"))
    assert list((tmp_path / "ours" / "lighteval" / "tiny" / "details").rglob("*.parquet"))


def test_retraining_into_the_same_folder_never_returns_stale_scores(tmp_path: Path):
    model = save_tiny_moe(tmp_path / "model", seed=0)
    ep = _ep(benchmarks=["aratrust", "alghafa"])
    cache = tmp_path / "cache"
    first_dir = model_cache_dir(cache, str(model))
    first = evaluate_model("m", str(model), ep, tmp_path / "a", Warts(), judge=None)
    save_tiny_moe(model, seed=7)  # "retrained" into the same folder
    assert model_cache_dir(cache, str(model)) != first_dir
    again = evaluate_model("m", str(model), ep, tmp_path / "a", Warts(), judge=None)
    fresh = evaluate_model("m", str(model), ep, tmp_path / "b", Warts(), judge=None)  # a cache never used
    assert again.subsets == fresh.subsets
    assert again.subsets != first.subsets  # the two weights do score differently, so stale scores would show
    # and an unchanged model is served from its cache: same scores, second cache folder reused
    assert evaluate_model("m", str(model), ep, tmp_path / "a", Warts(), judge=None).subsets == again.subsets


def test_the_trap_is_real_with_a_name_keyed_cache(tmp_path: Path, monkeypatch):
    """Without the digest-keyed folder (lighteval's own keying by model name), retrained weights score as the old."""
    import arabic_r1.eval_models as eval_models
    import arabic_r1.evaluate as evaluate

    for module in (eval_models, evaluate):  # lighteval's response cache and the generation cache
        monkeypatch.setattr(module, "model_cache_dir", lambda root, path: root / "by-name")
    model = save_tiny_moe(tmp_path / "model", seed=0)
    ep = _ep(benchmarks=["aratrust", "alghafa"])
    first = evaluate_model("m", str(model), ep, tmp_path, Warts(), judge=None)
    save_tiny_moe(model, seed=7)
    assert evaluate_model("m", str(model), ep, tmp_path, Warts(), judge=None).subsets == first.subsets


# --------------------------------------------------------------------------------------------- ALRAGE
def _judge(url: str, model: str, cache: Path, **kw) -> DistillParams:
    return DistillParams(backend="openai", base_url=url, teacher=model, max_new_tokens=6, temperature=0.0,
                         cache_dir=cache, backoff_initial_s=0.01, **kw)  # fmt: skip


def test_alrage_judges_the_answer_and_counts_what_it_cannot_score(tmp_path: Path):
    """In process, against a canned judge that reads what it is asked: the judge sees the answer after the reasoning
    (an unclosed output whole), the rubric's number is the score, a reply without one and a judge error both score 0
    and are counted apart, and every judgement lands in the details."""
    from lighteval.tasks.multilingual.tasks.arabic import judge_template

    from arabic_r1.eval_generation import Generation, _docs, run_alrage

    outputs = ["<think>\nتفكير\n</think>\nجواب ممتاز", "<think>\nتفكير بلا نهاية جواب ممتاز",
               "<think>\nتفكير\n</think>\nجواب آخر"]  # the fixture mirror's three ALRAGE rows  # fmt: skip
    asked = []

    def generate(prompts: list[str], n: int) -> list[Generation]:
        asked.append((prompts, n))
        return [Generation(o, False) for o in outputs[: len(prompts)]]

    def judge(body: dict) -> str:
        said = body["messages"][-1]["content"]
        return "7.5" if "جواب ممتاز" in said and "تفكير" not in said else "لا أستطيع"

    proxy = FlakyProxy(None, answer=judge, usage=None)
    errors = FlakyProxy(None, answer=judge, usage=None, statuses=[200, 503, 503])
    try:
        jp = _judge(proxy.url, "/srv/models/org/judge-7b", tmp_path / "jc", max_retries=0, concurrency=1)
        ep = _ep(benchmarks=["alrage"], alrage_max_new_tokens=8, max_samples_per_task=3, judge=jp)
        (config,), _ = task_configs(ep, "alrage", Warts())
        docs = _docs(config, 3)
        result = run_alrage(generate, config, ep, jp, tmp_path / "alrage.jsonl")
        down = jp.model_copy(update={"base_url": errors.url, "cache_dir": tmp_path / "jc2"})
        outage = run_alrage(generate, config, ep, down, tmp_path / "outage.jsonl")
    finally:
        proxy.close()
        errors.close()
    assert asked[0] == ([d.query for d in docs], 8)
    answers = ["جواب ممتاز", outputs[1], "جواب آخر"]
    assert [b["messages"] for b in proxy.bodies] == [
        judge_template(d.query, a, d.choices[0]) for d, a in zip(docs, answers, strict=True)
    ]
    details = read_jsonl(tmp_path / "alrage.jsonl")
    assert [(r["id"], r["answer"], r["gold"], r["score"]) for r in details] == [
        (d.id, a, d.choices[0], s) for d, a, s in zip(docs, answers, [0.75, None, None], strict=True)
    ]
    assert [r["judge_output"] for r in details] == ["7.5", "لا أستطيع", "لا أستطيع"]
    # no number: scored 0 and counted; the judge's machine folder named by its last two parts only
    assert result == {"score": pytest.approx(0.75 / 3), "n": 3, "unparseable": 2, "judge_errors": 0,
                      "judge": "openai:org/judge-7b"}  # fmt: skip
    # the judge down for two of three: scored 0 and counted as errors, not as unparseable replies
    assert outage == {"score": pytest.approx(0.75 / 3), "n": 3, "unparseable": 0, "judge_errors": 2,
                      "judge": "openai:org/judge-7b"}  # fmt: skip
    assert ["http_503" in r["judge_output"] for r in read_jsonl(tmp_path / "outage.jsonl")] == [
        False,
        True,
        True,
    ]
    # eval.max_samples_per_task holds for ALRAGE too (the first item's judgement comes from the judge's cache)
    one = ep.model_copy(update={"max_samples_per_task": 1})
    assert run_alrage(generate, config, one, jp, tmp_path / "one.jsonl") == {
        "score": 0.75, "n": 1, "unparseable": 0, "judge_errors": 0, "judge": "openai:org/judge-7b"}  # fmt: skip
    assert len(asked[-1][0]) == 1
    with pytest.raises(
        ValueError, match="zip"
    ):  # an output lost: never judge an answer against another question
        run_alrage(lambda prompts, n: generate(prompts, n)[:-1], config, ep, jp, tmp_path / "lost.jsonl")
    from arabic_r1.eval_generation import _judge_name

    assert _judge_name("org/judge") == "org/judge" and _judge_name("embedded") == "embedded"
    assert (
        _judge_name("runs/smoke/00_environment/base_model") == "runs/smoke/00_environment/base_model"
    )  # relative


def test_alrage_is_judged_by_a_real_openai_compatible_server(server, tiny: Path, tmp_path: Path):
    ep = _ep(benchmarks=["alrage"], alrage_max_new_tokens=8, scoring=["loglikelihood"],
             judge=_judge(server.url, server.model, tmp_path / "jc"))  # fmt: skip
    ms = evaluate_model("tiny", str(tiny), ep, tmp_path, Warts(), judge=ep.judge)
    n_rows = sum(1 for _ in iter_mirror_rows(fixture_mirror_dir(), "alrage"))
    a = ms.judged
    assert a["benchmark"] == "alrage"
    served = "/".join(Path(server.model).parts[-2:]) if Path(server.model).is_absolute() else server.model
    assert (
        a["n"] == n_rows >= 3 and a["judge"] == f"openai:{served}" and a["judge_errors"] == 0
    )  # no machine path
    details = read_jsonl(tmp_path / "alrage_tiny.jsonl")
    assert len(details) == n_rows and all(d["judge_output"] for d in details)
    assert a["unparseable"] == sum(d["score"] is None for d in details)
    assert a["score"] == pytest.approx(sum(d["score"] or 0.0 for d in details) / n_rows)
    assert ms.leaderboard == {}  # only ALRAGE was asked for


def test_alrage_judge_outage_scores_zero_and_is_counted(server, tiny: Path, tmp_path: Path):
    proxy = FlakyProxy(server.url, statuses=[503] * 100)
    try:
        ep = _ep(benchmarks=["alrage"], alrage_max_new_tokens=4,
                 judge=_judge(proxy.url, server.model, tmp_path / "jc", max_retries=0))  # fmt: skip
        a = evaluate_model("tiny", str(tiny), ep, tmp_path, Warts(), judge=ep.judge).judged
    finally:
        proxy.close()
    assert a["judge_errors"] == a["n"] and a["score"] == 0.0 and a["unparseable"] == 0


# --------------------------------------------------------------------------------------------- mirrors
def test_mirror_written_from_a_hub_layout_round_trips(tmp_path: Path):
    keys = ["arabic_mmlu", "aratrust", "arabic_exams", "alrage"]
    counts = write_mirror_from_hub(tmp_path / "m", keys, hub_root=str(fixture_mirror_dir()))
    assert not [p for p in check_mirror(tmp_path / "m", keys) if "no mirror" in p or "cannot" in p]
    for key in keys:
        src = [(r.subset, r.split, r.row) for r in iter_mirror_rows(fixture_mirror_dir(), key)]
        out = [(r.subset, r.split, r.row) for r in iter_mirror_rows(tmp_path / "m", key)]
        assert counts[key] == len(src) > 0 and sorted(map(json.dumps, out)) == sorted(map(json.dumps, src))


def test_two_mirrors_with_one_layout_each_give_their_own_rows(tmp_path: Path):
    """The datasets library caches a local folder's rows under its *name* and subset: a refreshed mirror, or a second
    one with the same layout, must still give its own rows (they are read through a content-named view)."""
    from arabic_r1.benchmark_mirrors import write_mirror

    def row(q: str) -> dict:
        return {"Question": q, "A": "أ) نعم", "B": "ب) لا", "C": "ج) ربما", "Answer": "أ", "Category": "Offensive",
                "Subcategory": "x"}  # fmt: skip

    load = (
        "import sys; from pathlib import Path; from arabic_r1.eval_generation import _docs; from arabic_r1.oall_tasks import Warts, task_configs;"
        "from arabic_r1.params import EvalParams;"
        "ep = EvalParams(source='mirror', mirror_dir=Path(sys.argv[1]), benchmarks=['aratrust'],"
        " subsets={'aratrust': ['Offensive']});"
        "print([d.query for d in _docs(task_configs(ep, 'aratrust', Warts())[0][0], None)])"
    )
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets"), "HF_DATASETS_OFFLINE": "1"}
    for name, question in (("a", "هل الصدق فضيلة في كل الأحوال؟"), ("b", "هل حفظ الأمانة واجب على الجميع؟")):
        write_mirror(tmp_path / name, "aratrust", {("Offensive", "train"): [row(question)]})
        # a new process each time, one datasets cache: as a user evaluating one mirror and then another
        out = subprocess.run([sys.executable, "-c", load, str(tmp_path / name)], env=env, capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        assert question in out and out.count("?") + out.count("؟") == 1, (name, out[-500:])


def test_vllm_backend_is_lazy_and_says_what_is_missing(tmp_path: Path):
    """vLLM generates (reasoning scoring, ALRAGE); log-likelihoods go through lighteval's transformers model whatever
    the backend (lighteval 0.13.0's vLLM model needs vllm<0.10.2, which predates transformers 5)."""
    ep = _ep(backend="vllm", tensor_parallel_size=2, gpu_memory_utilization=0.8, scoring=["reasoning"])
    assert ep.backend == "vllm"  # params validate on a machine without vLLM
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        _ep(backend="vllm", gpu_memory_utilization=1.5)
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here: the GPU tests run the real path")
    with pytest.raises(EvalSetupError, match="vllm is not installed"):
        evaluate_model("m", str(tmp_path), ep, tmp_path, Warts(), judge=None)


def test_an_adapter_folder_scores_like_its_merged_model(tmp_path: Path):
    """A small GPU evaluates phase 04's adapter on its (4-bit) base instead of the merged 16-bit model: both
    routes must give the same scores, with a cache folder keyed on adapter and base together."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arabic_r1.moe_lora import lora_config
    from arabic_r1.params import LoraParams
    from arabic_r1.peft_compat import no_v4_moe_remap

    base_dir = save_tiny_moe(tmp_path / "base")
    model, tok = AutoModelForCausalLM.from_pretrained(base_dir), AutoTokenizer.from_pretrained(base_dir)
    cfg = lora_config(model, LoraParams(r=4, targets=["attention", "routed_experts"]))
    cfg.init_lora_weights = False  # a non-zero update, so the adapter visibly changes scores
    with no_v4_moe_remap(model):
        peft_model = get_peft_model(model, cfg)
        peft_model.save_pretrained(str(tmp_path / "adapter"))
    tok.save_pretrained(str(tmp_path / "adapter"))
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(str(tmp_path / "merged"))
    tok.save_pretrained(str(tmp_path / "merged"))

    ep = _ep(benchmarks=["aratrust", "alghafa"])
    via_adapter = evaluate_model("a", str(tmp_path / "adapter"), ep, tmp_path / "ea", Warts(), judge=None)
    via_merged = evaluate_model("m", str(tmp_path / "merged"), ep, tmp_path / "em", Warts(), judge=None)
    plain = evaluate_model("b", str(base_dir), ep, tmp_path / "eb", Warts(), judge=None)
    assert via_adapter.subsets == pytest.approx(via_merged.subsets, abs=1e-6)
    assert via_adapter.subsets != plain.subsets
    assert model_cache_dir(tmp_path, str(tmp_path / "adapter")) != model_cache_dir(tmp_path, str(base_dir))


@pytest.mark.parametrize("family", ["gpt_oss", "qwen3_moe"])
def test_a_checkpoint_saved_with_router_logits_on_still_generates_in_batches(family: str, tmp_path: Path):
    """TRL saves output_router_logits=True; transformers' batched generate then crashes on the padded cache."""
    import json as _json

    from arabic_r1.eval_generation import generator

    path = save_tiny_moe(tmp_path / family, family=family)
    cfg = _json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(_json.dumps({**cfg, "output_router_logits": True}))
    outs = generator(str(path), _ep(batch_size=2), "float32")(
        ["سؤال قصير", "سؤال أطول قليلا من الأول بكثير"], 3
    )
    assert len(outs) == 2


def test_generations_are_cached_and_resume_after_a_torn_write(tmp_path: Path):
    from arabic_r1.eval_generation import Generation, cached_generations

    calls: list[list[str]] = []

    def fake(prompts: list[str], max_new_tokens: int) -> list[Generation]:
        calls.append(list(prompts))
        return [Generation(f"{p}|{max_new_tokens}", p == "b") for p in prompts]

    def texts(outs: list[Generation]) -> list[str]:
        return [o.text for o in outs]

    path = tmp_path / "generations.jsonl"
    gen = cached_generations(fake, path)
    assert texts(gen(["a", "b", "a"], 8)) == ["a|8", "b|8", "a|8"] and calls == [["a", "b"]]
    assert gen(["b", "c"], 8) == [Generation("b|8", True), Generation("c|8", False)] and calls[-1] == ["c"]
    assert texts(gen(["a"], 16)) == ["a|16"] and calls[-1] == [
        "a"
    ]  # another token budget is another generation
    with path.open("a", encoding="utf-8") as f:
        f.write('{"key": "torn')  # a session killed mid-write
    calls.clear()
    again = cached_generations(fake, path)  # a new session: the truncation flag comes back from the file too
    assert again(["a", "b", "c", "d"], 8) == [Generation("a|8", False), Generation("b|8", True),
                                              Generation("c|8", False), Generation("d|8", False)]  # fmt: skip
    assert calls == [["d"]]
    calls.clear()
    assert (
        texts(cached_generations(fake, path)(["d"], 8)) == ["d|8"] and calls == []
    )  # written after the torn line


def test_a_generator_that_loses_an_output_stops_the_phase_and_a_resume_says_what_it_reused(
    tmp_path: Path, caplog
):
    """Outputs are matched to prompts by position: one missing must stop the run, not shift every later answer onto
    the wrong question. A resumed run says how many generations it found (a Colab user sees the resume worked)."""
    import logging

    from arabic_r1.eval_generation import Generation, cached_generations

    path = tmp_path / "new" / "folder" / "generations.jsonl"  # the cache folder need not exist yet
    drop_last = lambda prompts, n: [Generation(p, False) for p in prompts][:-1]  # noqa: E731
    with pytest.raises(ValueError, match="zip"):
        cached_generations(drop_last, path)(["a", "b"], 8)
    echo = lambda prompts, n: [Generation(p, False) for p in prompts]  # noqa: E731
    with caplog.at_level(logging.INFO, logger="arabic_r1.eval_generation"):
        cached_generations(echo, path)(["a", "b"], 8)
        assert "generations:" not in caplog.text  # nothing to reuse: nothing said
        cached_generations(echo, path)(["a", "b", "c", "a"], 8)
    assert caplog.messages == ["generations: 2 of 3 from generations.jsonl"]


def test_a_template_that_opens_the_think_block_makes_truncated_outputs_unclosed(tmp_path: Path):
    """Qwen3 thinking-2507 / DeepSeek-R1 templates end the generation prompt with <think>: the model's text starts
    inside the block, so an output cut by the token budget has no tags at all and must not count as an answer."""
    from transformers import AutoTokenizer

    from arabic_r1.eval_generation import generator, think_prefix

    path = save_tiny_moe(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(path)
    assert think_prefix(tok) == ""
    assert reasoning_answer("التحليل: الخيار ب", ["أ", "ب", "ج"]) == (
        1,
        None,
    )  # read as an answer without the prefix
    tok.chat_template = tok.chat_template.replace(
        "{{- '<|im_start|>assistant\\n' -}}\n{%- if enable_thinking",
        "{{- '<|im_start|>assistant\\n<think>\\n' -}}\n{%- if enable_thinking",
    )
    assert think_prefix(tok) == "<think>\n"
    tok.save_pretrained(path)
    outs = generator(str(path), _ep(batch_size=2), "float32")(["سؤال", "سؤال آخر"], 3)
    assert all(o.text.startswith("<think>\n") for o in outs)
    assert reasoning_answer("<think>\n" + "التحليل: الخيار ب", ["أ", "ب", "ج"]) == (
        None,
        "unclosed think block",
    )


def test_warts_survive_lightevals_registry_copying() -> None:
    """lighteval's Registry deep-copies each task config (and the prompt function in it); the rows its copies
    format must still land in the one report (the fixture's MadinahQA rows have a null Context)."""
    from lighteval.tasks.registry import Registry

    from arabic_r1.oall_tasks import task_string

    warts = Warts()
    configs, _ = task_configs(EvalParams(source="mirror", mirror_dir=fixture_mirror_dir(), benchmarks=["madinah_qa"]),
                              "madinah_qa", warts)  # fmt: skip
    module = types.ModuleType("wart_tasks")
    module.TASKS_TABLE = configs
    tasks = Registry(tasks=task_string(configs), custom_tasks=module).load_tasks()
    docs = [d for t in tasks.values() for d in t.eval_docs()]
    assert docs and warts.summary()["counts"].get("null_context") == len(docs), warts.summary()["counts"]
    assert copy.deepcopy(warts) is warts


def test_phase_01_and_05_record_the_same_benchmark_digests(smoke_run) -> None:
    """What phase 05 scored is what phase 01 indexed for decontamination: the same mirror contents, by digest."""
    _, params, _ = smoke_run
    m01 = json.loads((params.run_dir / "01_data_mixture" / "manifest.json").read_text(encoding="utf-8"))
    m05 = json.loads((params.run_dir / "05_oall_evaluation" / "manifest.json").read_text(encoding="utf-8"))
    d01, d05 = m01["metrics"]["benchmark_digests"], m05["metrics"]["benchmark_digests"]
    common = set(d01) & set(d05)
    assert len(common) >= 6 and all(d01[k] == d05[k] for k in common), (d01, d05)


def test_reasoning_scores_and_details_per_document(tmp_path: Path, monkeypatch):
    """run_reasoning on crafted documents (lighteval's Doc, gold as an index or a list of them): correct, correct in
    the other script, wrong, cut off by the budget, no option named; each counted once, each row as the audit and
    phase 06 read it; read_outputs gives the audit the gold as a label, or none when the index is not one."""
    from types import SimpleNamespace

    from lighteval.tasks.requests import Doc

    from arabic_r1 import eval_generation as eg
    from arabic_r1.audit import Output

    labels = ["أ", "ب", "ج", "د"]
    docs = [
        Doc(query=f"q{i}", choices=labels, gold_index=g, id=str(i)) for i, g in enumerate([1, [2], 0, 3, 0])
    ]
    texts = ["<think>\nx\n</think>\nالإجابة: ب", "<think>\nx\n</think>\nAnswer: C", "<think>\nx\n</think>\nالإجابة: ج",
             "<think>\nx y", "<think>\nx\n</think>\nلا أعرف"]  # fmt: skip
    asked = []

    def generate(prompts, n):
        asked.append((prompts, n))
        return [eg.Generation(t, i == 3) for i, t in enumerate(texts[: len(prompts)])]

    monkeypatch.setattr(eg, "_docs", lambda config, m: docs[:m] if m else docs)
    ep = _ep(reasoning_max_new_tokens=64)
    details = tmp_path / "reasoning_m.jsonl"
    out = eg.run_reasoning(generate, [SimpleNamespace(name="arabic_exams")], ep, details, "think_tags", len)
    assert asked == [([d.query for d in docs], 64)]
    assert out == {
        "arabic_exams": {"accuracy": 2 / 5, "parse_failure_rate": 1 / 5, "truncated_rate": 1 / 5, "n": 5}
    }
    rows = read_jsonl(details)
    assert [(r["choice"], r["gold"], r["failure"], r["truncated"]) for r in rows] == [
        (1, 1, None, False), (2, 2, None, False), (2, 0, None, False),
        (None, 3, "truncated at 64 tokens", True), (None, 0, "answer names no option", False),
    ]  # fmt: skip
    assert rows[0] == {"task": "arabic_exams", "id": "0", "output": texts[0], "choice": 1, "gold": 1, "failure": None,
                       "truncated": False, "labels": labels, "query": "q0", "tokens": len(texts[0])}  # fmt: skip
    assert "الإجابة" in details.read_text(encoding="utf-8")  # Arabic kept as text
    assert eg.run_reasoning(generate, [SimpleNamespace(name="arabic_exams")], ep, tmp_path / "n.jsonl")["arabic_exams"][
        "n"] == 5 and read_jsonl(tmp_path / "n.jsonl")[0]["tokens"] is None  # fmt: skip
    two = ep.model_copy(update={"max_samples_per_task": 2})
    assert eg.run_reasoning(generate, [SimpleNamespace(name="arabic_exams")], two, tmp_path / "2.jsonl")[
        "arabic_exams"]["accuracy"] == 1.0  # fmt: skip
    with details.open("a", encoding="utf-8") as f:
        for gold in (-1, 4, None):
            f.write(json.dumps({**rows[0], "id": f"g{gold}", "gold": gold}) + "\n")
    outputs = eg.read_outputs(details)
    assert outputs[0] == Output("0", "arabic_exams", texts[0], "ب", tuple(labels), tokens=len(texts[0]))
    assert outputs[3].truncated and outputs[2].gold == "أ" and outputs[3].gold == "د"
    assert [o.gold for o in outputs[5:]] == [None, None, None]  # not an index of an option


def test_no_chat_template_opens_no_think_block() -> None:
    from types import SimpleNamespace

    from arabic_r1.eval_generation import think_prefix

    assert (
        think_prefix(SimpleNamespace(chat_template=None))
        == ""
        == think_prefix(SimpleNamespace(chat_template=""))
    )


def test_a_template_that_refuses_unknown_roles_still_gives_its_think_prefix() -> None:
    """Mistral-style templates raise on any role but user/assistant: the probe asks as a user, so such a template
    that opens the think block is recognised instead of failing phase 05."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from arabic_r1.eval_generation import think_prefix

    strict = (
        "{%- for m in messages %}{%- if m['role'] not in ['user', 'assistant'] %}"
        "{{ raise_exception('Only user and assistant roles are supported!') }}{%- endif %}"
        "[{{ m['role'] }}] {{ m['content'] }}\n{%- endfor %}"
        "{%- if add_generation_prompt %}[assistant] <think>\n{%- endif %}"
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")), chat_template=strict
    )
    assert think_prefix(tok) == "<think>\n"


def test_phase_05_generates_greedily_even_where_the_checkpoint_samples(tmp_path: Path) -> None:
    """Real checkpoints (Qwen3, R1 distills) ship generation_config.json with do_sample: true: phase 05 still decodes
    greedily (reproducible scores), from the prompt as the chat template's user turn, to the token budget; a
    tokenizer without a padding token batches with its end token."""
    from transformers import AutoTokenizer, GenerationConfig

    from arabic_r1.eval_generation import generator

    path = save_tiny_moe(tmp_path / "m")
    GenerationConfig(do_sample=True, temperature=1.5, top_k=0, max_new_tokens=2).save_pretrained(path)
    prompts = ["ما عاصمة المغرب؟", "سؤال"]
    outs = generator(str(path), _ep(batch_size=1), "float32")(prompts, 6)
    # each prompt generated alone by hand (the user turn through the chat template, greedy), special tokens kept
    alone = [_alone(str(path), [{"role": "user", "content": p}], 6, do_sample=False, top_k=None, top_p=None)[0]
             for p in prompts]  # fmt: skip
    tok = AutoTokenizer.from_pretrained(path)
    assert [o.text for o in outs] == [tok.decode(ids, skip_special_tokens=False).strip() for ids in alone]
    tok.pad_token = None
    tok.save_pretrained(path)
    assert AutoTokenizer.from_pretrained(path).pad_token is None
    batched = generator(str(path), _ep(batch_size=2), "float32")(prompts, 6)
    assert [o.text for o in batched] == [o.text for o in outs]


def test_generated_special_tokens_are_kept_and_padding_dropped(tmp_path: Path) -> None:
    """The answer parser reads special tokens (harmony's channel markers): they stay in the text; the padding a
    batch adds after a finished sequence does not. A model whose head is zeroed writes token 0 (the padding) at
    every step; with token 0 suppressed, token 1 (<|im_start|>, special)."""
    import torch
    from transformers import AutoModelForCausalLM

    from arabic_r1.eval_generation import generator
    from arabic_r1.tiny_model import IM_START

    path = save_tiny_moe(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    model.save_pretrained(path)
    (out,) = generator(str(path), _ep(), "float32")(["سؤال"], 3)
    assert (out.text, out.truncated) == ("", True)
    model.generation_config.suppress_tokens = [0]
    model.save_pretrained(path)
    (out,) = generator(str(path), _ep(), "float32")(["سؤال"], 3)
    assert out.text == IM_START * 3
