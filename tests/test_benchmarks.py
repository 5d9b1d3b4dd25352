"""The seven OALL v2 benchmarks and their local mirrors (the fixture mirror the package ships, real rows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arabic_r1.benchmark_mirrors import (
    check_mirror,
    fixture_mirror_dir,
    iter_mirror_rows,
    mirror_configs,
    repo_dir,
    write_mirror,
)
from arabic_r1.benchmarks import BENCHMARKS, oall_subsets, oall_v2_tasks


def test_task_list_has_the_117_oall_v2_tasks() -> None:
    tasks = oall_v2_tasks()
    assert len(tasks) == 117 and all(t.endswith("|0") for t in tasks)
    assert {k: len(oall_subsets(k)) for k in BENCHMARKS} == {
        "arabic_mmlu": 40, "arabic_exams": 1, "arabic_mmlu_ht": 57, "madinah_qa": 2, "aratrust": 8, "alghafa": 8, "alrage": 1,
    }  # fmt: skip


def test_subsets_and_repos_match_lighteval() -> None:
    from lighteval.tasks.multilingual.tasks import arabic as lt

    assert set(oall_subsets("arabic_mmlu")) == set(lt.ARABIC_MMLU_SUBSETS) - {"All"}
    assert set(oall_subsets("arabic_mmlu_ht")) == set(lt.ARABIC_MMLU_HT_SUBSETS)
    assert set(oall_subsets("aratrust")) == set(lt.ARATRUST_SUBSETS)
    assert set(oall_subsets("alghafa")) == set(lt.ALGHAFA_SUBSETS) - {"mcq_exams_test_ar"}  # duplicates EXAMS
    assert set(oall_subsets("madinah_qa")) == set(lt.MADINAH_QA_SUBSETS)
    assert BENCHMARKS["arabic_exams"].hf_repo == lt.arabic_exams_task.hf_repo
    assert BENCHMARKS["alrage"].hf_repo == lt.alrage_qa_task.hf_repo


def test_fixture_mirror_is_complete_for_all_seven() -> None:
    problems = check_mirror(fixture_mirror_dir())
    assert all("OALL v2 subsets missing" in p for p in problems), problems  # a small mirror, but well-formed
    for key in BENCHMARKS:
        rows = list(iter_mirror_rows(fixture_mirror_dir(), key, [BENCHMARKS[key].eval_split]))
        assert rows and all(r.segments() for r in rows), key


def test_fixture_mirror_loads_with_datasets_offline(tmp_path: Path, monkeypatch) -> None:
    from datasets import load_dataset

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = repo_dir(fixture_mirror_dir(), "arabic_mmlu")
    for subset, splits in mirror_configs(repo).items():
        for split in splits:
            ds = load_dataset(str(repo), subset, split=split, cache_dir=str(tmp_path))
            assert len(ds) >= 1 and "Question" in ds.column_names
    alrage = load_dataset(
        str(repo_dir(fixture_mirror_dir(), "alrage")), split="train", cache_dir=str(tmp_path)
    )
    assert isinstance(alrage[0]["candidates"], list)


def test_real_rows_mirror(real_mirror: Path) -> None:
    configs = mirror_configs(repo_dir(real_mirror, "aratrust"))
    assert set(configs) == set(oall_subsets("aratrust")) and all(
        set(s) == {"train"} for s in configs.values()
    )
    mmlu = mirror_configs(repo_dir(real_mirror, "arabic_mmlu"))
    assert "Driving Test" in mmlu and "Management (University)" in mmlu
    ids = [r.item_id for r in iter_mirror_rows(real_mirror, "arabic_exams")]
    assert len(ids) == 163 and len(set(ids)) == 163


def test_mirror_problems_are_named(tmp_path: Path, real_mirror: Path) -> None:
    assert any("no mirror at" in p for p in check_mirror(tmp_path, ["alrage"]))
    bad = tmp_path / "MBZUAI" / "ArabicMMLU"
    (bad / "X").mkdir(parents=True)
    (bad / "X" / "test.jsonl").write_text('{"Question": "q"}\nnot json\n', encoding="utf-8")
    (bad / "README.md").write_text(
        "---\nconfigs:\n- config_name: X\n  data_files:\n  - {split: test, path: X/test.jsonl}\n---\n"
    )
    with pytest.raises(ValueError, match=r"X/test\.jsonl:2: not valid JSON"):
        list(iter_mirror_rows(tmp_path, "arabic_mmlu"))
    assert json.loads(
        (repo_dir(real_mirror, "arabic_mmlu") / "Driving Test" / "test.jsonl").read_text().splitlines()[0]
    )


@pytest.mark.parametrize("subset", ["", " Offensive", "a/b", ".."])
def test_a_subset_name_that_is_no_folder_is_refused_naming_its_rows(tmp_path: Path, subset: str) -> None:
    """An empty (or padded, or path-like) subset would put its rows where neither the README nor lighteval looks."""
    with pytest.raises(ValueError, match=r"aratrust: 1 row\(s\) have the subset name"):
        write_mirror(tmp_path, "aratrust", {(subset, "train"): [{"Question": "q"}]})


def test_check_mirror_flags_row_files_outside_the_subsets(tmp_path: Path) -> None:
    repo = write_mirror(tmp_path, "aratrust", {("Offensive", "train"): [{"Question": "q"}]})
    (repo / "train.jsonl").write_text('{"Question": "lost"}\n', encoding="utf-8")
    assert any("1 row file(s) outside the README's subsets" in p and "train.jsonl" in p
               for p in check_mirror(tmp_path, ["aratrust"]))  # fmt: skip
