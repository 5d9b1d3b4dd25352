"""How phase 06 renders a table (CSV, Markdown, LaTeX with Arabic kept safe) and reads a finished run's artifacts."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arabic_r1.errors import ExplainedError
from arabic_r1.manifest import completed_manifest
from arabic_r1.phases import PHASES, find_phase

MISSING = "—"
REPORTED = "reported in the paper"
_ARABIC = re.compile(
    r"[\u0600-\u06FF\u0750-\u077F\uFB50-\uFDFF\uFE70-\uFEFF]+(?:\s+[\u0600-\u06FF\uFB50-\uFEFF]+)*"
)


class ReportError(ExplainedError, ValueError):
    """A run artifact the report needs is missing or unreadable."""


# ---------------------------------------------------------------------------------------------- tables
@dataclass
class Table:
    name: str  # file stem
    title: str
    columns: list[str]  # the first column holds the row labels
    rows: list[list[Any]]
    sources: list[Path] = field(default_factory=list)  # the run artifacts the numbers come from
    notes: list[str] = field(default_factory=list)
    decimals: int = 2
    # Markdown only: (subtitle, first column) of each part, shown as its own table with the row labels, so that a
    # wide table (Table 1: this run's columns, then the paper's) fits a screen. TeX and CSV keep one table.
    parts: tuple[tuple[str, int], ...] = ()

    def cell(self, v: Any, missing: str = MISSING) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return missing
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:.{self.decimals}f}"
        return str(v)

    def markdown(self) -> str:
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        starts = [*self.parts] or [("", 1)]
        blocks = []
        for (subtitle, a), (_, b) in zip(starts, [*starts[1:], ("", len(self.columns))], strict=True):
            cols = [0, *range(a, b)]
            lines = [f"*{subtitle}*\n"] if subtitle else []
            lines += [
                "| " + " | ".join(esc(self.columns[c]) for c in cols) + " |",
                "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|",
            ]
            lines += ["| " + " | ".join(esc(self.cell(row[c])) for c in cols) + " |" for row in self.rows]
            blocks.append("\n".join(lines))
        notes = "".join(f"\n\n{n}" for n in self.notes)
        return f"**{self.title}**\n\n" + "\n\n".join(blocks) + notes + "\n"

    def latex(self) -> str:
        """A booktabs table; Arabic runs in ``\\textarabic{}`` (XeLaTeX + polyglossia, as the header says)."""
        spec = "l" + "r" * (len(self.columns) - 1)
        head = " & ".join(tex(c) for c in self.columns) + r" \\"
        body = "\n".join(" & ".join(tex(self.cell(v, "---")) for v in row) + r" \\" for row in self.rows)
        notes = "".join(f"\n\\par\\footnotesize {tex(n)}" for n in self.notes)
        return (
            "% needs \\usepackage{booktabs,graphicx}; Arabic text: XeLaTeX with polyglossia (\\setotherlanguage{arabic})\n"
            f"\\begin{{table}}[t]\n\\centering\n\\caption{{{tex(self.title)}}}\n\\label{{tab:{self.name}}}\n"
            "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
            f"\\begin{{tabular}}{{{spec}}}\n\\toprule\n{head}\n\\midrule\n{body}\n\\bottomrule\n\\end{{tabular}}}}"
            f"{notes}\n\\end{{table}}\n"
        )

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for row in self.rows:
            w.writerow(["" if v is None else round(v, 6) if isinstance(v, float) else v for v in row])
        return buf.getvalue()

    def value(self, row_label: str, column: str) -> Any:
        """The raw value at (row, column): what the tests recompute."""
        row = next(r for r in self.rows if r[0] == row_label)
        return row[self.columns.index(column)]


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "−": "$-$", "<": r"\textless{}", ">": r"\textgreater{}", "Δ": r"$\Delta$", "→": r"$\rightarrow$", "×": r"$\times$", "—": "---"}  # fmt: skip


def tex(text: str) -> str:
    """LaTeX-escaped text; Arabic runs wrapped for polyglossia."""
    out = "".join(_TEX_SPECIAL.get(c, c) for c in str(text))
    return _ARABIC.sub(lambda m: r"\textarabic{" + m.group(0) + "}", out)


def frame_table(
    df, name: str, title: str, sources: list[Path], notes: list[str] | None = None, **kw
) -> Table:
    """A pandas frame (the notebooks' views) as a report table: same numbers in the notebook and the paper."""
    df = df.reset_index()
    rows = [[None if _isna(v) else _plain(v) for v in r] for r in df.itertuples(index=False)]
    return Table(name, title, [str(c) for c in df.columns], rows, sources, notes or [], **kw)


def _isna(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or v == ""


def _plain(v: Any) -> Any:
    """numpy scalars -> Python, so formatting is the same for every source."""
    return v.item() if hasattr(v, "item") else v


# ------------------------------------------------------------------------------------------ run access
@dataclass
class Run:
    """A finished run folder: manifests and artifacts of phases 00-05."""

    dir: Path
    manifests: dict[str, dict[str, Any]]

    @classmethod
    def open(cls, run_dir: Path) -> Run:
        manifests = {p.name: m for p in PHASES if (m := completed_manifest(run_dir, p)) is not None}
        return cls(Path(run_dir), manifests)

    def artifact(self, phase: str, output: str | None = None, file: str | None = None) -> Path:
        """A phase output by its manifest name (or a file in the phase folder); errors name what is missing."""
        m = self.manifests.get(phase)
        slug = find_phase(phase).slug
        if m is None:
            raise ReportError(
                f"phase {slug} has not completed in {self.dir}: run it first (arabic-r1 run {slug[:2]})"
            )
        if output is not None:
            if output not in m.get("outputs", {}):
                raise ReportError(f"{slug}/manifest.json lists no output {output!r}")
            return self.dir / m["outputs"][output]["path"]
        path = self.dir / slug / file
        if not path.exists():
            raise ReportError(f"{path} not found (written by phase {slug})")
        return path

    def json(self, phase: str, output: str | None = None, file: str | None = None) -> Any:
        path = self.artifact(phase, output, file)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ReportError(f"{path}: not valid JSON ({exc})") from None
