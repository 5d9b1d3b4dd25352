"""JupyterLab front door: a real JupyterLab server on 127.0.0.1 runs notebook 00 through its kernel API, with the
project's kernel registered the way `make lab` registers it; plain papermill runs a notebook on its own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from conftest import copy_smoke_project

REPO = Path(__file__).resolve().parents[1]
TOKEN = "arabic-r1-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 serving a scratch copy of the project, with the `arabic-r1` kernel registered
    (`python -m ipykernel install --name arabic-r1`, as `make lab` does, into a private prefix)."""
    root = tmp_path_factory.mktemp("lab")
    (root / "project").mkdir()
    project = copy_smoke_project(root / "project")
    prefix = root / "jupyter"
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", "arabic-r1",
                    "--display-name", "arabic_r1 (.venv)"], check=True, capture_output=True)  # fmt: skip
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
        "JUPYTER_RUNTIME_DIR": str(root / "rt"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={TOKEN}", "--allow-root", f"--ServerApp.root_dir={project / 'notebooks'}"],
        env=env, stdout=subprocess.DEVNULL, stderr=(root / "lab.log").open("w"),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if requests.get(f"{base}/api/status", params={"token": TOKEN}, timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield base, project
    proc.terminate()
    proc.wait(timeout=30)


def _get(base: str, path: str) -> requests.Response:
    r = requests.get(f"{base}{path}", headers={"Authorization": f"token {TOKEN}"}, timeout=30)
    r.raise_for_status()
    return r


def _execute(base: str, kernel_id: str, code: str, timeout: float = 300) -> list[dict]:
    """One execute_request over the kernel's websocket; the iopub messages it produced, until the kernel is idle."""
    from tornado.ioloop import IOLoop
    from tornado.websocket import websocket_connect

    async def run() -> list[dict]:
        ws = await websocket_connect(
            f"{base.replace('http', 'ws')}/api/kernels/{kernel_id}/channels?token={TOKEN}"
        )
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                  "version": "5.3", "date": ""}  # fmt: skip
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
        }
        await ws.write_message(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": content,
                                           "channel": "shell", "buffers": []}))  # fmt: skip
        out: list[dict] = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            raw = await ws.read_message()
            if raw is None:
                break
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id or msg.get("channel") != "iopub":
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                ws.close()
                return out
            out.append(msg)
        ws.close()
        raise TimeoutError(f"cell did not finish in {timeout}s: {code[:80]!r}")

    return IOLoop.current().run_sync(run, timeout=timeout + 30)


def test_jupyterlab_runs_notebook_00_through_its_kernel(lab):
    base, project = lab
    assert "JupyterLab" in _get(base, "/lab").text  # the Lab UI itself is served
    specs = _get(base, "/api/kernelspecs").json()["kernelspecs"]
    assert specs["arabic-r1"]["spec"]["argv"][0] == sys.executable  # the project's environment
    nb = _get(base, "/api/contents/00_environment.ipynb").json()["content"]
    session = requests.post(
        f"{base}/api/sessions",
        headers={"Authorization": f"token {TOKEN}"},
        json={"path": "00_environment.ipynb", "type": "notebook", "kernel": {"name": "arabic-r1"}},
        timeout=60,
    ).json()
    kernel_id = session["kernel"]["id"]
    outputs = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        msgs = _execute(base, kernel_id, cell["source"])
        errors = [m["content"] for m in msgs if m["msg_type"] == "error"]
        assert not errors, (
            f"cell failed: {cell['source'][:120]!r}: {errors[0]['ename']}: {errors[0]['evalue']}"
        )
        outputs += msgs
    text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    stderr = [
        m["content"]["text"]
        for m in outputs
        if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"
    ]
    shown = [m["content"]["data"] for m in outputs if m["msg_type"] in ("execute_result", "display_data")]
    html = "".join(d.get("text/html", "") for d in shown)
    run_dir = project / "runs" / "smoke"
    assert "run folder: runs/smoke" in text and str(project) not in text + html  # no machine path shown
    assert (
        "unsloth" in html and "lighteval offline" in html and "00_environment/base_model" in html
    )  # the tables
    assert not stderr, f"a live notebook shows no warnings or library logs: {stderr}"
    manifest = json.loads((run_dir / "00_environment" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    requests.delete(
        f"{base}/api/sessions/{session['id']}", headers={"Authorization": f"token {TOKEN}"}, timeout=30
    )


def test_plain_papermill_runs_a_single_notebook(tmp_path: Path):
    """`papermill notebooks/00_environment.ipynb out.ipynb -p params_path ...` as its docs use it, no runner."""
    project = copy_smoke_project(tmp_path)
    out = tmp_path / "out.ipynb"
    env = {k: v for k, v in os.environ.items() if k != "ARABIC_R1_PIPELINE"}
    subprocess.run(
        [sys.executable, "-m", "papermill", str(project / "notebooks" / "00_environment.ipynb"), str(out),
         "-p", "params_path", str(project / "params" / "smoke.yaml"), "--cwd", str(project / "notebooks"),
         "-k", "python3", "--no-progress-bar"],
        check=True, capture_output=True, env=env, timeout=600,
    )  # fmt: skip
    executed = json.loads(out.read_text())
    assert executed["metadata"]["papermill"]["exception"] is None
    manifest = json.loads((project / "runs" / "smoke" / "00_environment" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
