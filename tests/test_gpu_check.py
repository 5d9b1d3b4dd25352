"""The GPU check travels: its dry run builds every config and command here, the bundle's wheel pruning keeps a
wheel pip installs, and its report table reads what the steps write. `make gpu-bundle` itself (downloads ~130 MB,
runs phases 00-03) is slow-marked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from arabic_r1.params import REPO_DIR

sys.path.insert(0, str(REPO_DIR / "scripts"))
sys.path.insert(0, str(REPO_DIR / "benchmarks"))
import gpu_bundle  # noqa: E402
import gpu_report  # noqa: E402


def test_gpu_check_dry_run_builds_every_config_and_command() -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO_DIR / "benchmarks" / "gpu_check.sh"), "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "train.backend=unsloth train.precision=bf16; preflight: ok" in out
    assert "qwen3_moe gpu: qwen3_moe" in out and "64 experts top-8" in out
    assert "deepseek_v3 gpu: deepseek_v3" in out and "unsloth@unsloth_triton" in out


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    record = "".join(f"{name},,\n" for name in files) + "demo-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("demo-1.0.dist-info/RECORD", record)
    return path


def test_pruned_wheel_drops_the_files_and_their_record_lines_and_still_installs(tmp_path: Path) -> None:
    meta = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
    whl = _wheel(tmp_path / "demo-1.0-py3-none-any.whl", {
        "demo/__init__.py": b"X = 1\n", "demo/www/app.js": b"x" * 10_000,
        "demo-1.0.dist-info/METADATA": meta, "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    })  # fmt: skip
    gpu_bundle.prune_wheel(whl, ("demo/www/",))
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        record = z.read("demo-1.0.dist-info/RECORD").decode()
    assert "demo/www/app.js" not in names and "demo/__init__.py" in names and "www" not in record
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target),
                    str(whl)], check=True)  # fmt: skip
    assert (target / "demo" / "__init__.py").is_file() and not (target / "demo" / "www").exists()


def test_report_table_reads_what_the_steps_wrote(tmp_path: Path) -> None:
    (tmp_path / "qwen3_moe").mkdir()
    rows = [{"backend": "transformers", "moe_backend": "-", "seconds_per_step": 0.2, "tokens_per_s": 10240.0,
             "speed_vs_transformers": 1.0, "warmup_seconds": 3.1, "peak_memory_mb": 9000.0, "expert_grads_nonzero": True},
            {"backend": "unsloth@native_torch", "error": "Traceback\nRuntimeError: boom"}]  # fmt: skip
    (tmp_path / "qwen3_moe" / "results.json").write_text(json.dumps({"results": rows}))
    (tmp_path / "gpu_phases.json").write_text(json.dumps({"phase_04": {"seconds": 50}, "failures": []}))
    assert gpu_report.main.__module__ == "gpu_report"
    md = gpu_report.table(gpu_report.collect(tmp_path))
    assert "| qwen3_moe | transformers | - | 0.2 | 10240 | 1.0 | 3.1 | 9000 | non-zero |" in md
    assert "failed: RuntimeError: boom" in md and "phase 04 50 s" in md


@pytest.mark.slow
def test_gpu_bundle_fits_the_device_limit() -> None:
    done = subprocess.run([sys.executable, str(REPO_DIR / "scripts" / "gpu_bundle.py")], capture_output=True,
                          text=True, timeout=1800, cwd=REPO_DIR)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (REPO_DIR / ".gpu_bundle" / "run.tgz").is_file()
