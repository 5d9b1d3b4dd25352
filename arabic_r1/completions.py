"""Cached, budgeted chat completions through any teacher backend: the LLM service three phases share.

Phase 02 (the teacher writing traces), phase 03's regional-norms judge and phase 05's ALRAGE judge all call a model
the same way: a content-addressed response cache (teacher id + template version + messages + sampling -> response,
written the moment a response arrives, so re-runs are free and a killed run loses nothing), a request and token
budget (tokens reserved before each request), and one of the backends of ``teachers.py``.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from arabic_r1.digests import json_digest, path_digest
from arabic_r1.jsonl import read_jsonl, write_json_atomic
from arabic_r1.params import DistillParams
from arabic_r1.teachers import (
    OpenAITeacher,
    ReplayTeacher,
    Request,
    Result,
    Teacher,
    TeacherError,
    TransformersTeacher,
    VLLMTeacher,
    sampling_of,
)

log = logging.getLogger(__name__)

CHARS_PER_TOKEN_ESTIMATE = 2.5  # only for reserving budget before a request; usage comes from the teacher


# ---------------------------------------------------------------------------------------------- cache
def cache_key(
    teacher_id: str, template_version: str, messages: list[dict[str, str]], sampling: dict[str, Any]
) -> str:
    payload = {
        "teacher": teacher_id,
        "template": template_version,
        "messages": messages,
        "sampling": sampling,
    }
    return json_digest(payload, length=64)  # full length: existing teacher caches keep their keys


class ResponseCache:
    """One JSON file per key under ``root/<key[:2]>/``, written atomically and never modified; plus read-only
    *packs* (``root/*.jsonl``, one entry per line) for caches that are shipped or imported whole."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._packs: dict[str, dict[str, Any]] | None = None

    def _pack_index(self) -> dict[str, dict[str, Any]]:
        if self._packs is None:
            self._packs = {}
            for f in sorted(self.root.glob("*.jsonl")):  # read-only: a torn last line is skipped, not cut
                self._packs.update((e["key"], e) for e in read_jsonl(f, key="key"))
        return self._packs

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.path(key)
        if not p.is_file():
            return self._pack_index().get(key)
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            log.warning("unreadable cache entry %s ignored (it will be regenerated)", p)
            return None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(p, entry, indent=None)


# --------------------------------------------------------------------------------------------- budget
@dataclass
class Budget:
    """Requests and tokens this run may spend; a request reserves prompt estimate + max_new_tokens up front."""

    max_requests: int | None
    max_tokens: int | None
    max_new_tokens: int
    requests: int = 0
    tokens: int = 0
    reserved: int = 0
    reached: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reserve(self, req: Request) -> bool:
        need = req.prompt_tokens_estimate + self.max_new_tokens
        with self._lock:
            if self.max_requests is not None and self.requests >= self.max_requests:
                self.reached = self.reached or f"max_requests={self.max_requests}"
                return False
            if self.max_tokens is not None and self.tokens + self.reserved + need > self.max_tokens:
                self.reached = self.reached or f"max_total_tokens={self.max_tokens}"
                return False
            self.requests += 1
            self.reserved += need
            return True

    def settle(self, req: Request, spent: int) -> None:
        with self._lock:
            self.reserved -= req.prompt_tokens_estimate + self.max_new_tokens
            self.tokens += spent


# ------------------------------------------------------------------------------------------- requests
def make_teacher(p: DistillParams, cache: ResponseCache, base_model: str | None = None) -> Teacher:
    if p.backend == "openai":
        return OpenAITeacher(p)
    if p.backend == "replay":
        return ReplayTeacher(p, cache.get)
    path = base_model if p.teacher == "embedded" else p.teacher
    if path is None:
        raise ValueError("distill.teacher 'embedded' needs the run's base model (phase 00)")
    teacher = VLLMTeacher(p, path) if p.backend == "vllm_in_process" else TransformersTeacher(p, path)
    if p.teacher == "embedded":  # the id must change when the embedded model does, or the cache would lie
        teacher.teacher_id = f"embedded:{_short_digest(path)}"
    return teacher


def _short_digest(path: str) -> str:
    return path_digest(Path(path))[:12]


def make_request(key: str, request_id: str, messages: list[dict[str, str]]) -> Request:
    """A request with the prompt-token estimate its budget reservation needs (the teacher reports real usage)."""
    return Request(
        key, request_id, messages, int(sum(len(m["content"]) for m in messages) / CHARS_PER_TOKEN_ESTIMATE)
    )


def utc_now() -> str:
    """The timestamp every cache entry and trace record carries (UTC, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def complete_all(
    p: DistillParams, requests: list[tuple[str, list[dict[str, str]]]], template_id: str
) -> dict[str, str | TeacherError]:
    """Chat completions for ``[(id, messages), ...]`` through the configured backend, cache and budget: the
    machinery of distillation for other callers (the LLM judge). ``template_id`` versions the prompt in the key."""
    cache = ResponseCache(p.cache_dir)
    teacher = make_teacher(p, cache)
    sampling = sampling_of(p)
    out: dict[str, str | TeacherError] = {}
    pending: list[Request] = []
    by_key: dict[str, str] = {}
    for rid, messages in requests:
        key = cache_key(teacher.teacher_id, template_id, messages, sampling)
        entry = cache.get(key)
        if entry is not None:
            out[rid] = entry["text"]
        else:
            by_key[key] = rid
            pending.append(make_request(key, rid, messages))
    budget = Budget(p.max_requests, p.max_total_tokens, p.max_new_tokens)

    def on_result(req: Request, outcome: Result | TeacherError) -> None:
        if isinstance(outcome, TeacherError):
            budget.settle(req, 0)
            out[by_key[req.key]] = outcome
            return
        budget.settle(req, outcome.prompt_tokens + outcome.completion_tokens)
        cache.put(
            req.key,
            {
                "key": req.key,
                "teacher": teacher.teacher_id,
                "template_version": template_id,
                "sampling": sampling,
                "messages": req.messages,
                "text": outcome.text,
                "created_at": utc_now(),
                "usage": {
                    "prompt_tokens": outcome.prompt_tokens,
                    "completion_tokens": outcome.completion_tokens,
                },
            },
        )
        out[by_key[req.key]] = outcome.text

    if pending:
        teacher.generate(pending, on_result, budget.reserve)
    for req in pending:  # stopped by the budget
        out.setdefault(
            req.prompt_id,
            TeacherError("budget", f"{req.prompt_id}: not sent, budget reached ({budget.reached})"),
        )
    return out
