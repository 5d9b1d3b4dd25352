from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from arabic_r1.params import REPO_DIR, ParamsError
from arabic_r1.params_loading import load_params, parse_override, validate_params

PROFILES = sorted((REPO_DIR / "params").glob("*.yaml"))


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_shipped_profiles_validate(path: Path) -> None:
    params = load_params(path)
    assert params.profile == path.stem
    assert params.run_dir == REPO_DIR / "runs" / (params.run.name or path.stem)


def test_smoke_is_the_default_and_embedded() -> None:
    params = load_params()
    assert params.profile == "smoke"
    assert params.model.is_embedded and params.model.family == "deepseek_v3"


def test_paper_profile_carries_the_papers_settings() -> None:
    p = load_params("paper")
    assert (
        p.data.token_budget == 26_000_000 and p.data.arabic_share == 0.8
    )  # ~372M training tokens (test_plan)
    assert p.train.lora.r == 64 and p.train.lora.alpha / p.train.lora.r == 8
    assert p.model.name_or_path == "deepseek-ai/DeepSeek-R1" and p.distill.teacher == "gpt-5.1"
    assert len(p.eval.benchmarks) == 7


def _write(project: Path, data: dict, name: str = "p.yaml") -> Path:
    path = project / "params" / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _reject(project: Path, data: dict, *needles: str, overrides: tuple[str, ...] = ()) -> str:
    path = _write(project, data)
    with pytest.raises(ParamsError) as err:
        load_params(path, overrides)
    msg = str(err.value)
    assert str(path) in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


BASE = {"data": {"token_budget": 1000}}


def test_minimal_file_validates_with_defaults(project: Path) -> None:
    p = load_params(_write(project, BASE))
    assert p.run.root == project / "runs"  # relative paths resolve against the folder above params/
    assert p.train.lora.r == 16


def test_unknown_key_is_named_with_alternatives(project: Path) -> None:
    msg = _reject(
        project, {**BASE, "train": {"lora": {"rank": 8}}}, "train.lora.rank", "unknown key", "r, alpha"
    )
    assert "expected one of" in msg


def test_unknown_section_is_rejected(project: Path) -> None:
    _reject(project, {**BASE, "trian": {}}, "trian", "unknown key")


def test_wrong_type_is_rejected_not_coerced(project: Path) -> None:
    _reject(project, {**BASE, "train": {"lora": {"r": "8"}}}, "train.lora.r", "valid integer")


def test_negative_token_budget(project: Path) -> None:
    _reject(project, {"data": {"token_budget": -5}}, "data.token_budget", "greater than 0", "-5")


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_arabic_share_outside_unit_interval(project: Path, share: float) -> None:
    _reject(project, {"data": {"token_budget": 10, "arabic_share": share}}, "data.arabic_share")


def test_lora_rank_zero(project: Path) -> None:
    _reject(project, {**BASE, "train": {"lora": {"r": 0}}}, "train.lora.r", "greater than 0")


def test_missing_source_file_is_named(project: Path) -> None:
    data = {
        "data": {
            "token_budget": 10,
            "category_shares": {"x": 1.0},
            "sources": [{"name": "s", "path": "data/nope.jsonl", "lang": "ar", "category": "x"}],
        }
    }
    _reject(project, data, "data.sources[0].path", "does not exist", "nope.jsonl")


def test_existing_source_file_resolves_against_project(project: Path) -> None:
    (project / "data").mkdir()
    (project / "data" / "s.jsonl").write_text("{}\n")
    data = {
        "data": {
            "token_budget": 10,
            "category_shares": {"x": 1.0},
            "sources": [{"name": "s", "path": "data/s.jsonl", "lang": "ar", "category": "x"}],
        }
    }
    p = load_params(_write(project, data))
    assert p.data.sources[0].path == project / "data" / "s.jsonl"


def test_missing_local_model_folder(project: Path) -> None:
    _reject(
        project,
        {**BASE, "model": {"name_or_path": "./models/absent"}},
        "model.name_or_path",
        "does not exist",
    )


def test_hub_ids_are_not_checked_on_disk(project: Path) -> None:
    p = load_params(_write(project, {**BASE, "model": {"name_or_path": "Qwen/Qwen3-30B-A3B"}}))
    assert not p.model.is_embedded


def test_category_shares_must_sum_to_one(project: Path) -> None:
    _reject(
        project,
        {"data": {"token_budget": 10, "category_shares": {"a": 0.5, "b": 0.2}}},
        "data.category_shares",
        "sum to 1",
    )


def test_all_errors_reported_at_once(project: Path) -> None:
    msg = _reject(
        project, {"data": {"token_budget": 0, "arabic_share": 2.0}, "train": {"lora": {"r": 0}}}, "3 invalid"
    )
    assert msg.count("\n  - ") == 3


def test_missing_required_section(project: Path) -> None:
    _reject(project, {}, "data", "required key is missing")


def test_invalid_yaml_names_line(project: Path) -> None:
    path = project / "params" / "bad.yaml"
    path.write_text("data:\n  token_budget: 10\n  x: [1, 2\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"bad\.yaml: line \d+"):
        load_params(path)


def test_missing_params_file_lists_profiles() -> None:
    with pytest.raises(ParamsError, match="params file not found.*smoke"):
        load_params("no_such_profile")


def test_overrides_typed_and_attributed(project: Path) -> None:
    path = _write(project, BASE)
    p = load_params(
        path, ["train.lora.r=32", "train.learning_rate=2e-4", "train.lora.targets=[attention]", "run.name=x1"]
    )
    assert p.train.lora.r == 32 and p.train.learning_rate == 2e-4 and p.train.lora.targets == ["attention"]
    assert p.run_dir == project / "runs" / "x1"
    with pytest.raises(ParamsError, match=r"train\.lora\.r: .*\[from override -o train\.lora\.r=0\]"):
        load_params(path, ["train.lora.r=0"])
    with pytest.raises(ParamsError, match=r"train\.lora\.rr: unknown key"):
        load_params(path, ["train.lora.rr=3"])


def test_override_syntax_errors() -> None:
    with pytest.raises(ParamsError, match="KEY.PATH=VALUE"):
        parse_override("train.lora.r")
    with pytest.raises(ParamsError, match="KEY.PATH=VALUE"):
        parse_override("train..r=3")


def test_override_into_a_list_item(project: Path) -> None:
    (project / "a.jsonl").write_text("{}\n")
    data = {
        "data": {
            "token_budget": 10,
            "category_shares": {"x": 1.0},
            "sources": [{"name": "s", "path": "a.jsonl", "lang": "ar", "category": "x"}],
        }
    }
    p = load_params(_write(project, data), ["data.sources.0.lang=en"])
    assert p.data.sources[0].lang == "en"
    with pytest.raises(ParamsError, match=r"data\.sources\.3 is not an index of a 1-item list"):
        load_params(_write(project, data), ["data.sources.3.lang=en"])


def test_section_hash_tracks_only_its_section(project: Path) -> None:
    path = _write(project, BASE)
    a, b = load_params(path), load_params(path, ["train.lora.r=4"])
    assert a.section_hash("data") == b.section_hash("data")
    assert a.section_hash("train") != b.section_hash("train")
    assert a.section_hash("run.seed") != load_params(path, ["run.seed=1"]).section_hash("run.seed")


def test_section_hash_survives_moving_the_project(tmp_path: Path) -> None:
    hashes = []
    for name in ("one", "two"):
        root = tmp_path / name
        (root / "params").mkdir(parents=True)
        (root / "d.jsonl").write_text("{}\n")
        data = {
            "data": {
                "token_budget": 10,
                "category_shares": {"x": 1.0},
                "sources": [{"name": "s", "path": "d.jsonl", "lang": "ar", "category": "x"}],
            }
        }
        hashes.append(load_params(_write(root, data)).section_hash("data"))
    assert hashes[0] == hashes[1]


def test_validate_params_inline() -> None:
    with pytest.raises(
        ParamsError,
        match=r"(?s)params: 1 invalid.*model\.tiny: experts_per_token \(3\) must be <= num_experts",
    ):
        validate_params(
            {"data": {"token_budget": 1}, "model": {"tiny": {"num_experts": 2, "experts_per_token": 3}}}
        )


def test_path_of_wrong_type(project: Path) -> None:
    _reject(project, {**BASE, "run": {"root": 5}}, "run.root", "expected a path")
