"""scripts/mutmut_report.py: the score per module and the verdicts `make mutation --check` acts on."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("mutmut_report", REPO / "scripts" / "mutmut_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.mutmut]\nonly_mutate = ["arabic_r1/a.py"]\n', encoding="utf-8"
    )
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "mutation.md").write_text(
        "# Mutation\n\n<!-- mutmut -->\nold\n<!-- /mutmut -->\n\nrest\n"
    )
    monkeypatch.setattr(mod, "REPO", tmp_path)
    monkeypatch.setattr(mod, "EQUIVALENT", tmp_path / "equivalent.txt")
    monkeypatch.setattr(mod, "DOC", tmp_path / "docs" / "mutation.md")
    return mod


def _write(tmp_path: Path, codes: dict[int, int | None], equivalent: dict[int, str]) -> None:
    meta = tmp_path / "mutants" / "arabic_r1" / "a.py.meta"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(
        json.dumps({"exit_code_by_key": {f"arabic_r1.a.x_f__mutmut_{n}": c for n, c in codes.items()}})
    )
    lines = [f"arabic_r1.a.x_f__mutmut_{n}  {why}" for n, why in equivalent.items()]
    (tmp_path / "equivalent.txt").write_text("# comment\n" + "\n".join(lines) + "\n", encoding="utf-8")


def test_every_verdict_that_fails_the_check(report, tmp_path: Path, monkeypatch) -> None:
    # 1 killed (and still listed), 2 survived and listed, 3 survived untriaged, 4 not run, 5 timeout; 9 listed, gone
    _write(
        tmp_path, {1: 1, 2: 0, 3: 0, 4: None, 5: 36}, {1: "killed since", 2: "equal outputs", 9: "renumbered"}
    )
    rows, untriaged, low, stale = report.table(report.equivalent())
    assert rows.splitlines()[2] == "| `arabic_r1/a.py` | 5 | 1 | 1 | 1 | 1 | 0 | 1 | 50.0% |"
    assert untriaged == ["arabic_r1.a.x_f__mutmut_3"] and low == ["arabic_r1/a.py"]
    assert stale == ["arabic_r1.a.x_f__mutmut_1", "arabic_r1.a.x_f__mutmut_9"]
    monkeypatch.setattr(sys, "argv", ["mutmut_report.py", "--check"])
    assert report.main() == 1
    doc = (tmp_path / "docs" / "mutation.md").read_text()
    assert doc.startswith("# Mutation\n\n<!-- mutmut -->\n| module") and doc.endswith(
        "<!-- /mutmut -->\n\nrest\n"
    )
    assert "- `arabic_r1.a.x_f__mutmut_3`" in doc and "old" not in doc


def test_a_module_with_every_survivor_triaged_passes(report, tmp_path: Path, monkeypatch) -> None:
    _write(tmp_path, {n: 1 for n in range(1, 10)} | {10: 0}, {10: "equal outputs"})
    rows, untriaged, low, stale = report.table(report.equivalent())
    assert rows.endswith("| 100.0% |") and (untriaged, low, stale) == ([], [], [])
    monkeypatch.setattr(sys, "argv", ["mutmut_report.py", "--check"])
    assert report.main() == 0


def test_an_equivalence_entry_needs_its_reason(report, tmp_path: Path) -> None:
    (tmp_path / "equivalent.txt").write_text("arabic_r1.a.x_f__mutmut_2\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="equivalent.txt:1: arabic_r1.a.x_f__mutmut_2 has no reason"):
        report.equivalent()
