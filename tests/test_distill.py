"""Phase 02 against a real OpenAI-compatible server (``transformers serve`` on the tiny model), not a mock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cached_tiny_model
from teacher_server import FlakyProxy

from arabic_r1.completions import ResponseCache
from arabic_r1.distill import TRACES_FILE, distill
from arabic_r1.params import DistillParams
from arabic_r1.params_loading import validate_params
from arabic_r1.teachers import TeacherError, TeacherUnreachable

POOL = [
    {"id": f"p{i}", "text": t, "lang": lang, "category": "c", "source": "s", "n_tokens": 10, "answer": ans}
    for i, (t, lang, ans) in enumerate([
        ("ما عاصمة المغرب؟\nأ) الدار البيضاء\nب) الرباط\nج) فاس\nد) مراكش", "ar", "ب"),
        ("اكتب جملة عن فضل القراءة.", "ar", None),
        ("ما حكم الغش في الامتحان؟", "ar", None),
        ("Which planet is red?\nA) Venus\nB) Mars\nC) Jupiter\nD) Saturn", "en", "B"),
        ("Give one tip for writing a polite complaint.", "en", None),
        ("Why is honesty valued in trade?", "en", None),
    ])
]  # fmt: skip
N = len(POOL)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "params").mkdir()
    with (tmp_path / "pool.jsonl").open("w", encoding="utf-8") as f:
        for item in POOL:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    return tmp_path


def _params(project: Path, url: str, model: str, **distill_kw):
    d = {"backend": "openai", "base_url": url, "teacher": model, "max_new_tokens": 12, "cache_dir": str(project / "cache"),
         "backoff_initial_s": 0.01, "concurrency": 2, "price_per_m_input": 1.0, "price_per_m_output": 2.0, **distill_kw}  # fmt: skip
    return validate_params(
        {"data": {"token_budget": 10}, "distill": d}, source_file=project / "params" / "p.yaml"
    )


def _ok_ids(out: Path) -> list[str]:
    recs = [json.loads(x) for x in (out / TRACES_FILE).read_text(encoding="utf-8").splitlines()]
    return [r["prompt_id"] for r in recs if r["status"] == "ok"]


def test_full_run_then_cache_makes_reruns_free(server, project: Path) -> None:
    proxy = FlakyProxy(server.url)
    try:
        params = _params(project, proxy.url, server.model)
        first = distill(params, project / "pool.jsonl", project / "out1")
        s = first.summary
        assert (
            s["status"] == "complete"
            and s["traces_ok"] == N
            and s["requests_sent_this_run"] == N == proxy.forwarded
        )
        assert (
            s["tokens_this_run"]["completion"] > 0
            and s["cost_usd_this_run"] > 0
            and s["latency_s_this_run"]["p50"] > 0
        )
        rec = json.loads((project / "out1" / TRACES_FILE).read_text(encoding="utf-8").splitlines()[0])
        for key in (
            "prompt_id",
            "messages",
            "teacher",
            "template_version",
            "raw_text",
            "parsed",
            "usage",
            "cache_key",
        ):
            assert key in rec
        assert rec["messages"][0]["role"] == "system" and "التحليل" in rec["messages"][0]["content"]
        assert rec["usage"]["prompt_tokens"] > 0
        again = distill(params, project / "pool.jsonl", project / "out1")  # same folder: all done
        fresh = distill(
            params, project / "pool.jsonl", project / "out2"
        )  # new folder, same cache: all cached
        assert proxy.requests == N
        assert again.summary["requests_sent_this_run"] == 0 and fresh.summary["requests_sent_this_run"] == 0
        assert fresh.summary["from_cache_this_run"] == N and sorted(_ok_ids(project / "out2")) == sorted(
            i["id"] for i in POOL
        )
    finally:
        proxy.close()


def test_budget_stops_cleanly_and_resume_finishes(server, project: Path) -> None:
    params = _params(project, server.url, server.model, max_requests=2, concurrency=1)
    r = distill(params, project / "pool.jsonl", project / "out")
    assert r.summary["status"] == "budget_reached" and r.summary["budget_reached"] == "max_requests=2"
    assert (
        r.summary["requests_sent_this_run"] == 2
        and r.summary["traces_ok"] == 2
        and r.summary["not_attempted"] == N - 2
    )
    tokens = _params(project, server.url, server.model, max_total_tokens=1, concurrency=1)
    assert distill(tokens, project / "pool.jsonl", project / "out").summary["requests_sent_this_run"] == 0
    done = distill(_params(project, server.url, server.model), project / "pool.jsonl", project / "out")
    assert done.summary["status"] == "complete" and done.summary["requests_sent_this_run"] == N - 2
    assert sorted(_ok_ids(project / "out")) == sorted(i["id"] for i in POOL)


def test_429_and_5xx_are_retried_with_backoff(server, project: Path) -> None:
    proxy = FlakyProxy(server.url, statuses=[429, 429, 503])
    try:
        r = distill(
            _params(project, proxy.url, server.model, concurrency=1), project / "pool.jsonl", project / "out"
        )
    finally:
        proxy.close()
    assert (
        r.summary["status"] == "complete" and r.summary["retries_this_run"] == 3 and proxy.requests == N + 3
    )


def test_exhausted_retries_are_counted_by_kind_and_retried_next_run(server, project: Path) -> None:
    proxy = FlakyProxy(server.url, statuses=[503] * 100)
    try:
        r = distill(
            _params(project, proxy.url, server.model, max_retries=1, concurrency=1),
            project / "pool.jsonl",
            project / "out",
        )
    finally:
        proxy.close()
    assert (
        r.summary["failures_this_run"] == {"http_503": N}
        and r.summary["traces_ok"] == 0
        and r.summary["status"] == "incomplete"
    )
    ok = distill(_params(project, server.url, server.model), project / "pool.jsonl", project / "out")
    assert ok.summary["traces_ok"] == N


def test_a_slow_server_times_out_per_attempt_after_request_timeout_s(server, project: Path) -> None:
    """request_timeout_s bounds each attempt (a retry gets its own): 0.3 s against a server that answers in 1.5 s."""
    proxy = FlakyProxy(server.url, delay_s=1.5)
    t0 = time.monotonic()
    try:
        r = distill(_params(project, proxy.url, server.model, request_timeout_s=0.3, max_retries=1, concurrency=1,
                            max_items=2, max_consecutive_connection_failures=10), project / "pool.jsonl", project / "out")  # fmt: skip
    finally:
        proxy.close()
    assert r.summary["failures_this_run"] == {"timeout": 2} and proxy.requests == 4  # 2 items x 2 attempts
    assert (
        time.monotonic() - t0 < 4 * 1.5
    )  # the client gave up on each attempt; it did not wait for the answers


def test_an_unreachable_endpoint_stops_the_phase_naming_it_and_leaves_the_rest_unsent(
    server, project: Path
) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    p = _params(
        project, dead, server.model, max_retries=0, concurrency=1, max_consecutive_connection_failures=2
    )
    with pytest.raises(
        TeacherUnreachable,
        match=r"2 items in a row could not reach http://127.0.0.1:\d+/v1.*4 items not sent",
    ):
        distill(p, project / "pool.jsonl", project / "out")
    recs = [json.loads(x) for x in (project / "out" / TRACES_FILE).read_text(encoding="utf-8").splitlines()]
    assert [r["error_kind"] for r in recs] == ["connection", "connection"]  # the other 4 were never sent
    ok = distill(_params(project, server.url, server.model), project / "pool.jsonl", project / "out")
    assert ok.summary["traces_ok"] == N  # the next run sends all of them


def test_killed_run_resumes_with_exactly_n_unique_traces(server, project: Path) -> None:
    proxy = FlakyProxy(server.url)
    params_file = project / "params" / "p.yaml"
    import yaml

    d = {"backend": "openai", "base_url": proxy.url, "teacher": server.model, "max_new_tokens": 12,
         "cache_dir": str(project / "cache"), "concurrency": 1}  # fmt: skip
    params_file.write_text(yaml.safe_dump({"data": {"token_budget": 10}, "distill": d}))
    code = (
        "import sys; from pathlib import Path; from arabic_r1.params_loading import load_params; from arabic_r1.distill import distill;"
        f"distill(load_params({str(params_file)!r}), Path({str(project / 'pool.jsonl')!r}), Path({str(project / 'out')!r}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    )
    try:
        traces = project / "out" / TRACES_FILE
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            traces.exists() and len(traces.read_text().splitlines()) >= 2
        ):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = len(traces.read_text().splitlines())
        assert 2 <= killed_at < N, "the run finished before it could be killed"
        with traces.open("ab") as f:  # and a torn half line, as a kill during a write would leave
            f.write(b'{"prompt_id": "p5", "sta')
        from arabic_r1.params_loading import load_params

        r = distill(load_params(params_file), project / "pool.jsonl", project / "out")
    finally:
        proxy.close()
    ids = _ok_ids(project / "out")
    assert len(ids) == len(set(ids)) == N and r.summary["traces_ok"] == N
    entries = list((project / "cache").rglob("*.json"))
    assert len(entries) == N
    assert proxy.forwarded <= N + 1  # at most the one request in flight at the kill was answered twice


def test_replay_miss_names_the_prompt(project: Path) -> None:
    (project / "cache").mkdir()
    params = validate_params({"data": {"token_budget": 10}, "distill": {"backend": "replay", "teacher": "nobody", "cache_dir": str(project / "cache")}},
                             source_file=project / "params" / "p.yaml")  # fmt: skip
    with pytest.raises(TeacherError, match=r"replay: no cached response for prompt p0 \('ما عاصمة المغرب"):
        distill(params, project / "pool.jsonl", project / "out")


def test_api_key_reaches_the_server_and_no_file_of_the_run(
    smoke_run, server, tmp_path: Path, monkeypatch
) -> None:
    """The key comes from the environment variable named in params, and appears in nothing the run writes (phase 02
    run by the runner on a copy of the suite's smoke project, whose phases 00-01 stay fresh: no key reaches them)."""
    import shutil
    import uuid

    from arabic_r1.params import REPO_DIR
    from arabic_r1.params_loading import load_params
    from arabic_r1.pipeline import reproduce

    secret = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("ARABIC_R1_TEST_KEY", secret)
    project = tmp_path / "project"
    shutil.copytree(smoke_run[0], project, symlinks=True)
    shutil.rmtree(project / "runs" / "smoke" / "02_cot_distillation")
    proxy = FlakyProxy(server.url)
    try:
        overrides = ["distill.backend=openai", f"distill.base_url={proxy.url}", f"distill.teacher={server.model}",
                     "distill.api_key_env=ARABIC_R1_TEST_KEY", "distill.max_new_tokens=8", "distill.max_items=4",
                     f"distill.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
        params = load_params(project / "params" / "smoke.yaml", overrides)
        summary = reproduce(params, notebooks_dir=REPO_DIR / "notebooks", only=["00", "01", "02"])
    finally:
        proxy.close()
    assert [r.action for r in summary.results] == ["skipped", "skipped", "ran"]
    assert proxy.forwarded == 4 and set(proxy.auth_headers) == {f"Bearer {secret}"}
    leaks = [
        str(f)
        for f in tmp_path.rglob("*")
        if f.is_file() and not f.is_symlink() and secret.encode() in f.read_bytes()
    ]
    assert not leaks, leaks


FLAWED = {
    "stem_math_logic-ar-005", "literature_critical_analysis-ar-008", "stem_math_logic-ar-010", "creative_writing_dialogue-ar-004",
    "consumer_reviews_feedback-ar-001", "consumer_reviews_feedback-ar-007", "legal_cultural_alignment-ar-003",
    "social_dialectal-ar-004", "legal_cultural_alignment-ar-020",
}  # fmt: skip


def test_shipped_replay_pack_matches_the_current_templates_and_prompts() -> None:
    """Every smoke prompt that can reach the pool has a trace whose key the current code computes."""
    import glob

    from arabic_r1.completions import cache_key
    from arabic_r1.cot import gold_index, teacher_messages
    from arabic_r1.params import REPO_DIR
    from arabic_r1.params_loading import load_params
    from arabic_r1.teachers import sampling_of

    p = load_params("smoke").distill
    pack = {}
    for f in (p.cache_dir).glob("*.jsonl"):
        for line in f.read_text(encoding="utf-8").splitlines():
            e = json.loads(line)
            pack[e["prompt_id"]] = e
    removed_in_phase01 = {"social_dialectal-ar-007", "creative_writing_dialogue-ar-010", "stem_math_logic-en-010", "literature_critical_analysis-ar-011",
                          "stem_math_logic-ar-011", "legal_cultural_alignment-ar-005", "social_dialectal-ar-006", "creative_writing_dialogue-ar-007",
                          "stem_math_logic-ar-024", "consumer_reviews_feedback-en-010"}  # fmt: skip
    rows = 0
    for f in glob.glob(str(REPO_DIR / "arabic_r1/resources/smoke_data/*.jsonl")):
        lang = Path(f).name.split(".")[1]
        for line in Path(f).read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r["id"] in removed_in_phase01:
                continue
            rows += 1
            entry = pack[r["id"]]
            messages = teacher_messages(
                r["prompt"], lang, p.template_version, gold_index(r["answer"]) is not None
            )
            assert entry["key"] == cache_key(p.teacher, p.template_version, messages, sampling_of(p)), r["id"]
    drills = sum(
        1 for f in glob.glob(str(REPO_DIR / "arabic_r1/resources/smoke_data/drills.*.jsonl")) for _ in open(f)
    )
    assert rows == 201 + drills and drills > 600 and FLAWED <= set(pack)


def test_smoke_pool_replays_completely_with_the_planted_flaws(tmp_path: Path) -> None:
    from arabic_r1.data import run_mixture
    from arabic_r1.params_loading import load_params

    params = load_params("smoke")
    mix = run_mixture(params, tmp_path / "01", str(cached_tiny_model()))
    r = distill(params, mix.pool_path, tmp_path / "02")
    s = r.summary
    assert (
        s["status"] == "complete"
        and s["requests_sent_this_run"] == 0
        and s["traces_ok"] == s["items"] == s["from_cache_this_run"]
    )
    ids = {t.split("/", 1)[1] for t in _ok_ids(tmp_path / "02")}
    assert FLAWED <= ids
    assert s["parse_problems"] == {"phases out of order": 1, "missing phase(s)": 1}
    assert (
        s["gold_match"]["multiple_choice"] - s["gold_match"]["matching"] == 2
    )  # the two planted wrong answers


def test_local_transformers_teacher_on_the_embedded_model(project: Path, tmp_path: Path) -> None:
    model = cached_tiny_model()
    params = validate_params({"data": {"token_budget": 10}, "distill": {"backend": "transformers", "teacher": "embedded", "max_new_tokens": 8,
                              "batch_size": 4, "cache_dir": str(project / "cache")}}, source_file=project / "params" / "p.yaml")  # fmt: skip
    r = distill(params, project / "pool.jsonl", project / "out", base_model=str(model))
    assert r.summary["status"] == "complete" and r.summary["requests_sent_this_run"] == N
    assert r.summary["tokens_this_run"]["completion"] > 0
    rec = json.loads((project / "out" / TRACES_FILE).read_text(encoding="utf-8").splitlines()[0])
    assert rec["teacher"].startswith("embedded:") and rec["usage"]["prompt_tokens"] > 20
    again = distill(params, project / "pool.jsonl", project / "out2", base_model=str(model))
    assert again.summary["from_cache_this_run"] == N


def test_vllm_and_openai_arguments_are_validated_without_a_gpu(project: Path, monkeypatch) -> None:
    from arabic_r1.teachers import OpenAITeacher, VLLMTeacher

    p = _params(
        project, "http://127.0.0.1:9/v1", "m", backend="vllm", temperature=0.3, top_p=0.9, max_new_tokens=64
    ).distill
    assert VLLMTeacher(p, "some/model").sampling_kwargs() == {
        "max_tokens": 64,
        "temperature": 0.3,
        "top_p": 0.9,
    }
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="pip install vllm"):
            VLLMTeacher(p, "some/model").generate([], lambda *a: None, lambda r: True)
    monkeypatch.delenv("MISSING_TEACHER_KEY", raising=False)
    q = _params(project, "http://127.0.0.1:9/v1", "m", api_key_env="MISSING_TEACHER_KEY").distill
    with pytest.raises(TeacherError, match="MISSING_TEACHER_KEY .* is not set"):
        OpenAITeacher(q)._client()
    from arabic_r1.params import ParamsError

    with pytest.raises(ParamsError, match="distill: backend 'openai' needs base_url"):
        validate_params({"data": {"token_budget": 1}, "distill": {"backend": "openai"}})
    with pytest.raises(
        ParamsError, match=r"distill\.api_key_env: expected the NAME of an environment variable"
    ):
        validate_params(
            {
                "data": {"token_budget": 1},
                "distill": {"backend": "openai", "base_url": "http://x", "api_key_env": "sk-abc"},
            }
        )


def test_a_rerun_with_other_sampling_replaces_the_old_traces(server, project: Path) -> None:
    """Traces are resumed per request (prompt + teacher + template + sampling), never per prompt alone: a phase 02
    re-run with another teacher setting must not keep the first setting's traces under the new manifest."""
    from arabic_r1.cot import read_traces

    for temperature in (0.6, 0.0):
        result = distill(
            _params(project, server.url, server.model, temperature=temperature),
            project / "pool.jsonl",
            project / "out",
        )
        assert result.summary["traces_ok"] == N
    assert {r["sampling"]["temperature"] for r in read_traces(project / "out" / TRACES_FILE)} == {0.0}


def test_another_temperature_template_teacher_or_prompt_misses_the_cache(tmp_path: Path) -> None:
    """The response cache answers only the exact request: each part of the key, changed alone, misses."""
    from arabic_r1.completions import cache_key
    from arabic_r1.params_loading import load_params
    from arabic_r1.teachers import sampling_of

    p = load_params("smoke").distill
    hotter = load_params("smoke", ["distill.temperature=0.9"]).distill
    msgs = [{"role": "user", "content": "ما عاصمة المغرب؟"}]
    cache = ResponseCache(tmp_path / "cache")
    key = cache_key(p.teacher, p.template_version, msgs, sampling_of(p))
    cache.put(key, {"key": key, "text": "الرباط"})
    assert cache.get(cache_key(p.teacher, p.template_version, msgs, sampling_of(p)))["text"] == "الرباط"
    variants = [
        cache_key(p.teacher, p.template_version, msgs, sampling_of(hotter)),
        cache_key(p.teacher, p.template_version + "-next", msgs, sampling_of(p)),
        cache_key(p.teacher + "-other", p.template_version, msgs, sampling_of(p)),
        cache_key(
            p.teacher, p.template_version, [{"role": "user", "content": "ما عاصمة مصر؟"}], sampling_of(p)
        ),
    ]
    assert len(set(variants)) == 4 and all(cache.get(k) is None for k in variants)


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_a_server_with_a_reasoning_parser_gives_traces_with_their_think_block(
    server, project: Path, field
) -> None:
    """vLLM/SGLang with a reasoning parser and the DeepSeek API return the think block in ``message.<field>``;
    reading ``content`` alone, every trace would lack its block and fail phase 03's structure check."""
    answer = "الإجابة: ب"
    proxy = FlakyProxy(server.url, reasoning_field=field, answer=answer)
    try:
        r = distill(_params(project, proxy.url, server.model), project / "pool.jsonl", project / "out")
    finally:
        proxy.close()
    assert r.summary["traces_ok"] == N
    recs = [json.loads(x) for x in (project / "out" / TRACES_FILE).read_text(encoding="utf-8").splitlines()]
    for rec in recs:
        head, sep, tail = rec["raw_text"].partition("\n</think>\n\n")
        assert head.startswith("<think>\n") and len(head) > len("<think>\n"), rec["raw_text"]
        assert sep and tail == answer, rec["raw_text"]
        assert rec["parsed"]["answer"] == "ب"  # the answer line parsed after the block


def test_the_old_in_process_vllm_name_still_loads_with_a_deprecation_line() -> None:
    with pytest.warns(FutureWarning, match="vllm_in_process"):
        p = DistillParams(backend="vllm", teacher="some/model")
    assert p.backend == "vllm_in_process"
    with pytest.raises(ValueError, match="needs base_url"):  # a server is the openai backend
        DistillParams(backend="openai", teacher="m")
