"""The Colab/Kaggle install keeps the runtime's own packages: the rules in unit tests, then the real install into a
virtual environment built to look like a current Colab GPU runtime (slow: it downloads and installs ~3 GB)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arabic_r1 import hosted_install as hi
from arabic_r1.params import REPO_DIR

RUNTIME_LIST = REPO_DIR / "tests" / "resources" / "colab_gpu_runtime.txt"


def runtime_pins() -> dict[str, str]:
    lines = [
        ln for ln in RUNTIME_LIST.read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")
    ]
    return {hi.norm(n): v for n, _, v in (ln.partition("==") for ln in lines)}


@pytest.mark.parametrize(
    ("torch", "want"),
    [("2.8.0+cu126", "0.0.32.post2"), ("2.9.1", "0.0.33.post1"), ("2.10.0+cu128", "0.0.34"),
     ("2.11.0+cu128", "0.0.35"), ("2.13.0+cpu", "0.0.35"), ("2.7.1", None), ("nightly", None)],
)  # fmt: skip
def test_xformers_follows_the_runtime_torch(torch, want):
    assert hi.xformers_for(torch) == want


def test_constraints_pin_the_runtime_stack_and_nothing_we_upgrade():
    pins = runtime_pins()
    lines = hi.runtime_constraints(pins)
    kept = {ln.partition("==")[0] for ln in lines}
    for name in ("torch", "numpy", "ipykernel", "ipython", "ipywidgets", "notebook", "jupyter-client", "tornado",
                 "traitlets", "pyzmq", "triton"):  # fmt: skip
        assert name in kept, name
    assert "torch==2.13.0" in lines
    # what the project needs newer than Colab ships is upgraded, not pinned
    assert not kept & {"transformers", "peft", "datasets", "pyarrow", "accelerate", "pandas"}
    assert hi.is_protected("nvidia-cublas-cu12") and hi.is_protected("Jupyter_Server")


def test_plan_installs_gpu_stack_without_deps_then_the_project_under_constraints(tmp_path: Path):
    plan = hi.install_plan(REPO_DIR, tmp_path, {"torch": "2.11.0+cu128", "numpy": "2.1.3"}, python="py")
    first, second = plan.commands
    assert first[:4] == ["py", "-m", "pip", "install"] and "--no-deps" in first
    assert {"unsloth==2026.10.9", "unsloth_zoo==2026.10.9", "cut_cross_entropy", "xformers==0.0.35"} <= set(
        first
    )
    assert "--no-deps" not in second and second[-2:] == ["-e", f"{REPO_DIR}[hosted]"]
    for cmd in plan.commands:  # both under the runtime's constraints
        assert cmd[cmd.index("-c") + 1] == str(tmp_path / "runtime-constraints.txt")
    assert plan.constraints == ["numpy==2.1.3", "torch==2.11.0+cu128"]
    old = hi.install_plan(REPO_DIR, tmp_path, {"torch": "2.7.1"}, python="py")
    assert old.xformers is None and not any("xformers" in a for a in old.commands[0])
    assert any("xformers left out" in n for n in old.notes)


def test_replaced_imports_name_only_what_the_kernel_had_loaded():
    before = {"numpy": "2.1.3", "pyarrow": "18.1.0", "pandas": "2.2.3"}
    installs = {"pyarrow": "22.0.0", "pandas": "2.2.3", "datasets": "4.8.0"}
    assert hi.replaced_imports(before, installs) == ["pyarrow 18.1.0 -> 22.0.0"]
    report = {"install": [{"metadata": {"name": "PyArrow", "version": "22.0.0"}}]}
    assert hi.reported_installs(report) == {"pyarrow": "22.0.0"}
    assert "pyyaml" in hi.imported_distributions(["yaml.loader", "json"])


def _scratch_clone(dest: Path) -> Path:
    """The repository as `git clone` gives it: tracked and untracked-not-ignored files (the working tree)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_DIR, capture_output=True, check=True
    ).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        src = REPO_DIR / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _freeze(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-c", "import json; from arabic_r1.hosted_install import installed_versions as v; "
         "print(json.dumps(v()))"],  # fmt: skip
        capture_output=True, text=True, check=True, cwd=REPO_DIR,
    )  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.slow
def test_install_into_a_colab_like_runtime_keeps_the_runtime(tmp_path: Path):
    """Colab's published package list (tests/resources/colab_gpu_runtime.txt) in a fresh venv; then exactly what
    the setup cell runs. pip's own reports must not list any runtime package; the freeze after equals the freeze
    before for every protected distribution; the package and Unsloth (CPU fallback) import."""
    venv = tmp_path / "colab"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # the local CPU wheel first (see the list's header)
    subprocess.run([*pip, "-r", str(RUNTIME_LIST)], check=True)
    clone = _scratch_clone(tmp_path / "arabic_r1_repo")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(Path.home()), "PYTHONNOUSERSITE": "1"}

    def run(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(py), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)

    before = _freeze(py)
    unlike = {
        n: (v, before.get(n)) for n, v in runtime_pins().items() if (before.get(n) or "").split("+")[0] != v
    }
    assert not unlike, f"the runtime list did not install as listed: {unlike}"  # (2.13.0 is 2.13.0+cpu)
    # the setup cell's own lines, as Colab's kernel runs them (the clone is on sys.path, nothing installed yet)
    done = run(
        "import sys, os; sys.path.insert(0, os.path.abspath('arabic_r1_repo'));"
        "from arabic_r1.hosted_install import ensure_installed;"
        "o = ensure_installed('arabic_r1_repo'); print('REPLACED', o.replaced)"
    )
    assert done.returncode == 0, done.stderr[-4000:]
    reports = sorted((clone / ".hosted_install").glob("pip-report-*.json"))
    assert len(reports) == 2
    installed: dict[str, str] = {}
    for r in reports:
        installed.update(hi.reported_installs(json.loads(r.read_text(encoding="utf-8"))))
    assert not {n for n in installed if hi.is_protected(n)}, installed  # pip's report: nothing of the runtime
    assert {"unsloth", "unsloth-zoo", "bitsandbytes", "arabic-r1", "transformers"} <= set(installed)
    after = _freeze(py)
    changed = {n: (v, after.get(n)) for n, v in before.items() if hi.is_protected(n) and after.get(n) != v}
    assert not changed, changed
    ok = run("import arabic_r1, unsloth, transformers; print('IMPORTED', transformers.__version__)")
    assert ok.returncode == 0 and "IMPORTED 5.17" in ok.stdout, ok.stderr[-4000:]
    again = run(
        "import sys, os; sys.path.insert(0, os.path.abspath('arabic_r1_repo'));"
        "from arabic_r1.hosted_install import ensure_installed; print(ensure_installed('arabic_r1_repo').skipped)"
    )
    assert again.stdout.strip().endswith("True"), again.stdout + again.stderr  # a second run installs nothing
