"""The code a phase's result depends on: its notebook's code cells and every package module they import, directly
or through other modules (function-level imports included), each by content digest.

A reproducibility package must not reuse results that buggy code computed: the manifest records these digests and
the runner re-runs a phase when one changed, naming the file. Per phase rather than one digest of the whole
package, so that editing the report (phase 06) does not re-train the model; read statically (``ast``) because the
runner decides freshness before the notebook's kernel exists. The shipped notebook (``notebooks/<slug>.ipynb``) is
the one digested: a run from another ``--notebooks`` folder is keyed on the package code it shares with it.
Only code cells count: editing a notebook's prose does not re-run it. Resources a phase reads (templates, the
teacher cache, corpora) are keyed separately, as files.
"""

from __future__ import annotations

import ast
import json
from functools import lru_cache
from pathlib import Path

from arabic_r1.digests import SHORT, file_digest, text_digest
from arabic_r1.params import PACKAGE_DIR, REPO_DIR

PACKAGE = "arabic_r1"
NOTEBOOKS_DIR = REPO_DIR / "notebooks"  # the shipped notebooks (the runner's default folder too)


def module_file(name: str) -> Path | None:
    """``arabic_r1.x`` -> arabic_r1/x.py (or its package __init__), None for anything else."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(tree: ast.AST) -> set[str]:
    """Package modules named by the imports anywhere in ``tree`` (``from arabic_r1 import views`` -> the module)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == PACKAGE
        ):
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}")}
    return {n for n in names if module_file(n)}


@lru_cache(maxsize=512)
def _module_imports(path: Path, mtime_ns: int, size: int) -> frozenset[str]:
    return frozenset(imported_modules(ast.parse(path.read_text(encoding="utf-8"), str(path))))


def module_closure(roots: set[str]) -> set[Path]:
    """Every package file reachable from ``roots`` through imports (``arabic_r1/__init__.py`` included)."""
    seen: set[Path] = set()
    todo = [f for f in (module_file(n) for n in {*roots, PACKAGE}) if f]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        st = f.stat()
        for name in _module_imports(f, st.st_mtime_ns, st.st_size):
            # importing a.b.c runs a/__init__.py and a/b/__init__.py too
            parts = name.split(".")
            todo += [m for m in (module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)) if m]
    return seen


def notebook_code(notebook: Path) -> list[str]:
    """The code cells' sources, in order."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    return [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in nb.get("cells", [])
        if c.get("cell_type") == "code"
    ]


def code_digests(slug: str, notebooks_dir: Path = NOTEBOOKS_DIR) -> dict[str, str]:
    """{repository-relative path: sha256 prefix} for the phase's notebook code and the package files it reaches;
    empty when the phase has no shipped notebook (the runner's own tests use throw-away ones)."""
    notebook = notebooks_dir / f"{slug}.ipynb"
    if not notebook.is_file():
        return {}
    cells = notebook_code(notebook)
    roots: set[str] = set()
    for cell in cells:  # IPython magics and shell lines are left out of the parse, kept in the digest
        source = "\n".join(ln for ln in cell.splitlines() if not ln.lstrip().startswith(("%", "!")))
        try:
            roots |= imported_modules(ast.parse(source))
        except SyntaxError:  # a cell the kernel would reject fails the run itself; its text is still digested
            continue
    code = "\n# ---- cell ----\n".join(cells)
    out = {f"notebooks/{notebook.name}": text_digest(code)}
    for f in sorted(module_closure(roots)):
        out[f.relative_to(REPO_DIR).as_posix()] = file_digest(f)[:SHORT]
    return out
