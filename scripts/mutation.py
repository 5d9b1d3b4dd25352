"""Mutation check: plant realistic bugs in the code of phases 01-05, one at a time, and see the tests fail.

    python scripts/mutation.py [--only ID ...] [--list]      (make mutation)

Each mutation replaces one exact snippet of a module (it must occur exactly once, so the list cannot silently
rot when the code moves) in a scratch copy of the repository, then runs the tests that cover that code with the
copy first on ``PYTHONPATH`` (subprocesses too). A mutation is *killed* when those tests fail. The score and every
survivor are printed and written to ``runs/mutation/results.json``. The first nine are the bugs a review planted
and the suite once missed (issue 17); the rest are our own, in code those nine do not touch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    id: str
    path: str  # relative to the repository
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: files, node ids, -k expressions


MUTATIONS = (
    # ---- the nine that once passed the whole suite
    Mutation("loss-unshifted-labels", "arabic_r1/train_backends.py", "labels = labels[:, 1:]", "labels = labels[:, :-1]",
             ("tests/test_train.py", "-k", "cross_entropy")),
    Mutation("composition-by-rows", "arabic_r1/sft_data.py", 'by_lang[row.get("lang", "unknown")] += n',
             'by_lang[row.get("lang", "unknown")] += 1', ("tests/test_train.py", "-k", "composition")),
    Mutation("first-answer-line-wins", "arabic_r1/cot.py", 'answers[-1].group("a")', 'answers[0].group("a")',
             ("tests/test_cot.py",)),
    Mutation("norms-negation-ignored", "arabic_r1/trace_checks.py", "if rec and not neg:", "if rec:",
             ("tests/test_verify.py", "-k", "negated")),
    Mutation("boilerplate-off-by-one", "arabic_r1/decontam.py", "if len(items) > max_items_per_ngram:",
             "if len(items) >= max_items_per_ngram:", ("tests/test_decontam.py", "-k", "boilerplate")),
    Mutation("version-not-in-freshness", "arabic_r1/manifest.py", 'if old.get("arabic_r1") != key["arabic_r1"]:',
             "if False:", ("tests/test_pipeline.py", "-k", "package_version")),
    Mutation("short-item-first-8-words", "arabic_r1/decontam.py", "if tuple(words[i:end]) != seg.words:",
             "if tuple(words[i : i + 8]) != seg.words[:8]:", ("tests/test_decontam.py", "-k", "whole")),
    Mutation("adapter-coverage-guard-removed", "arabic_r1/train.py",
             'check_coverage(cov_adapter, params.train.lora, f"saved adapter {adapter_dir}")', "pass",
             ("tests/test_train.py", "-k", "lost_a_family")),
    Mutation("filter-first-200-words", "arabic_r1/decontam.py", "hit = self._index.match(normalized_words(doc.text))",
             "hit = self._index.match(normalized_words(doc.text)[:200])",
             ("tests/test_decontam.py", "-k", "long_document")),
    # ---- our own
    Mutation("information-floor-ignored", "arabic_r1/decontam.py",
             "if info >= self.min_content_words:\n            return found[0]", "if True:\n            return found[0]",
             ("tests/test_decontam.py", "-k", "floor")),
    Mutation("ta-marbuta-not-folded", "arabic_r1/arabic_text.py", '"ة": "ه",', '"ة": "ة",',
             ("tests/test_decontam.py", "-k", "spelling_variants")),
    Mutation("enumerator-kept", "arabic_r1/decontam.py", "while len(words) > 1 and _ENUMERATOR.match(words[0]):",
             "while False:", ("tests/test_decontam.py", "-k", "enumerator")),
    Mutation("budget-overshoots", "arabic_r1/budget.py", "if n > 0 and sel.tokens + n <= hi:", "if n > 0:",
             ("tests/test_budget.py",)),
    Mutation("degeneration-never-fires", "arabic_r1/trace_checks.py", "if repeated > p.max_repeated_ngram_share:",
             "if repeated > 1.0:", ("tests/test_verify.py", "-k", "crafted or planted")),
    Mutation("religious-formulas-kept", "arabic_r1/trace_checks.py",
             "words = _without(_rubric_words(text), rubric.formulas.get(lang, []))", "words = _rubric_words(text)",
             ("tests/test_verify.py", "-k", "formula")),
    Mutation("last-option-label-wins", "arabic_r1/cot.py", "return min(cands)[1]", "return max(cands)[1]",
             ("tests/test_cot.py", "-k", "option")),
    Mutation("cache-key-ignores-sampling", "arabic_r1/completions.py", '    "sampling": sampling,\n    }\n    return json_digest',
             "    }\n    return json_digest",
             ("tests/test_distill.py", "-k", "another_temperature")),
    Mutation("one-rank-random-state-enough", "arabic_r1/checkpoints.py",
             'else [f"rng_state_{r}.pth" for r in range(world_size)]', 'else ["rng_state_0.pth"]',
             ("tests/test_train_ddp.py", "-k", "random_state")),
    Mutation("aratrust-subset-spaces-kept", "arabic_r1/benchmarks.py", 'return row["Category"].replace(" ", "")',
             'return row["Category"]', ("tests/test_benchmarks.py", "tests/test_evaluate.py", "-k", "mirror or aratrust")),
    Mutation("tampered-output-still-fresh", "arabic_r1/manifest.py", 'if path_digest(path) != out["digest"]:',
             "if False:", ("tests/test_pipeline.py", "-k", "modified_output")),
    # ---- the guards of a first real run (issue 29)
    Mutation("frozen-experts-pass", "arabic_r1/moe_lora.py", "    if untouched:\n", "    if False:\n",
             ("tests/test_train.py", "-k", "left_out_of_the_optimizer")),
    Mutation("merge-delta-unchecked", "arabic_r1/moe_lora.py", "if delta.abs().max() > 0 and not bool(",
             "if False and not bool(", ("tests/test_train.py", "-k", "drops_the_expert")),
    Mutation("reasoning-field-dropped", "arabic_r1/teachers.py",
             'text=with_reasoning(choice.message.content or "", reasoning_field(choice.message)),',
             'text=choice.message.content or "",', ("tests/test_distill.py", "-k", "reasoning_parser")),
    Mutation("truncation-as-parse-failure", "arabic_r1/eval_generation.py", "cut = g.truncated and choice is None",
             "cut = False", ("tests/test_evaluate.py", "-k", "cut_off")),
    Mutation("fp8-dequantized-by-transformers", "arabic_r1/model_loading.py",
             'if method in NEEDS_BF16_COPY and (purpose == "train" or not native):', "if False:",
             ("tests/test_model_loading.py", "-k", "fp8")),
    Mutation("stall-ignores-cpu-work", "arabic_r1/pipeline.py",
             "if mtimes != self.mtimes or total - self.cpu_mark >= STALL_CPU_S:", "if mtimes != self.mtimes:",
             ("tests/test_pipeline.py", "-k", "silent_busy")),
    Mutation("unreachable-teacher-not-stopped", "arabic_r1/teachers.py",
             "                if in_a_row >= self.p.max_consecutive_connection_failures:\n                    stop.set()",
             "                pass", ("tests/test_distill.py", "-k", "unreachable")),
    Mutation("hosted-install-unconstrained", "arabic_r1/hosted_install.py",
             "constraints = runtime_constraints(versions)", "constraints = []",
             ("tests/test_hosted_install.py", "-k", "plan_installs")),
    # ---- issue 31: the registries
    Mutation("average-over-fewer-benchmarks", "arabic_r1/benchmarks.py",
             "if not values or any(v is None for v in values):", "values = [v for v in values if v is not None]\n    if not values:",
             ("tests/test_extending.py", "-k", "average")),
    Mutation("family-rank-unchecked", "arabic_r1/moe_lora.py",
             'if r["default"] != want_r or abs(module.scaling["default"] - want_scale) > 1e-9:', "if False:",
             ("tests/test_plan.py", "-k", "peft")),
    Mutation("text-answers-read-as-labels", "arabic_r1/eval_generation.py",
             "answers = spec(benchmark_of(c.name)).answers", 'answers = "labels"',
             ("tests/test_extending.py", "-k", "text_answer")),
)  # fmt: skip


def scratch_copy(dest: Path) -> Path:
    """The repository's tracked and untracked (not ignored) files, without the virtualenv or runs."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def run_one(m: Mutation, copy: Path) -> dict:
    """Plant ``m`` in ``copy``, run its tests, restore the file; killed = the tests failed."""
    target = copy / m.path
    original = target.read_text(encoding="utf-8")
    if original.count(m.old) != 1:
        raise SystemExit(
            f"mutation {m.id}: {m.old!r} occurs {original.count(m.old)} times in {m.path} (expected 1)"
        )
    target.write_text(original.replace(m.old, m.new), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    t0 = time.monotonic()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *m.tests],
            cwd=copy, env=env, capture_output=True, text=True,
        )  # fmt: skip
    finally:
        target.write_text(original, encoding="utf-8")
    tail = (out.stdout + out.stderr).strip().splitlines()
    status = {0: "survived", 5: "no tests ran"}.get(out.returncode, "killed")
    return {"id": m.id, "path": m.path, "status": status, "seconds": round(time.monotonic() - t0, 1),
            "tests": " ".join(m.tests), "last_line": tail[-1] if tail else ""}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", default=None, help="mutation ids to run (default: all)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument(
        "--baseline", action="store_true", help="first run each mutation's tests unmutated (must pass)"
    )
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "mutation")
    args = ap.parse_args()
    chosen = [m for m in MUTATIONS if args.only is None or m.id in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.id:34s} {m.path}")
        return 0
    # next to the repository, so that the tests find ../shared/data from the copy as they do from the repo
    with tempfile.TemporaryDirectory(prefix=".arabic_r1_mutation_", dir=REPO.parent) as tmp:
        copy = scratch_copy(Path(tmp))
        check = subprocess.run([sys.executable, "-c", "import arabic_r1; print(arabic_r1.__file__)"], cwd=copy,
                               env={**os.environ, "PYTHONPATH": str(copy)}, capture_output=True, text=True)  # fmt: skip
        if not check.stdout.strip().startswith(str(copy)):
            raise SystemExit(
                f"the scratch copy is not what Python imports ({check.stdout.strip()}): cannot mutate"
            )
        if args.baseline:
            for m in chosen:
                base = run_one(dataclasses.replace(m, new=m.old), copy)
                if base["status"] != "survived":
                    raise SystemExit(f"{m.id}: its tests fail without the mutation: {base['last_line']}")
            print(f"baseline: the tests of all {len(chosen)} mutations pass unmutated", flush=True)
        results = []
        for i, m in enumerate(chosen, 1):
            r = run_one(m, copy)
            results.append(r)
            print(f"[{i}/{len(chosen)}] {r['status']:12s} {m.id} ({r['seconds']} s)", flush=True)
    killed = sum(r["status"] == "killed" for r in results)
    score = killed / len(results) if results else 0.0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"score": round(score, 3), "results": results}, indent=1)
    )
    print(f"mutation score: {killed}/{len(results)} killed ({score:.0%})")
    for r in results:
        if r["status"] != "killed":
            print(f"  {r['status']}: {r['id']} ({r['path']}; {r['tests']}): {r['last_line']}")
    return 0 if score >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
