"""The one base of the package's own errors: their messages say what is wrong and what to do, so a notebook shows
the message alone instead of a traceback through the package.

IPython renders an exception through its ``_render_traceback_`` method when it has one (the hook ipyparallel uses
for remote errors); the error still stops a Run All in JupyterLab and still fails papermill, the CLI and the tests.
"""

from __future__ import annotations

import re
from typing import Any


class ExplainedError(Exception):
    """An error whose message is the explanation (which file, key, row or phase, what was expected, what to run)."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[1;31m{type(self).__name__}\x1b[0m: {self}"]


_SECRET = re.compile(
    r"^(sk-|sk_|hf_|ghp_|gho_|github_pat_|xox[abp]-|AKIA|AIza|glpat-)|^(?=.*\d)(?=.*[A-Za-z])[\w\-.]{32,}$"
)


def looks_like_secret(value: Any) -> bool:
    """An API key or token: a known prefix, or 32+ letters and digits with no space."""
    return isinstance(value, str) and bool(_SECRET.search(value.strip()))


def redacted(value: Any) -> str:
    """``repr(value)``, unless it looks like a secret: error messages end up in logs, notebooks and CI output, so a
    pasted key is never echoed."""
    return (
        f"a {len(value)}-character value that looks like a secret (not shown)"
        if looks_like_secret(value)
        else repr(value)
    )
