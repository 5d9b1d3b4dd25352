"""A real OpenAI-compatible server for tests: ``transformers serve`` on the tiny model, plus a flaky proxy."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServedModel:
    """``transformers serve <dir>`` on 127.0.0.1, offline (HF_HUB_OFFLINE=1, its own HF_HOME)."""

    def __init__(self, model_dir: Path, home: Path):
        self.model = str(model_dir)
        self.port = free_port()
        (home / "hub").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home)}
        exe = Path(sys.executable).parent / "transformers"
        self.log = (home / "serve.log").open("w")
        self.proc = subprocess.Popen(
            [str(exe), "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=2).read()
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if self.proc.poll() is not None:
                    break
                time.sleep(0.5)
        self.close()
        raise RuntimeError(f"transformers serve did not start; see {home / 'serve.log'}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class FlakyProxy:
    """Forwards to ``upstream``; the first ``fail_first`` requests get ``status`` instead. Counts what it saw.

    Without ``upstream`` it is the endpoint itself and answers every request it does not fail with a canned chat
    completion (``answer``, with ``usage`` unless it is None): the teacher client's unit tests, in milliseconds."""

    def __init__(
        self, upstream: str | None, fail_first: int = 0, status: int = 429, statuses: list[int] | None = None,
        reasoning_field: str | None = None, answer: str | Callable[[dict], str] = "", delay_s: float = 0.0,
        retry_after: str | None = "0",
        usage: dict | None = None, thought: str = "",
    ):  # fmt: skip
        """``reasoning_field``: answer as a server with a reasoning parser does: the model's text moved into
        ``message.<reasoning_field>``, ``answer`` as the content. ``delay_s``: wait that long before answering (a
        slow server, for the client's timeout). ``retry_after``: the Retry-After header of a failure (None: none).
        ``thought``: without ``upstream``, the model text a reasoning parser moves into ``reasoning_field``.
        ``answer`` may be a function of the request body (a judge that reads what it is asked)."""
        self.upstream = upstream.rstrip("/") if upstream else None
        self.plan = list(statuses) if statuses is not None else [status] * fail_first
        self.requests = 0
        self.forwarded = 0
        self.auth_headers: list[str] = []
        self.bodies: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        proxy = self
        said = answer if callable(answer) else lambda body: answer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    proxy.requests += 1
                    proxy.auth_headers.append(self.headers.get("Authorization", ""))
                    proxy.bodies.append(json.loads(body or b"{}"))
                    fail = proxy.plan.pop(0) if proxy.plan else None
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                try:
                    self._answer(body, None if fail == 200 else fail)
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1

            def _answer(self, body: bytes, fail: int | None) -> None:
                time.sleep(delay_s)
                if fail == 0:  # a dropped connection: no response at all
                    self.close_connection = True
                    return
                if fail is not None:
                    payload = json.dumps({"error": {"message": f"injected {fail}", "type": "test"}}).encode()
                    self.send_response(fail)
                    self.send_header("Content-Type", "application/json")
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if proxy.upstream is None:
                    data = json.dumps(
                        canned_completion(thought if reasoning_field else said(json.loads(body)), usage)
                    ).encode()
                else:
                    req = urllib.request.Request(
                        proxy.upstream + self.path.removeprefix("/v1"),
                        data=body,
                        headers={"Content-Type": "application/json"},
                    )
                    with urllib.request.urlopen(req, timeout=120) as resp:
                        data = resp.read()
                if reasoning_field:
                    reply = json.loads(data)
                    for choice in reply["choices"]:
                        msg = choice["message"]
                        msg[reasoning_field], msg["content"] = msg.get("content") or "", answer
                    data = json.dumps(reply).encode()
                with proxy.lock:
                    proxy.forwarded += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # a short poll: close() waits for the serving loop to notice, 0.5 s per proxy at the default
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def canned_completion(content: str, usage: dict | None) -> dict:
    """A chat completion as an OpenAI-compatible server returns it."""
    reply = {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "canned",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
    }  # fmt: skip
    if usage is not None:
        reply["usage"] = usage
    return reply
