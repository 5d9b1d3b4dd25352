"""What a researcher sees: every executed smoke notebook, rendered by nbconvert, reads like a paper's section.

The smoke run's executed notebooks (``runs/<run>/notebooks/``) must carry no tracebacks, no library log lines or
progress bars (a small stderr budget for the warnings a reader should see), no replacement characters (a token or
byte boundary cut through an Arabic letter), no folder of the machine that ran them, and no markdown printed as
plain text. The slow test screenshots notebooks 04 and 06 in a real headless Chromium (Debian's ``chromium`` and
``fonts-noto-core`` for the Arabic glyphs).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BACKBONE_CACHE, REPO, copy_smoke_project

# stderr lines a notebook may show: the warnings a reader should see (05: the OALL subsets the mirror lacks)
STDERR_BUDGET = {"05_oall_evaluation": 3}
STDOUT_BUDGET = 30  # plain lines per notebook: the package's own progress and summaries, never a log wall
LOG_LINE = re.compile(r"^\s*(\d\d:\d\d:\d\d|INFO|WARNING|DEBUG)\b|\d+it/s\]|it \[\d\d:\d\d|\[A$", re.M)
RAW_MARKDOWN = re.compile(r"\*\*[^*\n]+\*\*|^\|.*\|\s*$|^#{1,4} \w|`[^`\n]+`", re.M)


def _executed(project: Path, params) -> list[Path]:
    notebooks = sorted((params.run_dir / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 7, f"expected the 7 executed notebooks in {params.run_dir / 'notebooks'}"
    return notebooks


def _outputs(nb: dict):
    """(cell index, output type or stream name, mime, text) for every output of every code cell."""
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            kind = out["output_type"]
            if kind == "stream":
                yield i, out["name"], "text/plain", "".join(out["text"])
            elif kind == "error":
                yield i, "error", "text/plain", f"{out['ename']}: {out['evalue']}"
            else:
                for mime, data in out.get("data", {}).items():
                    if mime.startswith("text/"):
                        yield i, kind, mime, "".join(data) if isinstance(data, list) else str(data)


def machine_paths(project: Path) -> list[str]:
    """Folders of the run machine that no output may name."""
    return sorted(
        {str(p) for p in (project, project.resolve(), REPO, Path.home(), Path(sys.prefix), BACKBONE_CACHE)},
        key=len,
    )[::-1]


def rendering_problems(notebook: Path, forbidden: list[str]) -> list[str]:
    """Everything that spoils one executed notebook for a reader, each problem named with its cell."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    slug, problems = notebook.stem, []
    stderr = stdout = 0
    for i, kind, mime, text in _outputs(nb):
        where = f"{slug} cell {i} ({kind}, {mime})"
        if kind == "error":
            problems.append(f"{where}: a traceback: {text[:200]}")
        if kind == "stderr":
            stderr += len(text.splitlines())
        if kind == "stdout":
            stdout += len(text.splitlines())
        if kind in ("stdout", "stderr") and LOG_LINE.search(text):
            problems.append(
                f"{where}: a library log line or progress bar: {LOG_LINE.search(text).group(0)!r}"
            )
        if "\ufffd" in text:
            problems.append(f"{where}: a replacement character (an Arabic letter cut in two)")
        for path in forbidden:
            if path in text:
                problems.append(f"{where}: names the machine's folder {path}")
                break
        if (
            mime == "text/plain"
            and kind in ("stdout", "stderr", "execute_result")
            and RAW_MARKDOWN.search(text)
        ):
            problems.append(f"{where}: markdown printed as text: {RAW_MARKDOWN.search(text).group(0)!r}")
    if stderr > STDERR_BUDGET.get(slug, 0):
        problems.append(f"{slug}: {stderr} stderr lines (budget {STDERR_BUDGET.get(slug, 0)})")
    if stdout > STDOUT_BUDGET:
        problems.append(f"{slug}: {stdout} stdout lines (budget {STDOUT_BUDGET})")
    return problems


def render_html(notebook: Path) -> str:
    """The notebook as nbconvert's JupyterLab template shows it."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_filename(str(notebook))
    return body


def test_executed_smoke_notebooks_read_cleanly(smoke_run) -> None:
    project, params, _ = smoke_run
    forbidden = machine_paths(project)
    problems = []
    for nb in _executed(project, params):
        problems += rendering_problems(nb, forbidden)
        html = render_html(nb)
        if "\ufffd" in html:
            problems.append(f"{nb.stem}: the rendered HTML has a replacement character")
    assert not problems, "\n".join(problems)


def test_the_check_catches_what_spoils_a_notebook(tmp_path: Path) -> None:
    """Each kind of problem planted in a clean notebook is reported (the guard cannot pass vacuously)."""
    import nbformat

    plants = {
        "traceback": nbformat.v4.new_output("error", ename="PhaseError", evalue="boom", traceback=[]),
        "log line": nbformat.v4.new_output(
            "stream", name="stderr", text="12:00:01 INFO lighteval: loading\n"
        ),
        "progress bar": nbformat.v4.new_output(
            "stream", name="stdout", text=" 40%|████ | 4/10 [00:01, 3.1it/s]\n"
        ),
        "replacement character": nbformat.v4.new_output("stream", name="stdout", text="الع\ufffdربية\n"),
        "machine's folder": nbformat.v4.new_output(
            "stream", name="stdout", text=f"saved to {tmp_path}/runs/x\n"
        ),
        "markdown printed": nbformat.v4.new_output("stream", name="stdout", text="took **64 s** in all\n"),
        "stderr lines": nbformat.v4.new_output("stream", name="stderr", text="a\nb\nc\nd\n"),
    }
    clean = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('ok')", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="1038 traces verified, 1029 kept\n")])])  # fmt: skip
    path = tmp_path / "02_cot_distillation.ipynb"
    nbformat.write(clean, path)
    assert rendering_problems(path, [str(tmp_path)]) == []
    for name, output in plants.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[output])])
        nbformat.write(nb, path)
        found = rendering_problems(path, [str(tmp_path)])
        assert any(name.split()[0] in p for p in found), f"{name} not caught: {found}"


def test_a_missing_phase_is_one_message_with_the_command_not_a_traceback(tmp_path: Path) -> None:
    """Notebook 01 opened first in a fresh project: it stops with the advice, shown as one line, no frames."""
    import papermill

    from arabic_r1.params_loading import load_params
    from arabic_r1.pipeline import papermill_parameters

    project = copy_smoke_project(tmp_path)
    params = load_params(project / "params" / "smoke.yaml")
    out = tmp_path / "01_executed.ipynb"
    with pytest.raises(papermill.PapermillExecutionError, match="run it first"):
        papermill.execute_notebook(str(REPO / "notebooks" / "01_data_mixture.ipynb"), str(out), kernel_name="python3",
                                   parameters=papermill_parameters(params, params.run_dir), progress_bar=False,
                                   cwd=str(REPO / "notebooks"))  # fmt: skip
    nb = json.loads(out.read_text(encoding="utf-8"))
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert len(errors) == 1, errors
    shown = errors[0]["traceback"]
    assert len(shown) == 1 and "PhaseError" in shown[0], (
        shown
    )  # the message alone: no frames through the package
    assert "run it first: arabic-r1 run 00 --params" in shown[0] and str(project) not in shown[0], shown[0]


CHROMIUM = next((c for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium: apt-get install chromium fonts-noto-core")
def test_notebooks_04_and_06_screenshot_in_a_real_browser(smoke_run, tmp_path: Path) -> None:
    """Rendered in Chromium, each page has its content: a tall, non-blank screenshot with Arabic glyphs drawn
    (the Arabic font is found), figures loaded, no replacement-character boxes in the HTML."""
    from PIL import Image

    project, params, _ = smoke_run
    for slug in ("04_moe_lora_sft", "06_paper_report"):
        html = render_html(params.run_dir / "notebooks" / f"{slug}.ipynb")
        page, shot = tmp_path / f"{slug}.html", tmp_path / f"{slug}.png"
        page.write_text(html, encoding="utf-8")
        screenshot(page, shot, height=3000)
        img = Image.open(shot).convert("L")
        assert img.size == (1280, 3000), img.size
        colours = img.getcolors(maxcolors=1 << 16) or []
        assert len(colours) > 50, f"{slug}: the screenshot is (nearly) blank"  # text, tables, figures
    fonts = subprocess.run(["fc-list", ":lang=ar"], capture_output=True, text=True).stdout
    assert fonts.strip(), "no font with Arabic glyphs: apt-get install fonts-noto-core"


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 3000) -> None:
    """A full-width screenshot of ``page`` by headless Chromium (also what the README's screenshot is made with)."""
    cmd = [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={width},{height}", f"--screenshot={out}", "--virtual-time-budget=5000", page.as_uri()]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and out.is_file(), f"chromium failed: {done.stderr[-500:]}"
