"""The teacher backends on their own. The OpenAI-compatible client against a local HTTP endpoint with canned answers
(the real openai client, real HTTP): what it sends, how it retries and backs off, when it gives up or stops; the
local transformers teacher on the tiny model, against the model's own ``generate``. The end-to-end runs against a
real model server are in test_distill.py."""

from __future__ import annotations

import asyncio
import functools
import socket
import time

import pytest
from conftest import cached_tiny_model
from openai.types.chat import ChatCompletionMessage
from teacher_server import FlakyProxy

from arabic_r1 import teachers
from arabic_r1.params import DistillParams
from arabic_r1.teachers import (
    OpenAITeacher,
    ReplayTeacher,
    Request,
    Result,
    TeacherError,
    TeacherUnreachable,
    TransformersTeacher,
    reasoning_field,
)

USAGE = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}


def _params(url: str, **kw) -> DistillParams:
    base = {"backend": "openai", "base_url": url, "teacher": "t", "max_new_tokens": 7, "concurrency": 1}
    return DistillParams(**(base | kw))


def _requests(n: int) -> list[Request]:
    return [
        Request(f"k{i}", f"p{i}", [{"role": "user", "content": f"q{i}"}], prompt_tokens_estimate=42)
        for i in range(n)
    ]


def _collect(teacher, requests: list[Request], reserve=lambda r: True) -> dict[str, Result | TeacherError]:
    """Each request's outcome by prompt id, in the order the teacher finished them."""
    out: dict[str, Result | TeacherError] = {}
    teacher.generate(requests, lambda req, res: out.__setitem__(req.prompt_id, res), reserve)
    return out


def _run(p: DistillParams, n: int = 1, reserve=lambda r: True) -> dict[str, Result | TeacherError]:
    return _collect(OpenAITeacher(p), _requests(n), reserve)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's backoff waits, recorded instead of slept; the jitter factor pinned at half its range (x 1.125)."""
    waited: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, *args, **kwargs):
        waited.append(round(delay, 6))
        return await real_sleep(0)

    monkeypatch.setattr(teachers.asyncio, "sleep", fake_sleep)
    monkeypatch.setattr(teachers.random, "random", lambda: 0.5)
    return waited


def _dead_url() -> str:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_a_request_carries_the_teacher_and_its_sampling_and_reads_the_usage() -> None:
    ep = FlakyProxy(None, answer="<think>x</think>Answer: B", usage=USAGE)
    try:
        r = _run(_params(ep.url, temperature=0.3, top_p=0.9, max_tokens_param="max_completion_tokens"))["p0"]
        plain = _run(_params(ep.url, temperature=None))["p0"]
    finally:
        ep.close()
    assert isinstance(r, Result) and r.text == "<think>x</think>Answer: B" and r.finish_reason == "stop"
    assert (r.prompt_tokens, r.completion_tokens, r.attempts) == (11, 5, 1) and r.latency_s >= 0
    first, second = ep.bodies
    assert first == {"model": "t", "messages": [{"role": "user", "content": "q0"}], "max_completion_tokens": 7,
                     "temperature": 0.3, "top_p": 0.9}  # fmt: skip
    assert second == {"model": "t", "messages": [{"role": "user", "content": "q0"}], "max_tokens": 7}
    assert isinstance(plain, Result) and plain.text == r.text


def test_the_latency_is_the_request_s_own_in_milliseconds() -> None:
    ep = FlakyProxy(None, answer="Answer: A", usage=USAGE, delay_s=0.05)
    t0 = time.monotonic()
    try:
        r = _run(_params(ep.url))["p0"]
    finally:
        ep.close()
    assert isinstance(r, Result) and 0.05 <= r.latency_s <= time.monotonic() - t0
    assert r.latency_s == round(r.latency_s, 3)


def test_reasoning_returned_apart_is_put_back_in_its_think_block() -> None:
    """A server with a reasoning parser returns the think text in ``reasoning_content`` and only the answer as the
    content (even none): the trace gets its think block back."""
    parsed = FlakyProxy(None, reasoning_field="reasoning_content", thought="Analysis: a", answer="Answer: B")
    bare = FlakyProxy(None, reasoning_field="reasoning_content", thought="Analysis: a", answer="")
    try:
        with_answer = _run(_params(parsed.url))["p0"]
        without = _run(_params(bare.url))["p0"]
    finally:
        parsed.close(), bare.close()
    assert (
        isinstance(with_answer, Result) and with_answer.text == "<think>\nAnalysis: a\n</think>\n\nAnswer: B"
    )
    assert isinstance(without, Result) and without.text == "<think>\nAnalysis: a\n</think>\n\n"


def test_without_usage_the_prompt_estimate_stands() -> None:
    ep = FlakyProxy(None, answer="Answer: A", usage=None)
    try:
        r = _run(_params(ep.url))["p0"]
    finally:
        ep.close()
    assert isinstance(r, Result) and (r.prompt_tokens, r.completion_tokens) == (42, 0)


def test_retry_after_is_honoured_on_429_and_5xx(
    sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    ep = FlakyProxy(None, statuses=[429, 503], retry_after="3", answer="Answer: A", usage=USAGE)
    caplog.set_level("INFO", logger="arabic_r1.teachers")
    try:
        r = _run(_params(ep.url, backoff_initial_s=0.5))["p0"]
    finally:
        ep.close()
    assert isinstance(r, Result) and r.attempts == 3 and ep.requests == 3
    assert sleeps == [3.375, 3.375]  # the server's 3 s, plus up to a quarter of jitter (here an eighth)
    said = [r.getMessage() for r in caplog.records if r.name == "arabic_r1.teachers"]
    assert said == [
        "p0: http_429, retry 1/5 in 3.4s",
        "p0: http_503, retry 2/5 in 3.4s",
    ]  # what a notebook shows


def test_without_retry_after_the_backoff_doubles_up_to_its_cap(sleeps: list[float]) -> None:
    ep = FlakyProxy(
        None, statuses=[429, 500, 502, 503, 504], retry_after=None, answer="Answer: A", usage=USAGE
    )
    try:
        r = _run(_params(ep.url, backoff_initial_s=0.5, backoff_max_s=3.0))["p0"]
    finally:
        ep.close()
    assert isinstance(r, Result) and r.attempts == 6
    assert sleeps == [0.5625, 1.125, 2.25, 3.375, 3.375]  # 0.5, 1, 2, then the 3 s cap; x 1.125 jitter


def test_retries_give_up_after_max_retries_naming_the_kind(sleeps: list[float]) -> None:
    ep = FlakyProxy(None, statuses=[503] * 10)
    try:
        r = _run(_params(ep.url, max_retries=2))["p0"]
    finally:
        ep.close()
    assert isinstance(r, TeacherError) and (r.kind, r.attempts) == ("http_503", 3) and ep.requests == 3
    assert str(r) == "p0: gave up after 3 attempts (http_503)" and len(sleeps) == 2


def test_the_kind_of_the_last_failure_is_reported(sleeps: list[float]) -> None:
    """A rate limit that never lifts is counted as http_429; a 4xx after a retried 5xx keeps its attempt count."""
    limited = FlakyProxy(None, statuses=[429] * 5)
    refused = FlakyProxy(None, statuses=[503, 400])
    try:
        r429 = _run(_params(limited.url, max_retries=1))["p0"]
        r400 = _run(_params(refused.url, max_retries=3))["p0"]
    finally:
        limited.close(), refused.close()
    assert isinstance(r429, TeacherError) and (r429.kind, r429.attempts) == ("http_429", 2)
    assert isinstance(r400, TeacherError) and (r400.kind, r400.attempts) == ("http_400", 2)


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_a_client_error_is_not_retried(status: int, sleeps: list[float]) -> None:
    ep = FlakyProxy(None, statuses=[status])
    try:
        r = _run(_params(ep.url))["p0"]
    finally:
        ep.close()
    assert isinstance(r, TeacherError) and (r.kind, r.attempts) == (f"http_{status}", 1) and ep.requests == 1
    assert str(r).startswith("p0: ") and f"injected {status}" in str(r) and sleeps == []


def test_timeouts_and_dropped_connections_are_retried_then_counted(sleeps: list[float]) -> None:
    slow = FlakyProxy(None, delay_s=0.6)
    dropping = FlakyProxy(None, statuses=[0, 200], answer="Answer: A", usage=USAGE)
    try:
        timeout = _run(_params(slow.url, request_timeout_s=0.2, max_retries=1))["p0"]
        dropped = _run(_params(dropping.url, max_retries=1))["p0"]
        refused = _run(_params(_dead_url(), max_retries=0))["p0"]
    finally:
        slow.close(), dropping.close()
    assert isinstance(timeout, TeacherError) and (timeout.kind, timeout.attempts) == ("timeout", 2)
    assert isinstance(dropped, Result) and dropped.attempts == 2  # the dropped connection was retried
    assert isinstance(refused, TeacherError) and (refused.kind, refused.attempts) == ("connection", 1)


def test_an_unreachable_endpoint_stops_after_the_failures_in_a_row(sleeps: list[float]) -> None:
    """Items that could not reach the endpoint count in a row; one that did resets the count. At the limit the run
    stops, naming the endpoint and the items left unsent."""
    ep = FlakyProxy(None, statuses=[0, 200, 0, 0, 200], answer="Answer: A", usage=USAGE)
    out: dict[str, Result | TeacherError] = {}
    try:
        with pytest.raises(TeacherUnreachable) as err:
            OpenAITeacher(_params(ep.url, max_retries=0, max_consecutive_connection_failures=2)).generate(
                _requests(6), lambda req, res: out.__setitem__(req.prompt_id, res), lambda r: True
            )
    finally:
        ep.close()
    kinds = [v.kind if isinstance(v, TeacherError) else "ok" for v in out.values()]
    assert kinds == ["connection", "ok", "connection", "connection"] and ep.requests == 4
    assert f"2 items in a row could not reach {ep.url}" in str(err.value)
    assert ", 1 attempts each): stopped, 2 items not sent" in str(err.value)
    assert str(err.value).endswith("Is the server up at distill.base_url?")


def test_the_budget_stops_the_run_between_requests() -> None:
    ep = FlakyProxy(None, answer="Answer: A", usage=USAGE)
    asked: list[str] = []

    def reserve(req: Request) -> bool:
        asked.append(req.prompt_id)
        return len(asked) <= 2

    try:
        out = _run(_params(ep.url, concurrency=2), n=5, reserve=reserve)
    finally:
        ep.close()
    assert sorted(out) == ["p0", "p1"] and ep.requests == 2 and len(asked) <= 4


def test_concurrency_bounds_the_requests_in_flight() -> None:
    ep = FlakyProxy(None, answer="Answer: A", usage=USAGE, delay_s=0.15)
    try:
        out = _run(_params(ep.url, concurrency=3), n=6)
        one = _run(_params(ep.url, concurrency=1), n=1)
    finally:
        ep.close()
    assert len(out) == 6 and len(one) == 1 and ep.max_in_flight == 3


def test_the_api_key_comes_from_the_named_variable_only(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = FlakyProxy(None, answer="Answer: A", usage=USAGE)
    try:
        monkeypatch.delenv("TEACHER_KEY_FOR_TEST", raising=False)
        with pytest.raises(
            TeacherError, match="TEACHER_KEY_FOR_TEST .distill.api_key_env. is not set"
        ) as err:
            _run(_params(ep.url, api_key_env="TEACHER_KEY_FOR_TEST"))
        assert err.value.kind == "auth" and ep.requests == 0
        monkeypatch.setenv("TEACHER_KEY_FOR_TEST", "sk-test")
        _run(_params(ep.url, api_key_env="TEACHER_KEY_FOR_TEST"))
        _run(_params(ep.url))
    finally:
        ep.close()
    assert ep.auth_headers == ["Bearer sk-test", "Bearer not-needed"]


def test_the_reasoning_a_server_returns_apart_is_found_in_either_field() -> None:
    def msg(**extra) -> ChatCompletionMessage:
        return ChatCompletionMessage.model_validate({"role": "assistant", "content": "B", **extra})

    assert reasoning_field(msg(reasoning_content="because")) == "because"
    assert reasoning_field(msg(reasoning="vllm style")) == "vllm style"
    assert reasoning_field(msg(reasoning_content="  ", reasoning="second")) == "second"
    assert reasoning_field(msg(reasoning_content=3)) is None and reasoning_field(msg()) is None


def test_run_coroutine_works_inside_a_running_loop_and_raises_the_coroutine_error() -> None:
    async def value() -> int:
        return 7

    async def fails() -> None:
        raise TeacherError("x", "boom")

    async def from_a_notebook() -> int:  # Jupyter's loop is already running when a cell calls generate()
        return teachers.run_coroutine(value())

    assert asyncio.run(from_a_notebook()) == 7 and teachers.run_coroutine(value()) == 7
    with pytest.raises(TeacherError, match="boom"):
        teachers.run_coroutine(fails())


@pytest.fixture(scope="module")
def tiny() -> str:
    return str(cached_tiny_model())


@functools.lru_cache(maxsize=4)
def _loaded(model_dir: str):
    """Tokenizer and model of a test model folder, loaded once (each folder is written once, before its first read)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir).eval()


def _alone(model_dir: str, messages: list[dict[str, str]], max_new: int, **sampling) -> tuple[list[int], int]:
    """What the model generates for one prompt on its own (no batch, no padding): new ids, prompt length."""
    import torch

    tok, model = _loaded(model_dir)
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new, pad_token_id=tok.pad_token_id, **sampling)
    width = ids["input_ids"].shape[1]
    return out[0, width:].tolist(), width


def _check_like_alone(model_dir: str, reqs: list[Request], out: dict, max_new: int) -> None:
    """Each batched result is what the model writes for its prompt alone: the text and count up to its end token,
    its real prompt length, and why it stopped."""
    tok, _ = _loaded(model_dir)
    for req in reqs:
        new, width = _alone(model_dir, req.messages, max_new, do_sample=False)
        written = new[: new.index(tok.eos_token_id) + 1] if tok.eos_token_id in new else new
        r = out[req.prompt_id]
        assert isinstance(r, Result) and r.text == tok.decode(written, skip_special_tokens=True)
        assert (r.prompt_tokens, r.completion_tokens) == (width, len(written))
        assert r.finish_reason == ("stop" if tok.eos_token_id in new else "length") and r.latency_s >= 0


def test_the_local_teacher_batches_like_one_prompt_at_a_time(tiny: str) -> None:
    """Batched generation (left padding, several prompts of different lengths) gives each prompt what the model
    gives it alone, with its real prompt length, the new tokens it wrote (padding not counted) and why it stopped."""
    texts = [
        "ما عاصمة المغرب؟",
        "Which planet is red? A) Venus B) Mars",
        "اكتب جملة عن فضل القراءة في حياة الإنسان.",
    ]
    reqs = [Request(f"k{i}", f"p{i}", [{"role": "user", "content": t}]) for i, t in enumerate(texts)]
    p = DistillParams(backend="transformers", teacher=tiny, max_new_tokens=6, batch_size=2, temperature=None)
    out = _collect(TransformersTeacher(p, tiny, device="cpu"), reqs)
    assert list(out) == ["p0", "p1", "p2"]
    _check_like_alone(tiny, reqs, out, 6)


def test_the_local_teacher_samples_with_the_params_and_stops_on_the_budget(tiny: str) -> None:
    import torch

    reqs = [Request(f"k{i}", f"p{i}", [{"role": "user", "content": f"سؤال رقم {i}"}]) for i in range(3)]
    p = DistillParams(
        backend="transformers", teacher=tiny, max_new_tokens=5, batch_size=3, temperature=1.3, top_p=0.8
    )
    torch.manual_seed(5)
    out = _collect(TransformersTeacher(p, tiny, device="cpu"), reqs, lambda r: r.prompt_id != "p1")
    assert list(out) == ["p0"]  # reserved before the budget said no to p1: answered; nothing after p1 is sent
    torch.manual_seed(5)
    new, _ = _alone(tiny, reqs[0].messages, 5, do_sample=True, temperature=1.3, top_p=0.8)
    tok, _ = _loaded(tiny)
    assert out["p0"].text == tok.decode(new, skip_special_tokens=True)
    assert TransformersTeacher(p, tiny).teacher_id == tiny


def test_replay_answers_nothing_it_has_not_cached(tmp_path) -> None:
    """The miss names the prompt by its id and its user text's first 60 characters ('' when it has none)."""
    (tmp_path / "cache").mkdir()
    p = DistillParams(backend="replay", teacher="nobody", cache_dir=tmp_path / "cache", template_version="v2")
    user = "ما عاصمة المغرب؟ " * 6
    req = Request("k1", "p7", [{"role": "system", "content": "s"}, {"role": "user", "content": user}])
    with pytest.raises(TeacherError) as err:
        ReplayTeacher(p, lambda key: None).generate([req], lambda r, res: None, lambda r: True)
    assert err.value.kind == "cache_miss" and err.value.attempts == 1
    assert str(err.value).startswith(
        f"replay: no cached response for prompt p7 ({user[:60]!r}...) with teacher 'nobody', template v2"
    )
    system_only = Request("k2", "p8", [{"role": "system", "content": "s"}])
    with pytest.raises(TeacherError, match=r"prompt p8 \(''\.\.\.\)"):
        ReplayTeacher(p, lambda key: None).generate([system_only], lambda r, res: None, lambda r: True)


def _model_with(src: str, dst, eos_id: int | None = None, pad: bool = True) -> str:
    """A copy of the tiny model whose end-of-sequence token is ``eos_id`` (one the model does write, so sequences
    of a batch end at different steps), or whose tokenizer has no padding token (as many base models ship)."""
    import json
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(src, dst)
    tok = AutoTokenizer.from_pretrained(dst)
    if eos_id is not None:
        for name in ("config.json", "generation_config.json"):
            cfg = json.loads((dst / name).read_text(encoding="utf-8"))
            cfg["eos_token_id"] = eos_id
            (dst / name).write_text(json.dumps(cfg), encoding="utf-8")
        tok.eos_token = tok.convert_ids_to_tokens(eos_id)
    if not pad:
        tok.pad_token = None
    tok.save_pretrained(dst)
    return str(dst)


@pytest.mark.parametrize("pad", [True, False], ids=["pad_token", "no_pad_token"])
def test_a_batch_whose_sequences_end_early_counts_only_what_each_wrote(
    tiny: str, tmp_path, pad: bool
) -> None:
    """One prompt of the batch hits its end token after a few tokens while the other goes on: its text and token
    count stop there (the padding after it is neither counted nor decoded, also when the tokenizer has no padding
    token and pads with the end token itself) and it reports "stop"; the latency of a batch is shared."""
    msgs = [
        [{"role": "user", "content": "ما عاصمة المغرب؟"}],
        [{"role": "user", "content": "Which planet is red?"}],
    ]
    first, _ = _alone(tiny, msgs[0], 8, do_sample=False)
    model = _model_with(tiny, tmp_path / "eos", eos_id=first[2], pad=pad)  # prompt 0's third token ends it
    reqs = [Request(f"k{i}", f"p{i}", m) for i, m in enumerate(msgs)]
    p = DistillParams(backend="transformers", teacher=model, max_new_tokens=8, batch_size=2, temperature=None)
    t0 = time.monotonic()
    out = _collect(TransformersTeacher(p, model, device="cpu"), reqs)
    elapsed = time.monotonic() - t0
    _check_like_alone(model, reqs, out, 8)
    assert out["p0"].completion_tokens == 3 and "<|" not in out["p0"].text
    assert out["p0"].finish_reason == "stop" and out["p1"].completion_tokens > 3
    assert 0 < out["p0"].latency_s == out["p1"].latency_s and out["p0"].latency_s * 2 <= elapsed
    assert out["p0"].latency_s == round(out["p0"].latency_s, 3)  # milliseconds, like the OpenAI client's


def test_a_tokenizer_without_a_padding_token_still_batches(tiny: str, tmp_path) -> None:
    model = _model_with(tiny, tmp_path / "nopad", pad=False)
    reqs = [
        Request(f"k{i}", f"p{i}", [{"role": "user", "content": t}])
        for i, t in enumerate(["سؤال", "a longer English question"])
    ]
    p = DistillParams(backend="transformers", teacher=model, max_new_tokens=4, batch_size=2, temperature=None)
    out = _collect(TransformersTeacher(p, model, device="cpu"), reqs)
    assert [r.completion_tokens for r in out.values()] == [4, 4]  # the end token pads: every new token counts


def test_the_local_teacher_takes_the_gpu_only_when_asked_and_present(
    tiny: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``device`` auto/cuda uses a GPU torch can see; cpu never does. (Here torch is told it sees one: a CPU build
    then fails the moment the model is moved, which is how the choice shows.)"""
    import torch

    if torch.version.cuda is not None:
        pytest.skip("a CUDA build of torch really moves the model; this test needs the CPU build's refusal")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    p = DistillParams(backend="transformers", teacher=tiny, max_new_tokens=2, temperature=None)
    req = [Request("k", "p", [{"role": "user", "content": "سؤال"}])]
    assert isinstance(_collect(TransformersTeacher(p, tiny, device="cpu"), req)["p"], Result)
    for teacher in (
        TransformersTeacher(p, tiny),
        TransformersTeacher(p, tiny, device="cuda"),
    ):  # auto by default
        with pytest.raises(AssertionError, match="Torch not compiled with CUDA enabled"):
            teacher.generate(req, lambda r, res: None, lambda r: True)


def test_a_sequence_ends_at_any_of_its_end_tokens() -> None:
    """The generation config may list several end tokens (Qwen: <|im_end|> and <|endoftext|>) beside the
    tokenizer's own; a sequence's written tokens stop at the first of any of them."""
    from types import SimpleNamespace

    from transformers import GenerationConfig

    from arabic_r1.teachers import stop_ids, written

    def model(eos):
        return SimpleNamespace(generation_config=GenerationConfig(eos_token_id=eos))

    tok = SimpleNamespace(eos_token_id=2)
    assert stop_ids(tok, model([5, 7])) == {2, 5, 7} and stop_ids(tok, model(9)) == {2, 9}
    assert (
        stop_ids(tok, model(None)) == {2}
        and stop_ids(SimpleNamespace(eos_token_id=None), model(None)) == set()
    )
    assert written([4, 7, 0, 0], {2, 7}) == [4, 7] and written([4, 3, 3], {2}) == [4, 3, 3]
