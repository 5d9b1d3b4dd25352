"""The one base of the package's own errors: their messages say what is wrong and what to do, so a notebook shows
the message alone instead of a traceback through the package.

IPython renders an exception through its ``_render_traceback_`` method when it has one (the hook ipyparallel uses
for remote errors); the error still stops a Run All in JupyterLab and still fails papermill, the CLI and the tests.
"""

from __future__ import annotations


class ExplainedError(Exception):
    """An error whose message is the explanation (which file, key, row or phase, what was expected, what to run)."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[1;31m{type(self).__name__}\x1b[0m: {self}"]
