"""Screenshot an executed notebook as JupyterLab shows it (the README's picture of notebook 06).

    python scripts/lab_screenshot.py runs/smoke/notebooks/06_paper_report.ipynb docs/notebook_06_lab.png

Starts JupyterLab on a free 127.0.0.1 port (a private token, Jupyter's news prompt off), opens the notebook in
headless Chromium (Debian: ``apt-get install chromium fonts-noto-core``), writes the PNG and stops the server it
started, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebook", type=Path, help="an executed notebook inside the repository")
    ap.add_argument("out", type=Path, help="the PNG to write")
    ap.add_argument("--size", default="1280,2200", help="browser window WIDTH,HEIGHT (default 1280,2200)")
    args = ap.parse_args()
    browser = next((c for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)
    if browser is None:
        sys.exit("no headless Chromium: apt-get install chromium fonts-noto-core")
    notebook = args.notebook.resolve()
    if not notebook.is_file() or not notebook.is_relative_to(REPO):
        sys.exit(f"{args.notebook}: not a notebook inside {REPO}")
    with tempfile.TemporaryDirectory() as tmp:
        settings = Path(tmp) / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
        port, token = free_port(), "screenshot"
        lab = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--allow-root",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}"],
            env={**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(Path(tmp) / "settings")},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                    break
                except OSError:
                    if lab.poll() is not None or time.monotonic() > deadline:
                        sys.exit("JupyterLab did not start")
                    time.sleep(0.5)
            url = f"{base}/lab/tree/{notebook.relative_to(REPO).as_posix()}?token={token}"
            args.out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 f"--window-size={args.size}", f"--screenshot={args.out.resolve()}", "--virtual-time-budget=25000",
                 url], check=True, capture_output=True, timeout=180,
            )  # fmt: skip
        finally:
            lab.terminate()
            try:
                lab.wait(timeout=20)
            except subprocess.TimeoutExpired:
                lab.kill()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
