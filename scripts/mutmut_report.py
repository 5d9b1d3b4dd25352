"""Score per module from mutmut's results, into docs/mutation.md (the part between the mutmut markers).

    python scripts/mutmut_report.py [--check]      (make mutation, after `mutmut run`)

mutmut keeps one ``mutants/<module>.py.meta`` per mutated module (each mutant's exit code). A survivor is either
killed by a test or listed in ``tests/mutation_equivalent.txt`` (``<mutant name>  <why it is equivalent or
harmless>``, one per line); the score is (killed + timeout) / (mutants - equivalent). ``--check`` fails when a module
is under 90%, a survivor is neither killed nor listed, or a listed name no longer survives (mutmut numbers a
function's mutants in order, so an edit to the function can renumber them: the list must be re-triaged).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import tomllib
from mutmut.stats import status_by_exit_code  # the exit code of a mutant's test run -> killed, survived ...

REPO = Path(__file__).resolve().parents[1]
EQUIVALENT = REPO / "tests" / "mutation_equivalent.txt"
DOC = REPO / "docs" / "mutation.md"
BEGIN, END = "<!-- mutmut -->", "<!-- /mutmut -->"
TARGET = 0.90


def modules() -> list[str]:
    """The modules pyproject's [tool.mutmut] mutates."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mutmut"]
    return list(config["only_mutate"])


def equivalent() -> dict[str, str]:
    """Triaged survivors: mutant name -> the reason it is equivalent or harmless."""
    if not EQUIVALENT.is_file():
        return {}
    out = {}
    for n, line in enumerate(EQUIVALENT.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            name, _, why = line.partition(" ")
            if not why.strip():
                sys.exit(f"{EQUIVALENT}:{n}: {name} has no reason (expected '<mutant name>  <why>')")
            out[name] = why.strip()
    return out


def results(module: str) -> dict[str, str]:
    """mutant name -> status, from mutmut's meta file for ``module``."""
    meta = REPO / "mutants" / f"{module}.meta"
    if not meta.is_file():
        sys.exit(f"{meta}: no mutmut results for {module} (run `mutmut run` first)")
    codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    return {name: status_by_exit_code[code] for name, code in codes.items()}


def table(equiv: dict[str, str]) -> tuple[str, list[str], list[str], list[str]]:
    """The markdown table, the untriaged survivors, the modules under TARGET, and stale equivalence entries.

    A timeout counts as killed (the mutant hangs the tests, which a user notices); a mutant mutmut did not finish
    ("not checked", interrupted, segfault, skipped) counts as not run, and a module with one is not scored as done.
    """
    rows = ["| module | mutants | killed | timeout | equivalent | survived | no tests | not run | score |"]
    rows.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    untriaged, low, seen = [], [], {}
    for module in modules():
        status = results(module)
        seen |= status
        eq = {n for n, s in status.items() if s == "survived" and n in equiv}
        counts = Counter(s for n, s in status.items() if n not in eq)
        left = [n for n, s in status.items() if s in ("survived", "suspicious", "no tests") and n not in eq]
        untriaged += left
        detected = counts["killed"] + counts["timeout"] + counts["caught by type check"]
        not_run = len(status) - len(eq) - detected - len(left)
        scored = len(status) - len(eq)
        score = detected / scored if scored else 1.0
        low += [module] if score < TARGET else []
        rows.append(
            f"| `{module}` | {len(status)} | {counts['killed']} | {counts['timeout']} | {len(eq)} | "
            f"{counts['survived'] + counts['suspicious']} | {counts['no tests']} | {not_run} | {100 * score:.1f}% |"
        )
    listed = {m.replace("/", ".").removesuffix(".py") for m in modules()}
    stale = [n for n in equiv if n.rsplit(".", 1)[0] in listed and seen.get(n) != "survived"]
    return "\n".join(rows), untriaged, low, stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail under 90%% or with an untriaged survivor")
    args = parser.parse_args()
    rows, untriaged, low, stale = table(equivalent())
    survivors = "\n".join(f"- `{n}`" for n in untriaged) or "none"
    section = f"{BEGIN}\n{rows}\n\nUntriaged survivors (`mutmut show NAME`):\n{survivors}\n{END}"
    text = DOC.read_text(encoding="utf-8")
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text, encoding="utf-8")
    print(rows, f"\n{len(untriaged)} untriaged survivors", sep="\n")
    for name in stale:
        print(f"{EQUIVALENT.name}: {name} is listed but did not survive this run (killed now, or renumbered)")
    if args.check and (untriaged or low or stale):
        print(
            f"under {TARGET:.0%}: {low or 'none'}; untriaged: {len(untriaged)}; stale: {len(stale)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
