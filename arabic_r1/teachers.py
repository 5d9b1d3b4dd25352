"""Teacher backends behind one interface: an OpenAI-compatible endpoint, local transformers, vLLM, replay.

A backend only turns requests into results; the caller (:mod:`arabic_r1.distill`) owns the cache, the budget and
the trace file. ``generate`` calls ``on_result`` for every request it finished (success or :class:`TeacherError`)
and asks ``reserve`` before sending each one, so a budget can stop a run between requests.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from arabic_r1.errors import ExplainedError
from arabic_r1.params import DistillParams
from arabic_r1.reasoning_format import with_reasoning

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    key: str  # cache key
    prompt_id: str
    messages: list[dict[str, str]]
    prompt_tokens_estimate: int = 0


@dataclass
class Result:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str | None = None
    attempts: int = 1


class TeacherUnreachable(ExplainedError, RuntimeError):
    """Several items in a row could not reach the endpoint: the run stops instead of failing every item."""


class TeacherError(Exception):
    """A request that failed for good; ``kind`` is what the summary counts (http_429, server_error, timeout, ...)."""

    def __init__(self, kind: str, message: str, attempts: int = 1):
        super().__init__(message)
        self.kind = kind
        self.attempts = attempts


OnResult = Callable[[Request, "Result | TeacherError"], None]
UNREACHABLE = ("connection", "timeout")  # failure kinds that say the endpoint itself is not answering
Reserve = Callable[[Request], bool]  # False: the budget is spent, send nothing more


class Teacher(Protocol):
    teacher_id: str

    def generate(self, requests: Sequence[Request], on_result: OnResult, reserve: Reserve) -> None: ...


def sampling_of(p: DistillParams) -> dict[str, Any]:
    """The sampling parameters that change a response (part of every cache key)."""
    return {"temperature": p.temperature, "top_p": p.top_p, "max_new_tokens": p.max_new_tokens}


# --------------------------------------------------------------------------------------------- OpenAI
class OpenAITeacher:
    """Any OpenAI-compatible chat endpoint (OpenAI, DeepSeek, vLLM/SGLang servers, ``transformers serve``).

    Bounded concurrency, and our own retries with exponential backoff + jitter on 429, 5xx, timeouts and dropped
    connections (honouring ``Retry-After``), so each retry is counted. A server that returns the think block apart
    from the answer (a reasoning parser) gets its trace rebuilt with the block (:func:`reasoning_field`). The key is read from the environment
    variable named in params, here and nowhere else, and never logged or stored.
    """

    def __init__(self, p: DistillParams):
        self.p = p
        self.teacher_id = p.teacher

    def _client(self):
        from openai import AsyncOpenAI

        key = os.environ.get(self.p.api_key_env, "") if self.p.api_key_env else ""
        if self.p.api_key_env and not key:
            raise TeacherError(
                "auth", f"environment variable {self.p.api_key_env} (distill.api_key_env) is not set"
            )
        return AsyncOpenAI(
            base_url=self.p.base_url,
            api_key=key or "not-needed",
            max_retries=0,
            timeout=self.p.request_timeout_s,
        )

    def generate(self, requests: Sequence[Request], on_result: OnResult, reserve: Reserve) -> None:
        run_coroutine(self._generate(requests, on_result, reserve))

    async def _generate(self, requests: Sequence[Request], on_result: OnResult, reserve: Reserve) -> None:
        client = self._client()
        queue = list(requests)
        stop = asyncio.Event()
        in_a_row = 0  # items that could not reach the endpoint, since the last one that did

        async def worker() -> None:
            nonlocal in_a_row
            while queue and not stop.is_set():
                req = queue.pop(0)
                if not reserve(req):
                    stop.set()
                    return
                try:
                    outcome: Result | TeacherError = await self._one(client, req)
                except TeacherError as err:
                    outcome = err
                unreachable = isinstance(outcome, TeacherError) and outcome.kind in UNREACHABLE
                in_a_row = in_a_row + 1 if unreachable else 0
                on_result(req, outcome)
                if in_a_row >= self.p.max_consecutive_connection_failures:
                    stop.set()

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.p.concurrency, len(queue)) or 1)))
        finally:
            await client.close()
        if in_a_row >= self.p.max_consecutive_connection_failures:
            raise TeacherUnreachable(
                f"{in_a_row} items in a row could not reach {self.p.base_url} (connection refused or no answer "
                f"within distill.request_timeout_s={self.p.request_timeout_s:g}s, {self.p.max_retries + 1} attempts "
                f"each): stopped, {len(queue)} items not sent (they are sent by the next run). Is the server up at "
                "distill.base_url?"
            )

    async def _one(self, client, req: Request) -> Result:
        import openai

        kwargs: dict[str, Any] = {self.p.max_tokens_param: self.p.max_new_tokens}
        if self.p.temperature is not None:
            kwargs["temperature"] = self.p.temperature
        if self.p.top_p is not None:
            kwargs["top_p"] = self.p.top_p
        for attempt in itertools.count(1):  # ends by returning, or by raising after max_retries retries
            t0 = time.monotonic()
            try:
                resp = await client.chat.completions.create(
                    model=self.p.teacher, messages=req.messages, **kwargs
                )
            except openai.RateLimitError as exc:
                kind, retry_after = "http_429", _retry_after(exc)
            except openai.APITimeoutError:
                kind, retry_after = "timeout", None
            except openai.APIConnectionError:
                kind, retry_after = "connection", None
            except openai.InternalServerError as exc:
                kind, retry_after = f"http_{exc.status_code}", _retry_after(exc)
            except openai.APIStatusError as exc:  # 4xx other than 429: retrying will not help
                raise TeacherError(
                    f"http_{exc.status_code}", f"{req.prompt_id}: {exc.message}", attempt
                ) from None
            else:
                choice = resp.choices[0]
                usage = resp.usage
                return Result(
                    text=with_reasoning(choice.message.content or "", reasoning_field(choice.message)),
                    prompt_tokens=usage.prompt_tokens if usage else req.prompt_tokens_estimate,
                    completion_tokens=usage.completion_tokens if usage else 0,
                    latency_s=round(time.monotonic() - t0, 3),
                    finish_reason=choice.finish_reason,
                    attempts=attempt,
                )
            if attempt > self.p.max_retries:
                raise TeacherError(
                    kind, f"{req.prompt_id}: gave up after {attempt} attempts ({kind})", attempt
                )
            delay = (
                retry_after
                if retry_after is not None
                else min(self.p.backoff_max_s, self.p.backoff_initial_s * 2 ** (attempt - 1))
            )
            delay *= 1 + 0.25 * random.random()
            log.info("%s: %s, retry %d/%d in %.1fs", req.prompt_id, kind, attempt, self.p.max_retries, delay)
            await asyncio.sleep(delay)


REASONING_FIELDS = ("reasoning_content", "reasoning")  # DeepSeek API / vLLM<0.10 / SGLang; vLLM >= 0.10


def reasoning_field(message: Any) -> str | None:
    """The reasoning a server returned beside the answer (the client keeps unknown fields as attributes)."""
    for name in REASONING_FIELDS:
        value = getattr(message, name, None)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _retry_after(exc) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None


def run_coroutine(coro) -> Any:
    """Run a coroutine to completion from sync code, also inside Jupyter (whose loop is already running)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="teacher-requests")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


# --------------------------------------------------------------------------------------- transformers
class TransformersTeacher:
    """A local model through ``generate`` (CPU or GPU), batched; the embedded model in the smoke profile."""

    def __init__(self, p: DistillParams, model_path: str, device: str = "auto"):
        self.p = p
        self.teacher_id = p.teacher  # make_teacher names an embedded teacher by its weights' digest
        self.model_path = model_path
        self.device = device

    def generate(self, requests: Sequence[Request], on_result: OnResult, reserve: Reserve) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.model_path)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        device = "cuda" if self.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype="auto").to(device).eval()
        sampling = {"do_sample": bool(self.p.temperature), "max_new_tokens": self.p.max_new_tokens}
        if self.p.temperature:
            sampling["temperature"] = self.p.temperature
        if self.p.top_p is not None:
            sampling["top_p"] = self.p.top_p
        stops = stop_ids(tok, model)
        pending = list(requests)
        while pending:
            batch = []
            while pending and len(batch) < self.p.batch_size:
                if not reserve(pending[0]):
                    pending.clear()
                    break
                batch.append(pending.pop(0))
            if not batch:
                return
            t0 = time.monotonic()
            enc = tok.apply_chat_template(
                [r.messages for r in batch],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
                padding=True,
            ).to(device)
            with torch.no_grad():
                out = model.generate(**enc, pad_token_id=tok.pad_token_id, **sampling)
            latency = (time.monotonic() - t0) / len(batch)
            width = enc["input_ids"].shape[1]
            for i, req in enumerate(batch):
                new = written(out[i, width:].tolist(), stops)
                on_result(
                    req,
                    Result(
                        text=tok.decode(new, skip_special_tokens=True),
                        prompt_tokens=int(enc["attention_mask"][i].sum()),
                        completion_tokens=len(new),
                        latency_s=round(latency, 3),
                        finish_reason="stop" if new and new[-1] in stops else "length",
                    ),
                )


def written(new_ids: list[int], stops: set[int]) -> list[int]:
    """The tokens a sequence of a batch wrote: up to its first end token. ``generate`` pads a finished sequence
    until the batch ends, with the end token itself when the tokenizer has no padding token, so counting the ids
    that are not padding would count that padding as written."""
    end = next((i + 1 for i, t in enumerate(new_ids) if t in stops), len(new_ids))
    return new_ids[:end]


def stop_ids(tokenizer: Any, model: Any) -> set[int]:
    """The ids that end a sequence: the tokenizer's end token and the generation config's (Qwen's lists two)."""
    eos = model.generation_config.eos_token_id
    configured = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return {tokenizer.eos_token_id, *configured} - {None}


# ----------------------------------------------------------------------------------------------- vLLM
class VLLMTeacher:
    """vLLM's offline engine on this machine's GPUs (imported only when chosen)."""

    def __init__(self, p: DistillParams, model_path: str, tensor_parallel_size: int = 1):
        self.p = p
        self.teacher_id = p.teacher
        self.model_path = model_path
        self.tensor_parallel_size = tensor_parallel_size

    def sampling_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_tokens": self.p.max_new_tokens}
        if self.p.temperature is not None:
            kw["temperature"] = self.p.temperature
        if self.p.top_p is not None:
            kw["top_p"] = self.p.top_p
        return kw

    def generate(
        self, requests: Sequence[Request], on_result: OnResult, reserve: Reserve
    ) -> None:  # pragma: no mutate block - needs vLLM on a GPU: no test here can run it
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise RuntimeError(
                "distill.backend=vllm_in_process needs vLLM on a GPU machine: pip install vllm"
            ) from exc
        chosen = []
        for req in requests:
            if not reserve(req):
                break
            chosen.append(req)
        if not chosen:
            return
        llm = LLM(model=self.model_path, tensor_parallel_size=self.tensor_parallel_size)
        t0 = time.monotonic()
        outputs = llm.chat(
            [r.messages for r in chosen], SamplingParams(**self.sampling_kwargs()), use_tqdm=False
        )
        latency = (time.monotonic() - t0) / len(chosen)
        for req, out in zip(chosen, outputs, strict=True):
            gen = out.outputs[0]
            on_result(
                req,
                Result(
                    gen.text,
                    len(out.prompt_token_ids),
                    len(gen.token_ids),
                    round(latency, 3),
                    gen.finish_reason,
                ),
            )


# --------------------------------------------------------------------------------------------- replay
class ReplayTeacher:
    """Answers only from the cache: a run that must not spend anything, or the offline smoke profile."""

    def __init__(self, p: DistillParams, lookup: Callable[[str], dict[str, Any] | None]):
        self.p = p
        self.teacher_id = p.teacher
        self.lookup = lookup

    def generate(self, requests: Sequence[Request], on_result: OnResult, reserve: Reserve) -> None:
        for req in requests:
            if self.lookup(req.key) is None:
                user = next((m["content"] for m in req.messages if m["role"] == "user"), "")
                raise TeacherError(
                    "cache_miss",
                    f"replay: no cached response for prompt {req.prompt_id} ({user[:60]!r}...) with teacher "
                    f"{self.teacher_id!r}, template {self.p.template_version}, sampling {sampling_of(self.p)} in {self.p.cache_dir}",
                )
