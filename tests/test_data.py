"""Phase 01 on datatrove: the smoke pool with its planted items, bad inputs, budgets, executors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from arabic_r1.data import run_mixture
from arabic_r1.data_executors import make_executor
from arabic_r1.params import REPO_DIR, ParamsError
from arabic_r1.params_loading import load_params
from arabic_r1.tiny_model import save_tiny_moe


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> str:
    return str(save_tiny_moe(tmp_path_factory.mktemp("tok") / "m"))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, tokenizer):
    out = tmp_path_factory.mktemp("smoke01")
    return run_mixture(load_params("smoke"), out, tokenizer)


def _ids(doc_ids) -> set[str]:
    return {i.split("/", 1)[1] for i in doc_ids}


def _removed(out: Path, step: str) -> dict[str, dict]:
    rows = {}
    for f in (out / "removed" / step).glob("*.jsonl"):
        for line in f.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            rows[d["id"].split("/", 1)[1]] = d
    return rows


def test_smoke_pool_hits_every_budget(smoke) -> None:
    s = smoke.stats
    assert all(c["status"] == "ok" for c in s["cells"]), [c for c in s["cells"] if c["status"] != "ok"]
    assert abs(s["arabic_share"]["achieved"] - 0.8) <= 0.01
    for c in s["cells"]:
        assert abs(c["tokens"] - c["target"]) <= 0.02 * c["target"]
    pool = [json.loads(x) for x in smoke.pool_path.read_text(encoding="utf-8").splitlines()]
    assert sum(p["n_tokens"] for p in pool) == s["tokens"]
    assert len({p["id"] for p in pool}) == len(pool)
    assert {"id", "text", "lang", "category", "source", "n_tokens", "answer"} <= set(pool[0])
    assert any(p["answer"] in {"أ", "ب", "ج", "د"} for p in pool) and any(
        p["answer"] in {"A", "B", "C", "D"} for p in pool
    )
    # 211 hand-written prompts; each of the 12 drill sources reads its language's drill file and keeps its category
    drills = sum(
        len((REPO_DIR / "arabic_r1/resources/smoke_data" / f"drills.{lg}.jsonl").read_text().splitlines())
        for lg in ("ar", "en")
    )
    assert s["all_rows_accounted"] and sum(e["rows_read"] for e in s["sources"].values()) == 211 + 6 * drills


def test_smoke_planted_items_are_removed_for_the_right_reason(smoke) -> None:
    out = smoke.pool_path.parent

    def planted(step: str) -> dict[str, dict]:  # the hand-written prompts (the drills are checked below)
        return {k: v for k, v in _removed(out, step).items() if not k.startswith("drill-")}

    decont = planted("decontamination")
    assert set(decont) == {
        "literature_critical_analysis-ar-011", "stem_math_logic-ar-011", "legal_cultural_alignment-ar-005",
        "social_dialectal-ar-006", "creative_writing_dialogue-ar-007",
    }  # fmt: skip
    assert (
        decont["legal_cultural_alignment-ar-005"]["metadata"]["contamination"]["item_id"]
        == "aratrust:Ethics:train:0"
    )
    assert set(planted("source_rows")) == {"social_dialectal-ar-007"}
    assert set(planted("language")) == {"creative_writing_dialogue-ar-010"}
    assert set(planted("repetition")) == {"stem_math_logic-en-010"}
    exact = set(planted("exact_dedup"))
    for a, b in [("stem_math_logic-ar-013", "stem_math_logic-ar-024"), ("consumer_reviews_feedback-en-003", "consumer_reviews_feedback-en-010"),
                 ("literature_critical_analysis-ar-009", "literature_critical_analysis-ar-024")]:  # fmt: skip
        assert len({a, b} & exact) == 1, (a, b, exact)
    near = set(planted("near_dedup"))
    pairs = [("creative_writing_dialogue-ar-003", "creative_writing_dialogue-ar-023"),
             ("legal_cultural_alignment-ar-003", "legal_cultural_alignment-ar-023")]  # fmt: skip
    for a, b in pairs:
        assert len({a, b} & near) == 1, (a, b, near)
    # with digits folded, a hand-written question with numeric options can share a cluster with numeric drills; such a
    # loss is to a drill (named as the kept member in the dedup report), never to another hand-written prompt
    kept_by = {i["id"].split("/", 1)[1]: i["kept"] for i in smoke.dedup["near"]["items"]}
    others = near - {x for pair in pairs for x in pair}
    assert all("/drill-" in kept_by[i] for i in others), {i: kept_by[i] for i in others}
    assert len(exact) == 3 and len(near) - len(others) == 2 and not planted("quality")
    # drills leave only where they fail a generic rule (digit-only options, repeated words, near-duplicate sums),
    # never for decontamination: none of them is a benchmark item
    drills = {step: sum(k.startswith("drill-") for k in _removed(out, step)) for step in ("source_rows", "decontamination",
              "language", "quality", "repetition", "exact_dedup", "near_dedup")}  # fmt: skip
    assert drills["decontamination"] == drills["language"] == 0 and drills["source_rows"] > 0, drills
    report = smoke.decontamination
    assert {b: v["removed"] for b, v in report["benchmarks"].items() if v["removed"]} == {
        "arabic_mmlu": 1, "arabic_mmlu_ht": 1, "aratrust": 1, "arabic_exams": 1, "madinah_qa": 1,
    }  # fmt: skip
    assert all(r["ngram"] and r["item_id"] for r in report["removals"])
    assert all(item["kept"] for item in smoke.dedup["exact"]["items"] + smoke.dedup["near"]["items"])


def _project(tmp_path: Path, sources: list[dict], **data) -> Path:
    (tmp_path / "params").mkdir(exist_ok=True)
    params = {
        "data": {
            "token_budget": 200,
            "arabic_share": 0.5,
            "category_shares": {"c": 1.0},
            "sources": sources,
            **data,
        },
        "eval": {"source": "mirror", "mirror_dir": str(REPO_DIR / "arabic_r1/resources/oall_mirror")},
    }
    path = tmp_path / "params" / "p.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return path


AR = ["ما هي أهم الأفكار التي تناولها الكاتب في هذه المقالة عن التعليم في العالم العربي؟",
      "اكتب فقرة قصيرة عن فوائد القراءة اليومية للأطفال في المدارس الابتدائية.",
      "كيف يمكن للمدن العربية أن تحافظ على تراثها المعماري مع التوسع العمراني الحديث؟",
      "لماذا يعد الصدق من أهم القيم في التعامل بين الناس في الحياة اليومية؟"]  # fmt: skip
EN = ["What are the main causes of the water cycle and how does it affect the weather in the region?",
      "Write a short paragraph about the benefits of reading with children every evening.",
      "How can a small shop owner reply politely to a customer who received a damaged parcel?",
      "Why do many cultures value hospitality towards guests and strangers so highly?"]  # fmt: skip


def test_bad_inputs_are_counted_and_named(tmp_path: Path, tokenizer: str) -> None:
    lines = [json.dumps({"id": f"a{i}", "prompt": t}, ensure_ascii=False) for i, t in enumerate(AR)]
    lines += ["{this is not json", json.dumps({"id": "nf", "question": "no prompt field"}), json.dumps({"id": "e", "prompt": "   "}),
              json.dumps({"id": "n", "prompt": 42}), "[1, 2]",
              json.dumps({"id": "m", "prompt": [{"role": "system", "content": "أنت معلم."}, {"role": "user", "content": "ما الفرق بين الشعر العمودي وشعر التفعيلة من حيث الوزن والقافية؟"}]}, ensure_ascii=False),
              json.dumps({"id": "w", "prompt": AR[1] + " باختصار شديد", "split": "other"}, ensure_ascii=False)]  # fmt: skip
    text = ("\n".join(lines) + "\n").encode("utf-8")
    text += (
        b'{"id": "latin1", "prompt": "caf\xe9 au lait"}\n' + lines[0].replace('"a0"', '"a9"').encode() + b"\n"
    )
    (tmp_path / "ar.jsonl").write_bytes(
        text
    )  # a line saved as Latin-1 among UTF-8 ones; the next line is kept
    import pandas as pd

    pd.DataFrame({"text": EN, "gold": ["x", None, "y", None]}).to_parquet(tmp_path / "en.parquet")
    params = load_params(_project(tmp_path, [
        {"name": "ar", "path": "ar.jsonl", "lang": "ar", "category": "c", "id_field": "id", "where": {"split": [None, "train"]}},
        {"name": "en", "path": "en.parquet", "lang": "en", "category": "c", "text_field": "text", "answer_field": "gold"},
    ], on_shortfall="warn"))  # fmt: skip
    result = run_mixture(params, tmp_path / "out", tokenizer)
    rej = result.filters["source_rows"]["by_source"]["ar"]
    assert rej == {
        "malformed_json": 2,
        "not_utf8": 1,
        "missing_field": 1,
        "empty_text": 1,
        "bad_type": 1,
        "excluded_by_where": 1,
    }
    detail = [
        json.loads(x)
        for f in (tmp_path / "out/removed/source_rows").glob("*.jsonl")
        for x in f.read_text().splitlines()
    ]
    assert any("line 5" in d["metadata"]["detail"] and "ar.jsonl" in d["metadata"]["detail"] for d in detail)
    utf8 = [d["metadata"]["detail"] for d in detail if d["metadata"]["filter_reason"] == "not_utf8"]
    assert len(utf8) == 1 and utf8[0].endswith("ar.jsonl line 12: not UTF-8 text (byte 31 of the line)"), utf8
    s = result.stats
    assert (
        s["sources"]["ar"]["rows_read"] == 13
        and s["sources"]["en"]["rows_read"] == 4
        and s["all_rows_accounted"]
    )
    pool = [json.loads(x) for x in result.pool_path.read_text(encoding="utf-8").splitlines()]
    candidates = {
        json.loads(x)["id"]: json.loads(x)
        for f in (tmp_path / "out/work/candidates").glob("*.jsonl")
        for x in f.read_text().splitlines()
    }
    chat = candidates["ar/m"]
    assert chat["text"].startswith("ما الفرق") and [m["role"] for m in chat["metadata"]["messages"]] == [
        "system",
        "user",
    ]
    assert {p["source"] for p in pool} == {"ar", "en"}


def test_budget_larger_than_the_data_names_the_dry_source(tmp_path: Path, tokenizer: str) -> None:
    (tmp_path / "ar.jsonl").write_text(
        "".join(json.dumps({"prompt": t}, ensure_ascii=False) + "\n" for t in AR), encoding="utf-8"
    )
    (tmp_path / "en.jsonl").write_text(
        "".join(json.dumps({"prompt": t}) + "\n" for t in EN), encoding="utf-8"
    )
    sources = [
        {"name": "arabic_src", "path": "ar.jsonl", "lang": "ar", "category": "c"},
        {"name": "english_src", "path": "en.jsonl", "lang": "en", "category": "c"},
    ]
    with pytest.raises(
        RuntimeError,
        match=r"ar/c: target \d+ tokens .* available after filtering from arabic_src - source ran dry",
    ):
        run_mixture(
            load_params(_project(tmp_path, sources, token_budget=100_000)), tmp_path / "out", tokenizer
        )
    warned = run_mixture(
        load_params(_project(tmp_path, sources, token_budget=100_000, on_shortfall="warn")),
        tmp_path / "out2",
        tokenizer,
    )
    assert {c["status"] for c in warned.stats["cells"]} == {"dry"}


def test_source_that_does_not_exist_is_rejected_before_work(tmp_path: Path) -> None:
    with pytest.raises(
        ParamsError, match=r"data\.sources\[0\]\.path: source file does not exist: .*missing\.jsonl"
    ):
        load_params(
            _project(tmp_path, [{"name": "s", "path": "missing.jsonl", "lang": "ar", "category": "c"}])
        )
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(
        ParamsError, match=r"must be a \.jsonl, \.jsonl\.gz or \.parquet file, or a folder of them"
    ):
        load_params(_project(tmp_path, [{"name": "s", "path": "notes.txt", "lang": "ar", "category": "c"}]))
    (tmp_path / "a.jsonl").write_text("{}\n")
    with pytest.raises(ParamsError, match=r"categories missing from category_shares: s: 'poetry'"):
        load_params(
            _project(tmp_path, [{"name": "s", "path": "a.jsonl", "lang": "ar", "category": "poetry"}])
        )


def test_executor_selection(tmp_path: Path) -> None:
    from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor

    base = load_params("smoke")
    local = make_executor(base.data, [], 3, tmp_path / "l")
    assert isinstance(local, LocalPipelineExecutor) and local.world_size == 3 and local.workers == 1
    slurm_data = base.data.model_copy(
        update={
            "executor": "slurm",
            "workers": 8,
            "slurm": base.data.slurm.model_copy(update={"partition": "cpu-long", "time": "02:00:00"}),
        }
    )
    slurm = make_executor(slurm_data, [], 20, tmp_path / "s", name="minhash")
    assert isinstance(slurm, SlurmPipelineExecutor)
    assert (slurm.partition, slurm.time, slurm.tasks, slurm.job_name) == (
        "cpu-long",
        "02:00:00",
        20,
        "arabic_r1_minhash",
    )
    ray_data = load_params("smoke", ["data.executor=ray", "data.workers=4", "data.ray.cpus_per_task=2"]).data
    ray_ex = make_executor(
        ray_data, [], 3, tmp_path / "r"
    )  # ray itself is needed only when it runs (tests/test_ray.py)
    assert type(ray_ex).__name__ == "RayPipelineExecutor"
    assert (ray_ex.world_size, ray_ex.workers, ray_ex.cpus_per_task, ray_ex.tasks_per_job) == (3, 3, 2, 1)


def test_sharded_folder_source_across_tasks_dedups_across_shards(tmp_path: Path, tokenizer: str) -> None:
    shards = tmp_path / "ar_shards"
    shards.mkdir()
    (shards / "a.jsonl").write_text(
        "".join(json.dumps({"prompt": t}, ensure_ascii=False) + "\n" for t in AR[:2]), encoding="utf-8"
    )
    (shards / "b.jsonl").write_text(
        "".join(json.dumps({"prompt": t}, ensure_ascii=False) + "\n" for t in [*AR[2:], AR[0]]),
        encoding="utf-8",
    )
    (tmp_path / "en.jsonl").write_text(
        "".join(json.dumps({"prompt": t}) + "\n" for t in EN), encoding="utf-8"
    )
    params = load_params(_project(tmp_path, [
        {"name": "ar", "path": "ar_shards", "lang": "ar", "category": "c"}, {"name": "en", "path": "en.jsonl", "lang": "en", "category": "c"},
    ], tasks=2, workers=2, on_shortfall="warn"))  # fmt: skip
    result = run_mixture(params, tmp_path / "out", tokenizer)
    s = result.stats["sources"]
    assert (
        s["ar"]["rows_read"] == 5 and s["ar"]["removed"] == {"exact_dedup": 1} and s["ar"]["candidates"] == 4
    )
    assert result.stats["all_rows_accounted"]
