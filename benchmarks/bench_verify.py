"""Phase 03 throughput: checks per second, per check, on the smoke traces and on 10k synthetic traces.

    python benchmarks/bench_verify.py [--synthetic 10000]

The synthetic traces recombine the shipped hand-written traces (sentences shuffled within each phase) and swap 5%
of the words for words of the real Arabic/English corpora in ../shared/data, so the vocabulary grows as it would
over a real run. The morphology check is timed with a cold per-type cache (first pass) and a warm one (second
pass over the same traces). Prints a table and writes runs/bench_verify/results.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

from arabic_r1.cot import HEADINGS, PHASES, parse_trace  # noqa: E402
from arabic_r1.params import load_params  # noqa: E402
from arabic_r1.trace_checks import _KNOWN, CHECKS, Trace  # noqa: E402


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def shipped_traces() -> list[Trace]:
    rows = {}
    for f in (REPO / "arabic_r1/resources/smoke_data").glob("*.jsonl"):
        cat, lang, _ = f.name.split(".")
        for r in read_jsonl(f):
            rows[r["id"]] = (lang, cat, r)
    out = []
    for e in read_jsonl(REPO / "arabic_r1/resources/teacher_cache/smoke_v1.jsonl"):
        lang, cat, r = rows[e["prompt_id"]]
        out.append(
            Trace(e["prompt_id"], lang, cat, r["prompt"], e["text"], r["answer"], parse_trace(e["text"]))
        )
    return out


def synthetic(base: list[Trace], n: int, seed: int = 0) -> list[Trace]:
    rng = random.Random(seed)
    vocab = {"ar": [], "en": []}
    for name, lang, field in (
        ("ar_pud_sentences", "ar", "text"),
        ("ar_arcd_paragraphs", "ar", "context"),
        ("en_pud_sentences", "en", "text"),
    ):
        for r in read_jsonl(SHARED / "corpus" / f"{name}.jsonl"):
            vocab[lang] += r[field].split()
    out = []
    for i in range(n):
        t = rng.choice(base)
        idx = 0 if t.lang == "ar" else 1
        parts = []
        for phase in PHASES:
            sentences = (t.parsed.phases.get(phase) or "").split(". ")
            rng.shuffle(sentences)
            words = ". ".join(sentences).split()
            for k in range(len(words)):
                if rng.random() < 0.05:
                    words[k] = rng.choice(vocab[t.lang])
            parts.append(f"{HEADINGS[phase][idx]}: {' '.join(words)}")
        answer_prefix = "الإجابة" if t.lang == "ar" else "Answer"
        text = "<think>\n" + "\n".join(parts) + f"\n</think>\n{answer_prefix}: {t.parsed.answer}"
        out.append(Trace(f"syn{i}", t.lang, t.category, t.prompt, text, t.gold, parse_trace(text)))
    return out


def timed(traces: list[Trace], p) -> dict[str, float]:
    seconds = {}
    for name in p.checks:
        check = CHECKS[name]
        t0 = time.perf_counter()
        for t in traces:
            check(t, p)
        seconds[name] = time.perf_counter() - t0
    return seconds


def report(label: str, traces: list[Trace], seconds: dict[str, float]) -> dict:
    total = sum(seconds.values())
    row = {
        "traces": len(traces),
        "seconds": round(total, 2),
        "traces_per_s": round(len(traces) / total, 1),
        "checks_per_s": round(len(traces) * len(seconds) / total, 1),
        "share_per_check": {k: round(v / total, 3) for k, v in seconds.items()},
    }
    print(
        f"{label}: {row['traces']} traces, {row['seconds']} s, {row['traces_per_s']} traces/s, {row['checks_per_s']} checks/s"
    )
    print("   " + ", ".join(f"{k} {v:.0%}" for k, v in row["share_per_check"].items()))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench_verify")
    args = ap.parse_args()
    p = load_params("smoke").verify
    base = shipped_traces()
    timed(base[:2], p)  # imports and model loads (qalsadi, langid) are not what we measure
    _KNOWN.clear()
    results = {"smoke_cold": report("smoke traces, cold morphology cache", base, timed(base, p))}
    results["smoke_warm"] = report("smoke traces, warm cache", base, timed(base, p))
    syn = synthetic(base, args.synthetic)
    _KNOWN.clear()
    results["synthetic_cold"] = report(f"{len(syn)} synthetic traces, cold cache", syn, timed(syn, p))
    results["synthetic_warm"] = report(f"{len(syn)} synthetic traces, warm cache", syn, timed(syn, p))
    results["word_types_cached"] = len(_KNOWN)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
