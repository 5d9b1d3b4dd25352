"""The LLM service the teacher, the norms judge and the ALRAGE judge share: the response cache, the budget, and
``complete_all`` against a local OpenAI-compatible endpoint with canned answers (the real openai client)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from teacher_server import FlakyProxy

from arabic_r1.completions import Budget, ResponseCache, cache_key, complete_all, make_request, make_teacher
from arabic_r1.params import DistillParams
from arabic_r1.teachers import (
    OpenAITeacher,
    ReplayTeacher,
    Request,
    TeacherError,
    TransformersTeacher,
    VLLMTeacher,
)

USAGE = {"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34}
MESSAGES = [{"role": "system", "content": "judge"}, {"role": "user", "content": "x" * 20}]


def _params(tmp_path: Path, url: str = "http://127.0.0.1:9/v1", **kw) -> DistillParams:
    base = {"backend": "openai", "base_url": url, "teacher": "t", "max_new_tokens": 10, "concurrency": 1,
            "cache_dir": tmp_path / "cache"}  # fmt: skip
    return DistillParams(**(base | kw))


def _req(estimate: int) -> Request:
    return Request("k", "p", [], prompt_tokens_estimate=estimate)


def test_the_budget_reserves_before_and_settles_after_each_request() -> None:
    """A request reserves its prompt estimate + max_new_tokens; settling frees the reservation and counts what the
    teacher reported, so parallel requests cannot overshoot the token budget together."""
    b = Budget(max_requests=None, max_tokens=100, max_new_tokens=10)
    assert b.reserve(_req(40)) and b.reserve(_req(40))  # 50 + 50 reserved: exactly at the limit
    assert (b.requests, b.reserved, b.tokens) == (2, 100, 0)
    assert not b.reserve(_req(0)) and b.reached == "max_total_tokens=100"
    b.settle(_req(40), 12)
    assert (b.reserved, b.tokens) == (50, 12)
    b.settle(_req(40), 0)  # a failed request frees its reservation, costs nothing
    assert (b.reserved, b.tokens) == (0, 12)
    assert b.reserve(_req(40))
    assert b.reserve(_req(28)) and not b.reserve(_req(0))  # 12 spent + 50 + 38 = 100; nothing more fits
    b.settle(_req(40), 30)
    b.settle(_req(28), 5)
    assert (b.reserved, b.tokens) == (0, 47)  # every settled request adds what it spent
    n = Budget(max_requests=2, max_tokens=None, max_new_tokens=10)
    assert n.reserve(_req(5)) and n.reserve(_req(5)) and not n.reserve(_req(5))
    assert n.reached == "max_requests=2" and n.requests == 2
    both = Budget(max_requests=1, max_tokens=5, max_new_tokens=10)
    assert not both.reserve(_req(0)) and not both.reserve(_req(0))
    assert both.reached == "max_total_tokens=5"  # the first reason reached stays the one reported


def test_the_prompt_estimate_is_characters_over_two_and_a_half() -> None:
    assert make_request("k", "r", MESSAGES).prompt_tokens_estimate == int(25 / 2.5)
    assert make_request("k", "r", [{"role": "user", "content": "abcdefg"}]).prompt_tokens_estimate == 2


def test_the_cache_key_follows_teacher_template_messages_and_sampling() -> None:
    base = cache_key("t", "v1", MESSAGES, {"temperature": 0.6})
    assert len(base) == 64 and base == cache_key("t", "v1", [dict(m) for m in MESSAGES], {"temperature": 0.6})
    others = [
        cache_key("u", "v1", MESSAGES, {"temperature": 0.6}),
        cache_key("t", "v2", MESSAGES, {"temperature": 0.6}),
        cache_key("t", "v1", MESSAGES[1:], {"temperature": 0.6}),
        cache_key("t", "v1", MESSAGES, {"temperature": 0.7}),
    ]
    assert len({base, *others}) == 5


def test_the_cache_reads_its_files_then_its_packs_and_skips_a_broken_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ResponseCache(tmp_path)
    cache.put("ab12", {"text": "one"})
    cache.put("ab34", {"text": "two"})  # the same two-character folder, already there
    assert cache.get("ab34") == {"text": "two"}
    assert cache.path("ab12") == tmp_path / "ab" / "ab12.json" and cache.get("ab12") == {"text": "one"}
    (tmp_path / "pack.jsonl").write_text(
        json.dumps({"key": "cd34", "text": "packed"})
        + "\n"
        + json.dumps({"key": "ab12", "text": "stale"})
        + "\n",
        encoding="utf-8",
    )
    assert ResponseCache(tmp_path).get("cd34") == {"key": "cd34", "text": "packed"}
    assert ResponseCache(tmp_path).get("ab12") == {"text": "one"}  # a written entry wins over a pack
    cache.path("ef56").parent.mkdir(parents=True)
    cache.path("ef56").write_text('{"text": "cut sh', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert ResponseCache(tmp_path).get("ef56") is None and ResponseCache(tmp_path).get("zz99") is None
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"unreadable cache entry {cache.path('ef56')} ignored (it will be regenerated)"]


def test_complete_all_caches_every_response_and_reruns_for_free(tmp_path: Path) -> None:
    ep = FlakyProxy(None, answer="Score: 8", usage=USAGE)
    requests = [(f"r{i}", [{"role": "user", "content": f"item {i}"}]) for i in range(3)]
    try:
        p = _params(tmp_path, ep.url)
        first = complete_all(p, requests, "judge-v1")
        again = complete_all(p, requests, "judge-v1")
        other = complete_all(p, requests[:1], "judge-v2")  # a new prompt version is a new key
    finally:
        ep.close()
    assert first == again == {"r0": "Score: 8", "r1": "Score: 8", "r2": "Score: 8"} and other == {
        "r0": "Score: 8"
    }
    assert ep.requests == 4
    sampling = {"temperature": 0.6, "top_p": None, "max_new_tokens": 10}
    key = cache_key("t", "judge-v1", requests[0][1], sampling)
    entry = ResponseCache(p.cache_dir).get(key)
    assert (
        entry is not None
        and (entry["key"], entry["sampling"]) == (key, sampling)  # what a shipped pack is indexed by
        and entry["text"] == "Score: 8"
        and entry["usage"] == {"prompt_tokens": 30, "completion_tokens": 4}
    )
    assert (entry["teacher"], entry["template_version"], entry["messages"]) == (
        "t",
        "judge-v1",
        requests[0][1],
    )
    assert entry["created_at"].endswith("+00:00")


def test_complete_all_reports_budget_stops_and_failures_per_item(tmp_path: Path) -> None:
    ep = FlakyProxy(None, statuses=[200, 400], answer="Score: 3", usage=USAGE)
    requests = [(f"r{i}", [{"role": "user", "content": f"item {i}"}]) for i in range(4)]
    try:
        out = complete_all(_params(tmp_path, ep.url, max_requests=2), requests, "judge-v1")
        spent = complete_all(_params(tmp_path, ep.url, max_total_tokens=5), requests[2:], "judge-v1")
    finally:
        ep.close()
    assert out["r0"] == "Score: 3" and isinstance(out["r1"], TeacherError) and out["r1"].kind == "http_400"
    for rid in ("r2", "r3"):
        assert isinstance(out[rid], TeacherError) and out[rid].kind == "budget"
        assert str(out[rid]) == f"{rid}: not sent, budget reached (max_requests=2)"
    assert str(spent["r2"]) == "r2: not sent, budget reached (max_total_tokens=5)" and ep.requests == 2
    assert len(list((tmp_path / "cache").glob("*/*.json"))) == 1  # only r0's response was written


def test_each_backend_gets_its_teacher(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    (tmp_path / "cache").mkdir()
    assert isinstance(make_teacher(_params(tmp_path), cache), OpenAITeacher)
    replay = make_teacher(_params(tmp_path, backend="replay"), cache)
    assert isinstance(replay, ReplayTeacher) and replay.lookup == cache.get
    local = make_teacher(_params(tmp_path, backend="transformers", teacher=str(model)), cache)
    assert isinstance(local, TransformersTeacher) and (local.model_path, local.teacher_id) == (
        str(model),
        str(model),
    )
    vllm = make_teacher(_params(tmp_path, backend="vllm_in_process", teacher="embedded"), cache, str(model))
    assert isinstance(vllm, VLLMTeacher) and (vllm.model_path, vllm.tensor_parallel_size) == (str(model), 1)
    named = make_teacher(_params(tmp_path, backend="vllm_in_process", teacher=str(model)), cache)
    assert named.teacher_id == str(model)
    embedded = make_teacher(_params(tmp_path, backend="transformers", teacher="embedded"), cache, str(model))
    assert embedded.teacher_id.startswith("embedded:") and len(embedded.teacher_id) == len("embedded:") + 12
    assert vllm.teacher_id == embedded.teacher_id  # either engine: the id names the weights, not the word
    (model / "config.json").write_text('{"changed": true}', encoding="utf-8")
    changed = make_teacher(_params(tmp_path, backend="transformers", teacher="embedded"), cache, str(model))
    assert changed.teacher_id != embedded.teacher_id  # a new embedded model must not reuse the old responses
    with pytest.raises(
        ValueError, match=r"^distill.teacher 'embedded' needs the run's base model \(phase 00\)$"
    ):
        make_teacher(_params(tmp_path, backend="transformers", teacher="embedded"), cache)


def test_the_budget_counts_what_the_teacher_reported_and_nothing_for_a_failure(tmp_path: Path) -> None:
    """Each request reserves 2 + 10 tokens. A failed request costs nothing, so with max_total_tokens=12 the next one
    still fits; a success costs its prompt + completion tokens (30 + 4), so with 40 nothing fits after it."""
    requests = [(f"r{i}", [{"role": "user", "content": f"item {i}"}]) for i in range(2)]
    failing = FlakyProxy(None, statuses=[400], answer="Score: 3", usage=USAGE)
    ok = FlakyProxy(None, answer="Score: 3", usage=USAGE)
    try:
        after_failure = complete_all(
            _params(tmp_path, failing.url, max_total_tokens=12), requests, "judge-v1"
        )
        after_success = complete_all(
            _params(tmp_path / "b", ok.url, max_total_tokens=40), requests, "judge-v1"
        )
    finally:
        failing.close(), ok.close()
    assert isinstance(after_failure["r0"], TeacherError) and after_failure["r1"] == "Score: 3"
    assert after_success["r0"] == "Score: 3" and isinstance(after_success["r1"], TeacherError)
    assert after_success["r1"].kind == "budget"


def test_complete_all_replays_from_the_cache_and_names_a_miss(tmp_path: Path) -> None:
    ep = FlakyProxy(None, answer="Score: 9", usage=USAGE)
    asked = [("r0", [{"role": "user", "content": "item"}])]
    try:
        complete_all(_params(tmp_path, ep.url), asked, "judge-v1")
    finally:
        ep.close()
    replay = _params(tmp_path, backend="replay")
    assert complete_all(replay, asked, "judge-v1") == {"r0": "Score: 9"}
    with pytest.raises(TeacherError, match="replay: no cached response for prompt r1") as err:
        complete_all(replay, [("r1", [{"role": "user", "content": "new item"}])], "judge-v1")
    assert err.value.kind == "cache_miss"
