"""Progress: a widget bar in a live notebook, a few plain lines everywhere else, never a bar in a stored notebook."""

from __future__ import annotations

import logging

import pytest

from arabic_r1 import progress
from arabic_r1.progress import Progress


def test_plain_lines_at_four_marks_with_status(monkeypatch, caplog) -> None:
    monkeypatch.setattr(progress, "frontend", lambda: "papermill")
    with caplog.at_level(logging.INFO, logger="arabic_r1"), Progress(2060, "step") as bar:
        for i in range(2060):
            bar.update(loss=1.0 / (i + 1))
    lines = [r.getMessage() for r in caplog.records]
    assert (
        len(lines) == 4
        and lines[0].startswith("step 515/2060 loss ")
        and lines[-1].startswith("step 2060/2060")
    )


def test_a_live_notebook_gets_a_widget_bar(monkeypatch) -> None:
    pytest.importorskip("ipywidgets")
    from tqdm.notebook import tqdm_notebook

    monkeypatch.setattr(progress, "frontend", lambda: "lab")
    bar = Progress(10, "step")
    assert isinstance(bar._bar, tqdm_notebook)  # ipywidgets present: no "IProgress not found" fallback
    bar.update(3, loss=0.5)
    assert bar._bar.n == 3
    bar.close()


def test_outside_lab_library_bars_are_off_even_when_asked_for(monkeypatch) -> None:
    """lighteval builds its bars with disable=False: the stored notebook must still get none."""
    from tqdm import notebook, std
    from transformers.utils import logging as hf_logging

    for cls in (std.tqdm, notebook.tqdm_notebook):  # restored after the test, with the environment
        monkeypatch.setattr(cls, "__init__", cls.__init__)
        monkeypatch.setattr(cls, "_arabic_r1_quiet", False, raising=False)
    for var in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(var, "")
    try:
        progress._quiet_library_bars(disable_all=True)
        assert std.tqdm(range(3), disable=False).disable
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
