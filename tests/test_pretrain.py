"""Phase 00's pre-training of the embedded backbone: plain text only, it learns, and its cache follows its inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from arabic_r1.arabic_text import normalized_words
from arabic_r1.benchmark_mirrors import fixture_mirror_dir, iter_mirror_rows
from arabic_r1.benchmarks import BENCHMARKS
from arabic_r1.cot import HEADINGS, parse_trace
from arabic_r1.decontam import build_index
from arabic_r1.params import TinyMoEParams
from arabic_r1.pretrain import cache_key, materialise_backbone
from arabic_r1.tiny_model import BUILD_INFO, pretrain_texts

SHAPE = dict(num_layers=2, hidden_size=64, num_heads=2, num_experts=4, expert_intermediate_size=32,
             dense_intermediate_size=64, vocab_size=1024)  # fmt: skip


def shape(tmp_path: Path, **pretrain) -> TinyMoEParams:
    return TinyMoEParams(
        **SHAPE,
        pretrain={
            "steps": 30,
            "batch_size": 4,
            "seq_length": 64,
            "cache_dir": tmp_path / "cache",
            **pretrain,
        },
    )


def test_the_text_holds_no_trace_and_no_benchmark_item(shared_data_or_none) -> None:
    texts = pretrain_texts()
    headings = [f"{h}:" for pair in HEADINGS.values() for h in pair]
    assert not [t for t in texts if "<think>" in t or "</think>" in t], "a think tag in the pre-training text"
    assert not [
        t for t in texts if any(line.strip().startswith(h) for line in t.splitlines() for h in headings)
    ]
    assert not [t for t in texts if not parse_trace(t).problems], (
        "a well-formed trace in the pre-training text"
    )
    rows = [r for b in BENCHMARKS for r in iter_mirror_rows(fixture_mirror_dir(), b)]
    if shared_data_or_none is not None:  # the real OALL rows too, where this workspace has them
        from conftest import FLAT_SPLITS, read_jsonl

        from arabic_r1.benchmark_mirrors import BenchmarkRow
        from arabic_r1.benchmarks import spec

        for key, splits in FLAT_SPLITS.items():
            for split in splits:
                for i, row in enumerate(read_jsonl(shared_data_or_none / "oall" / key / f"{split}.jsonl")):
                    rows.append(BenchmarkRow(key, spec(key).subset_of(row), split, i, row))
    index = build_index(rows, n=13, min_short_words=8)
    hits = [(t[:60], index.match(normalized_words(t))) for t in texts]
    assert not [h for h in hits if h[1]], (
        f"benchmark items in the pre-training text: {[h for h in hits if h[1]][:3]}"
    )


def test_pretraining_learns_and_the_cache_returns_the_same_weights(tmp_path: Path) -> None:
    s = shape(tmp_path)
    a = materialise_backbone(tmp_path / "a", "deepseek_v3", s, seed=0)
    info = json.loads((a / BUILD_INFO).read_text())
    losses = info["pretrain"]["losses"]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, losses
    assert (s.pretrain.cache_dir / cache_key("deepseek_v3", s, 0)).is_dir()
    b = materialise_backbone(tmp_path / "b", "deepseek_v3", s, seed=0)  # from the cache: no training
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_the_cache_key_follows_what_the_weights_depend_on(tmp_path: Path, monkeypatch) -> None:
    s = shape(tmp_path)
    key = cache_key("deepseek_v3", s, 0)
    assert key == cache_key(
        "deepseek_v3", shape(tmp_path, cache_dir=tmp_path / "elsewhere"), 0
    )  # where is not what
    for other in (cache_key("qwen3_moe", s, 0), cache_key("deepseek_v3", s, 1),
                  cache_key("deepseek_v3", shape(tmp_path, steps=31), 0),
                  cache_key("deepseek_v3", shape(tmp_path, learning_rate=1e-3), 0),
                  cache_key("deepseek_v3", TinyMoEParams(**{**SHAPE, "hidden_size": 32}, pretrain=s.pretrain), 0)):  # fmt: skip
        assert other != key
    import arabic_r1.pretrain as pretrain

    real = pretrain.resource_text
    monkeypatch.setattr(
        pretrain, "resource_text", lambda name: real(name) + ("x" if name == "pretrain_corpus.txt" else "")
    )
    assert cache_key("deepseek_v3", s, 0) != key  # one character of the corpus


def test_no_steps_means_the_random_backbone(tmp_path: Path) -> None:
    s = shape(tmp_path, steps=0)
    out = materialise_backbone(tmp_path / "m", "deepseek_v3", s, seed=0)
    assert "pretrain" not in json.loads((out / BUILD_INFO).read_text()) and not s.pretrain.cache_dir.exists()


@pytest.fixture
def shared_data_or_none():
    from conftest import HOW_TO_GET_DATA, SHARED_DATA, in_ci

    if not (SHARED_DATA / "oall").is_dir() and in_ci():
        pytest.fail(HOW_TO_GET_DATA)
    return SHARED_DATA if (SHARED_DATA / "oall").is_dir() else None
