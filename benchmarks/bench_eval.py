"""Phase 05 throughput: documents/s of our OALL path vs lighteval's Pipeline called directly, and a full-suite estimate.

    python benchmarks/bench_eval.py [--repeats 2]

Both paths score the tiny model on the same mirror — the real ArabicMMLU, MadinahQA, AraTrust and EXAMS rows of
../shared/data that lighteval's own prompt functions accept (its direct path crashes on the others) — in one
process, alternating, each run with a fresh response cache. Our path adds the guarded prompts, the digest-keyed
cache folder and loading the weights ourselves. Then, from the measured per-document work (choices per document,
prompt length) and stated H100 assumptions, the wall time of the full OALL v2 suite for a 30B-A3B MoE is estimated.
Prints a table and writes runs/bench_eval/results.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "oall"
sys.path.insert(0, str(REPO))

from arabic_r1.benchmark_mirrors import write_mirror  # noqa: E402
from arabic_r1.benchmarks import BENCHMARKS, spec  # noqa: E402
from arabic_r1.eval_generation import _docs  # noqa: E402
from arabic_r1.evaluate import evaluate_model  # noqa: E402
from arabic_r1.oall_tasks import ACC_NORM, Warts, lighteval_configs, task_configs  # noqa: E402
from arabic_r1.params import EvalParams  # noqa: E402
from arabic_r1.tiny_model import save_tiny_moe  # noqa: E402

SPLITS = {"arabic_mmlu": {"test": "test"}, "madinah_qa": {"test": "test"}, "aratrust": {"test": "train"},
          "arabic_exams": {"test": "test"}}  # fmt: skip

# Full OALL v2 eval-split sizes: ASSUMED, approximate, from the datasets' cards (not measurable offline); the
# planner (arabic-r1 plan) uses the same numbers (BenchmarkSpec.docs).
FULL_SUITE_DOCS = {k: s.docs for k, s in BENCHMARKS.items()}
H100 = {
    "active_params": 3.3e9,  # 30B-A3B: ~3.3B parameters active per token
    "peak_bf16_flops": 989e12,  # H100 SXM dense bf16
    "prefill_mfu": 0.25,  # ASSUMED for MoE prefill in vLLM (router + grouped GEMMs, short sequences)
    "chars_per_token_ar": 3.0,  # ASSUMED for a ~150k-vocab tokenizer on Arabic (the tiny BPE is 4k)
    "decode_tok_s": 2_500,  # ASSUMED aggregate vLLM decode throughput, bf16, one H100, ~64 concurrent sequences
    "reasoning_tokens_per_doc": 1_500,  # ASSUMED mean thinking+answer length (params cap: 4096)
    "alrage_answer_tokens": 200,  # eval.alrage_max_new_tokens
}


def real_mirror(out: Path) -> int:
    """The shared rows lighteval's prompt functions accept, in the hub layout."""
    n = 0
    for key, splits in SPLITS.items():
        configs = {c.hf_subset or "default": c for c in lighteval_configs(key)}
        rows: dict = defaultdict(list)
        for file_split, hub_split in splits.items():
            for line in (SHARED / key / f"{file_split}.jsonl").read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                if key == "arabic_exams":
                    row["subject"] = row["id"].rsplit("-", 1)[0]
                subset = spec(key).subset_of(row)
                try:
                    configs[subset].prompt_function(row, configs[subset].name)
                except (ValueError, KeyError):
                    continue
                rows[(subset, hub_split)].append(row)
                n += 1
        write_mirror(out, key, rows)
    return n


def direct(model_dir: Path, mirror: Path, out: Path, batch_size: int) -> dict:
    """lighteval as its docs use it: a model config naming the folder, its own configs."""
    from lighteval.logging.evaluation_tracker import EvaluationTracker
    from lighteval.models.transformers.transformers_model import TransformersModelConfig
    from lighteval.pipeline import ParallelismManager, Pipeline, PipelineParameters

    configs = []
    for key in SPLITS:
        present = {p.name for p in (mirror / lighteval_configs(key)[0].hf_repo).iterdir() if p.is_dir()}
        for c in lighteval_configs(key):
            if (c.hf_subset or "default") in present:
                c = copy.deepcopy(c)
                c.hf_repo = str(mirror / c.hf_repo)
                c.few_shots_split = c.few_shots_select = None
                configs.append(c)
    module = types.ModuleType("direct_tasks")
    module.TASKS_TABLE = configs
    pipeline = Pipeline(
        tasks=",".join(f"{c.name}|0" for c in configs),
        pipeline_parameters=PipelineParameters(launcher_type=ParallelismManager.NONE, custom_tasks_directory=module),
        evaluation_tracker=EvaluationTracker(output_dir=str(out), save_details=True),
        model_config=TransformersModelConfig(model_name=str(model_dir), batch_size=batch_size, device="cpu",
                                             cache_dir=str(out / "cache")),
    )  # fmt: skip
    pipeline.evaluate()
    pipeline.save_and_push_results()
    return pipeline.get_results()


def per_doc_work(ep: EvalParams) -> dict:
    """What one document costs the engine: choices (one forward each) and prompt length."""
    choices, chars = [], []
    for key in SPLITS:
        for c in task_configs(ep, key, Warts())[0]:
            for d in _docs(c, None):
                choices.append(len(d.choices))
                chars.append(len(d.query))
    return {
        "docs": len(choices),
        "choices_per_doc": statistics.mean(choices),
        "prompt_chars": statistics.mean(chars),
    }


def estimate(work: dict) -> dict:
    a = H100
    tokens_per_doc = work["choices_per_doc"] * (work["prompt_chars"] / a["chars_per_token_ar"] + 2)
    flops_per_token = 2 * a["active_params"]
    ll_docs = sum(v for k, v in FULL_SUITE_DOCS.items() if k != "alrage")
    ll_s = ll_docs * tokens_per_doc * flops_per_token / (a["peak_bf16_flops"] * a["prefill_mfu"])
    reasoning_s = ll_docs * a["reasoning_tokens_per_doc"] / a["decode_tok_s"]
    alrage_s = FULL_SUITE_DOCS["alrage"] * a["alrage_answer_tokens"] / a["decode_tok_s"]
    return {"tokens_per_doc": round(tokens_per_doc), "leaderboard_docs": ll_docs, "loglikelihood_h": ll_s / 3600,
            "reasoning_h": reasoning_s / 3600, "alrage_generation_h": alrage_s / 3600}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench_eval")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # lighteval's per-task few-shot warnings
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    n_rows = real_mirror(tmp / "mirror")
    model = save_tiny_moe(tmp / "tiny")
    ep = EvalParams(
        source="mirror", mirror_dir=tmp / "mirror", benchmarks=list(SPLITS), batch_size=args.batch_size
    )
    times: dict[str, list[float]] = {"ours": [], "lighteval": []}
    scores: dict[str, dict] = {}
    for r in range(args.repeats):
        t0 = time.perf_counter()
        ms = evaluate_model("tiny", str(model), ep, tmp / f"ours{r}", Warts(), judge=None)
        times["ours"].append(time.perf_counter() - t0)
        scores["ours"] = ms.subsets
        copy_dir = shutil.copytree(model, tmp / f"direct_model{r}")
        t0 = time.perf_counter()
        res = direct(copy_dir, tmp / "mirror", tmp / f"direct{r}", args.batch_size)
        times["lighteval"].append(time.perf_counter() - t0)
        named = {
            k.rsplit("|", 1)[0].removesuffix(":0"): v[ACC_NORM]
            for k, v in res["results"].items()
            if k != "all"
        }
        scores["lighteval"] = {k: v for k, v in named.items() if not k.endswith(":_average")}
    work = per_doc_work(ep)
    best = {k: min(v) for k, v in times.items()}
    overhead = best["ours"] / best["lighteval"] - 1
    same = scores["ours"] == scores["lighteval"]
    if not same:
        print("score mismatch:", sorted(set(scores["ours"].items()) ^ set(scores["lighteval"].items())))
    est = estimate(work)
    print(f"documents: {work['docs']} ({n_rows} real rows accepted by lighteval's prompts), tiny model, CPU, "
          f"batch {args.batch_size}, best of {args.repeats}")  # fmt: skip
    print(f"{'path':<12}{'seconds':>10}{'docs/s':>10}")
    for k, v in best.items():
        print(f"{k:<12}{v:>10.2f}{work['docs'] / v:>10.1f}")
    print(f"our overhead: {overhead:+.1%} (target <= 10%); identical scores: {same}")
    print(f"\nfull OALL v2 suite, 30B-A3B MoE, one H100 (ESTIMATE; per-document work measured on the real rows: "
          f"{work['choices_per_doc']:.2f} choices, {work['prompt_chars']:.0f} prompt chars):")  # fmt: skip
    print(f"  leaderboard log-likelihood, {est['leaderboard_docs']:,} docs x ~{est['tokens_per_doc']} tokens: "
          f"{est['loglikelihood_h']:.2f} h")  # fmt: skip
    print(f"  reasoning scoring (generate + parse): {est['reasoning_h']:.1f} h;  ALRAGE answers: "
          f"{est['alrage_generation_h']:.2f} h (+ the 72B judge, on its own server)")  # fmt: skip
    print("  assumptions: " + ", ".join(f"{k}={v:g}" for k, v in H100.items()))
    print(
        "  doc counts (assumed, dataset cards): "
        + ", ".join(f"{k} {v:,}" for k, v in FULL_SUITE_DOCS.items())
    )
    results = {"docs": work["docs"], "seconds": times, "best": best, "overhead": overhead, "identical_scores": same,
               "per_doc_work": work, "estimate_h100_30b_a3b": est, "assumptions": H100,
               "full_suite_docs_assumed": FULL_SUITE_DOCS}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
