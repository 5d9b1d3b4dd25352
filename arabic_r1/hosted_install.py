"""Install the package into a live Colab or Kaggle runtime without replacing what the runtime is built on.

A hosted runtime's kernel and frontend (ipykernel, ipython, notebook, ipywidgets, jupyter_*, tornado, pyzmq), its
CUDA build of torch with the CUDA libraries beside it, and numpy are what that runtime was tested with; a plain
``pip install -e repo[gpu]`` re-resolves them (our ``ipykernel>=6.29`` against Colab's 6.17, unsloth's unpinned
xformers/torchvision/triton pulling another torch), which is how a Colab session ends in "your session crashed"
loops. So this follows Unsloth's own Colab cells:

1. a constraints file pins every such distribution the runtime has to the version it has (:func:`runtime_constraints`):
   pip then fails, naming the package, instead of replacing it;
2. unsloth, unsloth_zoo, bitsandbytes (the ``gpu`` extra's pins), cut_cross_entropy and, where the runtime's torch
   has a matching build, xformers go in with ``--no-deps`` (:func:`xformers_for`);
3. the project, with its ``hosted`` extra (the small pure-Python packages Unsloth imports), under the constraints;
4. pip's own JSON report (``--report``) says what each step installed; if a distribution whose modules the kernel
   had already imported changed version, the runtime must restart before those modules are used
   (:func:`replaced_imports`; the setup cell ends the kernel, and Colab/Kaggle start a fresh one).

Only the standard library is used: the setup cell imports this module from the fresh clone, before anything is
installed. A marker in the clone, keyed on the install commands and ``pyproject.toml``'s contents, makes a second
run of the cell (after the restart, or in the next notebook) install nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

# Distributions a hosted runtime keeps at its own version: its kernel/frontend stack, torch and its CUDA libraries,
# numpy (compiled against by everything else the runtime ships). Exact names, then name prefixes.
PROTECTED = frozenset(
    "torch torchvision torchaudio triton numpy ipykernel ipython ipywidgets widgetsnbextension notebook "
    "notebook-shim nbclassic tornado traitlets pyzmq comm debugpy prompt-toolkit matplotlib-inline google-colab "
    "jax jaxlib tensorflow".split()
)
PROTECTED_PREFIXES = ("jupyter", "nvidia-", "cuda-")
# xformers builds by the runtime's torch (major.minor), read from each wheel's Requires-Dist on PyPI: 0.0.32.post2
# torch==2.8.0, 0.0.33.post1 torch==2.9.0, 0.0.34 torch==2.10.0, 0.0.35 torch>=2.10 (the first without a torch
# pin). A torch outside the table gets none: Unsloth then uses torch's own attention (SDPA).
XFORMERS = {(2, 8): "0.0.32.post2", (2, 9): "0.0.33.post1", (2, 10): "0.0.34"}
XFORMERS_UNPINNED = ((2, 11), "0.0.35")  # from this torch on
# installed --no-deps beside the gpu extra's pins, as Unsloth's cells do (unsloth_zoo imports it for its fused loss)
NO_DEPS_EXTRA = ("cut_cross_entropy",)
MARKER = ".hosted_install.json"


class HostedInstallError(RuntimeError):
    """A step of the hosted install failed; the message names the step and what pip said."""


def norm(name: str) -> str:
    """PEP 503 name, so 'Jupyter_Client' and 'jupyter-client' are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_protected(name: str) -> bool:
    n = norm(name)
    return n in PROTECTED or n.startswith(PROTECTED_PREFIXES)


def installed_versions() -> dict[str, str]:
    """{normalised name: version} of every distribution this interpreter sees."""
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(norm(name), dist.version)
    return out


def runtime_constraints(versions: Mapping[str, str]) -> list[str]:
    """One ``name==version`` line per protected distribution the runtime has."""
    return sorted(f"{n}=={v}" for n, v in versions.items() if is_protected(n))


def xformers_for(torch_version: str) -> str | None:
    """The xformers build for this torch (``2.11.0+cu128`` -> ``0.0.35``), or None: leave xformers out."""
    m = re.match(r"(\d+)\.(\d+)", torch_version)
    if not m:
        return None
    mm = (int(m.group(1)), int(m.group(2)))
    if mm >= XFORMERS_UNPINNED[0]:
        return XFORMERS_UNPINNED[1]
    return XFORMERS.get(mm)


def pyproject_extra(repo_dir: Path, extra: str) -> list[str]:
    """An extra's requirements, read from the clone's pyproject.toml (one place for the versions; nothing is
    installed yet, so not from the package's metadata)."""
    import tomllib  # Python 3.11+: every current Colab and Kaggle image

    project = tomllib.loads((repo_dir / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return list(project["optional-dependencies"][extra])


@dataclass
class Plan:
    """The pip commands of one hosted install and where their reports go."""

    commands: list[list[str]]
    reports: list[Path]
    constraints: list[str]
    xformers: str | None
    notes: list[str] = field(default_factory=list)


def install_plan(
    repo_dir: Path, work_dir: Path, versions: Mapping[str, str], python: str = sys.executable
) -> Plan:
    """Two pip steps under one constraints file: the GPU stack --no-deps, then the project with its hosted extra."""
    constraints = runtime_constraints(versions)
    cfile = work_dir / "runtime-constraints.txt"
    torch = versions.get("torch")
    xf = xformers_for(torch) if torch else None
    notes = [f"kept at the runtime's version: {len(constraints)} distributions (torch {torch or 'absent'})"]
    if torch and xf is None:
        notes.append(
            f"xformers left out: no build is listed for torch {torch}; Unsloth uses torch's attention"
        )
    no_deps = [*pyproject_extra(repo_dir, "gpu"), *NO_DEPS_EXTRA, *([f"xformers=={xf}"] if xf else [])]
    reports = [work_dir / "pip-report-gpu.json", work_dir / "pip-report-project.json"]
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c", str(cfile)]
    commands = [
        [*pip, "--no-deps", "--report", str(reports[0]), *no_deps],
        [*pip, "--report", str(reports[1]), "-e", f"{repo_dir}[hosted]"],
    ]
    return Plan(commands, reports, constraints, xf, notes)


def reported_installs(report: Mapping) -> dict[str, str]:
    """{name: version} pip installed, from one ``pip install --report`` JSON."""
    return {norm(i["metadata"]["name"]): i["metadata"]["version"] for i in report.get("install", [])}


def imported_distributions(modules: Iterable[str]) -> dict[str, str]:
    """{distribution: version} of the distributions that provide the already-imported top-level modules."""
    tops = {m.partition(".")[0] for m in modules}
    by_module = metadata.packages_distributions()
    out: dict[str, str] = {}
    for top in tops:
        for dist in by_module.get(top, []):
            try:
                out[norm(dist)] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    return out


def replaced_imports(before: Mapping[str, str], installs: Mapping[str, str]) -> list[str]:
    """Imported distributions pip replaced with another version: ``name old -> new``."""
    return sorted(f"{n} {before[n]} -> {v}" for n, v in installs.items() if n in before and before[n] != v)


@dataclass
class Outcome:
    installed: dict[str, str]  # everything pip installed, both steps
    replaced: list[str]  # imported before and now another version: restart the runtime
    skipped: bool = False  # the marker said this exact install was done already
    notes: list[str] = field(default_factory=list)


def _marker_key(plan: Plan, repo_dir: Path) -> str:
    h = hashlib.sha256((repo_dir / "pyproject.toml").read_bytes())
    h.update(json.dumps([plan.constraints, [c[c.index("install") :] for c in plan.commands]]).encode())
    return h.hexdigest()


def run_plan(plan: Plan, repo_dir: Path, work_dir: Path, modules: Iterable[str] = ()) -> Outcome:
    """Run both steps (unless the marker says done), check nothing protected moved, say what to restart."""
    key = _marker_key(plan, repo_dir)
    marker = repo_dir / MARKER
    done = marker.exists() and json.loads(marker.read_text(encoding="utf-8")).get("key") == key
    if done and "arabic-r1" in installed_versions():
        return Outcome({}, [], skipped=True, notes=plan.notes)
    before = imported_distributions(modules)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "runtime-constraints.txt").write_text("\n".join(plan.constraints) + "\n", encoding="utf-8")
    installs: dict[str, str] = {}
    for step, (cmd, report) in enumerate(zip(plan.commands, plan.reports, strict=True), 1):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise HostedInstallError(
                f"hosted install step {step}/{len(plan.commands)} failed: {' '.join(cmd)}\n"
                f"{done.stderr.strip()[-3000:]}\n(pip refuses rather than replace the runtime's own packages, "
                f"listed in {work_dir / 'runtime-constraints.txt'})"
            )
        installs.update(reported_installs(json.loads(report.read_text(encoding="utf-8"))))
    moved = sorted(n for n in installs if is_protected(n))
    if moved:  # pip honours constraints; this guards the list itself against a name it does not cover
        raise HostedInstallError(f"the hosted install replaced runtime packages: {moved}")
    marker.write_text(json.dumps({"key": key, "installed": installs}, indent=1), encoding="utf-8")
    return Outcome(installs, replaced_imports(before, installs), notes=plan.notes)


def ensure_installed(repo_dir: str | Path, work_dir: str | Path | None = None) -> Outcome:
    """The setup cell's one call: install (or confirm installed) and say whether the runtime must restart."""
    repo = Path(repo_dir).resolve()
    work = Path(work_dir) if work_dir else repo / ".hosted_install"
    plan = install_plan(repo, work, installed_versions())
    outcome = run_plan(plan, repo, work, modules=list(sys.modules))
    for note in outcome.notes:
        print(note)
    if outcome.skipped:
        print("arabic_r1 is installed in this runtime (nothing to do)")
    else:
        print(f"installed {len(outcome.installed)} distributions; the runtime's own were kept")
    return outcome


def restart_runtime(replaced: Sequence[str]) -> None:
    """End this kernel: Colab and Kaggle start a fresh one, which imports the new versions (Unsloth's way)."""
    print("These were imported before the install and have been replaced:", ", ".join(replaced))
    print("Restarting the runtime now; run this cell again afterwards (it will not reinstall).", flush=True)
    os._exit(0)


if __name__ == "__main__":  # python arabic_r1/hosted_install.py REPO_DIR: the same install from a terminal
    ensure_installed(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
