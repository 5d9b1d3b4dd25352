"""What a run shows while it works: library chatter silenced, the package's own lines kept short, one progress
display per long loop.

Three places read this output, and each gets what suits it:

- **JupyterLab / Colab** (a live notebook): widget progress bars (tqdm's notebook bars, ipywidgets installed), the
  package's lines as plain text, library loggers and bars quiet.
- **papermill** (``arabic-r1 reproduce``, plain papermill, nbconvert, the tests): every printed line is stored in
  the executed notebook, so no bars at all (tqdm is disabled, lighteval's and transformers' included) and a few
  plain lines per long loop.
- **console** (the CLI, launched training ranks, benchmark scripts): timestamped log lines on stderr.

Warnings that matter to the reader (a contamination hit, a skipped row) are the package's own ``log.warning`` lines
and are always shown; the libraries' warnings (lighteval's per-task few-shot notice, hub deprecations) are not.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from functools import wraps
from typing import Any, Literal

from arabic_r1.hosted import PIPELINE_ENV

Frontend = Literal["lab", "papermill", "console"]

# processes that execute a notebook without a person watching: their kernel's parent process names one of these
HEADLESS_PARENTS = ("papermill", "nbconvert", "nbclient", "pytest")
# loggers of libraries whose INFO/WARNING lines describe their own plumbing (cache paths, seeds, per-task notices)
QUIET_LIBRARIES = ("httpx", "urllib3", "filelock", "datasets", "huggingface_hub", "lighteval", "transformers",
                   "fontTools", "matplotlib", "PIL", "ray", "torch", "accelerate", "peft", "trl", "unsloth",
                   "datatrove", "numexpr", "asyncio", "jieba", "absl")  # fmt: skip


def frontend() -> Frontend:
    """Where this process's output goes: a live notebook, an executed-and-stored notebook, or a terminal/log."""
    try:
        from IPython import get_ipython
    except ImportError:
        return "console"
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):  # plain python, or IPython in a terminal
        return "console"
    if PIPELINE_ENV in os.environ or _parent_is_headless():
        return "papermill"
    return "lab"


def _parent_is_headless() -> bool:
    try:
        import psutil

        parent = psutil.Process().parent()
        cmdline = " ".join(parent.cmdline()) if parent is not None else ""
    except Exception:  # noqa: BLE001 - no psutil, or the parent is gone: assume a person is watching
        return False
    return any(name in cmdline for name in HEADLESS_PARENTS)


class _NotebookFormatter(logging.Formatter):
    """The message alone; a warning says it is one (the reader's attention is wanted)."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return f"warning: {text}" if record.levelno >= logging.WARNING else text


def configure_output(level: int = logging.INFO, rank: int | None = None) -> Frontend:
    """Set logging, Python warnings and tqdm for :func:`frontend`. ``rank``: the lines of a launched training rank
    say which rank wrote them (the ranks share one output stream)."""
    where = frontend()
    if where == "console":
        tag = "" if rank is None else f" rank{rank}"
        logging.basicConfig(
            level=level,
            format=f"%(asctime)s{tag} %(levelname)s %(name)s: %(message)s",
            datefmt="%H:%M:%S",
            force=True,
        )
    else:  # a notebook: the package's lines on stdout (warnings on stderr), everything else only when an error
        out = logging.StreamHandler(sys.stdout)
        out.addFilter(lambda r: r.levelno < logging.WARNING)
        err = logging.StreamHandler(sys.stderr)
        err.setLevel(logging.WARNING)
        for h in (out, err):
            h.setFormatter(_NotebookFormatter())
        logging.basicConfig(level=logging.ERROR, handlers=[out, err], force=True)
        logging.getLogger("arabic_r1").setLevel(level)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="IProgress not found")
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR if where != "console" else logging.WARNING)
    _quiet_library_bars(disable_all=where != "lab")
    return where


def _quiet_library_bars(disable_all: bool) -> None:
    """Libraries' own bars (datasets' per-map bars, transformers' weight loading, lighteval's per-request bars):
    off everywhere but a live notebook, where they are compact widgets. TQDM_DISABLE reaches subprocesses (launched
    ranks); the class default covers bars created later in this process by classes tqdm already built."""
    try:
        import datasets

        datasets.disable_progress_bars()  # hundreds of per-map bars otherwise, even in Lab
    except ImportError:
        pass
    if not disable_all:
        return
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        from tqdm import notebook, std

        for cls in (std.tqdm, notebook.tqdm_notebook):  # tqdm.auto picks the notebook class inside a kernel
            if not cls.__dict__.get("_arabic_r1_quiet"):
                cls.__init__ = _forced_off(cls.__init__)  # type: ignore[method-assign]
                cls._arabic_r1_quiet = True  # type: ignore[attr-defined]
    except ImportError:
        pass
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards"
    except ImportError:
        pass


def _forced_off(init: Any) -> Any:
    """``init`` with ``disable=True`` whatever the caller passed (lighteval passes ``disable=False`` itself)."""

    @wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        init(self, *args, **kwargs)

    return __init__


class Progress:
    """One progress display for a loop of known length: a widget bar in a live notebook, otherwise ``lines``
    plain lines (at 1/lines, 2/lines, ... of the work), each with the elapsed time and what ``update`` reports."""

    def __init__(
        self, total: int, desc: str, unit: str = "", lines: int = 4, logger: logging.Logger | None = None
    ):
        self.total, self.desc, self.unit = max(int(total), 0), desc, unit
        self.done, self.t0, self.log = 0, time.monotonic(), logger or logging.getLogger("arabic_r1")
        self._marks = (
            sorted({max(1, round(self.total * k / lines)) for k in range(1, lines + 1)}) if self.total else []
        )
        self._bar = None
        if frontend() == "lab" and self.total:
            try:
                from tqdm.notebook import tqdm

                self._bar = tqdm(total=self.total, desc=desc, unit=unit or "it", disable=False)
            except ImportError:  # no ipywidgets: plain lines
                self._bar = None

    def update(self, n: int = 1, **status: Any) -> None:
        """``n`` more done; ``status`` (e.g. loss=0.42) is shown with the bar or the next line."""
        before, self.done = self.done, min(self.done + n, self.total)
        text = " ".join(f"{k} {_fmt(v)}" for k, v in status.items())
        if self._bar is not None:
            self._bar.update(self.done - before)
            if text:
                self._bar.set_postfix_str(text, refresh=False)
            return
        if any(before < m <= self.done for m in self._marks):
            unit = f" {self.unit}" if self.unit else ""
            self.log.info(
                "%s %d/%d%s%s (%.0f s)",
                self.desc,
                self.done,
                self.total,
                unit,
                f" {text}" if text else "",
                time.monotonic() - self.t0,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
