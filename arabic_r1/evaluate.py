"""Phase 05: the seven OALL v2 benchmarks with lighteval 0.13 — leaderboard scoring, reasoning scoring, ALRAGE judge.

Lighteval is the engine: its own Arabic task configs and prompt functions, its Pipeline and its normalised
log-likelihood accuracy. The parts: oall_tasks.py (which tasks, on which rows), eval_models.py (the model under test
and lighteval's scoring), eval_generation.py (generated answers, reasoning scoring, the ALRAGE judge); this module
runs them for every model of ``eval.models`` and writes the scores.
"""

from __future__ import annotations

import csv
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arabic_r1.audit import audit_models, write_audit
from arabic_r1.benchmark_mirrors import mirror_digests
from arabic_r1.benchmarks import average, benchmark_of, counted_in_average, spec
from arabic_r1.eval_generation import cached_generations, generator, read_outputs, run_alrage, run_reasoning
from arabic_r1.eval_models import model_cache_dir, run_lighteval, subset_scores
from arabic_r1.jsonl import read_jsonl, write_json_atomic, write_jsonl
from arabic_r1.manifest import PhaseRun, base_model_path, upstream_outputs
from arabic_r1.oall_tasks import ACC_NORM, EvalSetupError, Warts, task_configs
from arabic_r1.params import DistillParams, EvalParams, Params
from arabic_r1.reasoning_format import ReasoningFormat
from arabic_r1.trace_checks import morphology_cache

log = logging.getLogger(__name__)

SCORES_FILE = "scores.csv"
SUBSET_FILE = "subset_scores.csv"
WARTS_FILE = "data_warts.json"
ITEMS_FILE = "item_scores.jsonl"


# -------------------------------------------------------------------------------------------- the phase
@dataclass
class ModelScores:
    label: str
    path: str
    leaderboard: dict[str, float] = field(default_factory=dict)  # benchmark -> mean acc_norm over its subsets
    subsets: dict[str, float] = field(default_factory=dict)  # task -> acc_norm
    lighteval_all: float | None = None
    reasoning: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # benchmark -> accuracy, parse failures
    judged: dict[str, Any] | None = (
        None  # the judged benchmark (ALRAGE): its key, judge score /10 as a share, counts
    )
    seconds: dict[str, float] = field(default_factory=dict)
    # scoring (leaderboard | reasoning) -> task -> document id -> score (1/0, or the judge's 0-1): phase 06's intervals
    items: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def board(self) -> dict[str, float]:
        """Every benchmark's leaderboard score: acc_norm, and the judge score of the judged benchmark."""
        judged = {self.judged["benchmark"]: self.judged["score"]} if self.judged else {}
        return {**self.leaderboard, **judged}


def evaluate_model(
    label: str,
    model_path: str,
    ep: EvalParams,
    out_dir: Path,
    warts: Warts,
    judge: DistillParams | None,
    dtype: str = "float32",
    reasoning_format: ReasoningFormat = "think_tags",
) -> ModelScores:
    """Every selected benchmark and scoring for one model."""
    import torch

    # lighteval switches autograd off for the whole process (at import of its transformers model, and again in its
    # constructor): a notebook or test that trains after evaluating would get "does not require grad". Restore it.
    with torch.set_grad_enabled(torch.is_grad_enabled()):
        return _evaluate_model(label, model_path, ep, out_dir, warts, judge, dtype, reasoning_format)


def _evaluate_model(
    label: str,
    model_path: str,
    ep: EvalParams,
    out_dir: Path,
    warts: Warts,
    judge: DistillParams | None,
    dtype: str,
    reasoning_format: ReasoningFormat,
) -> ModelScores:
    ms = ModelScores(label, model_path)
    mc_configs, judged_config, judged_key = [], None, None
    for b in ep.benchmarks:
        configs, missing = task_configs(ep, b, warts)
        if missing and warts.add(
            b, None, "subsets_not_in_mirror", ", ".join(missing)
        ):  # said once, not per model
            log.warning(
                "%s: %d OALL v2 subsets are not in the mirror and are not scored (e.g. %s)",
                b,
                len(missing),
                missing[0],
            )
        if spec(b).scoring == "judged":
            judged_config, judged_key = (configs[0] if configs else None), b
        else:
            mc_configs += configs
    if judged_config is not None and judge is None:
        raise EvalSetupError(f"{judged_key} is judged by an LLM: set eval.judge")
    if "loglikelihood" in ep.scoring and mc_configs:
        t0 = time.monotonic()
        results, ms.items["leaderboard"] = run_lighteval(
            model_path, mc_configs, out_dir / "lighteval" / label, out_dir / "lighteval_cache", ep, dtype
        )
        ms.seconds["loglikelihood"] = round(time.monotonic() - t0, 2)
        ms.subsets = subset_scores(results, mc_configs)
        overall = results["results"].get("all", {}).get(ACC_NORM)
        ms.lighteval_all = None if overall is None else float(overall)
        by: dict[str, list[float]] = defaultdict(list)
        for task, v in ms.subsets.items():
            by[benchmark_of(task)].append(v)
        ms.leaderboard = {b: sum(v) / len(v) for b, v in by.items()}
    if ("reasoning" in ep.scoring and mc_configs) or judged_config is not None:
        cache = model_cache_dir(out_dir / "lighteval_cache", model_path) / f"generations.{ep.backend}.jsonl"
        generate = cached_generations(generator(model_path, ep, dtype), cache)
        if "reasoning" in ep.scoring and mc_configs:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_path)
            t0 = time.monotonic()
            per_task = run_reasoning(
                generate,
                mc_configs,
                ep,
                out_dir / f"reasoning_{label}.jsonl",
                reasoning_format,
                lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]),
            )
            ms.seconds["reasoning"] = round(time.monotonic() - t0, 2)
            ms.items["reasoning"] = _items(
                out_dir / f"reasoning_{label}.jsonl",
                lambda r: float(r["choice"] == r["gold"]),
                lambda r: r["task"],
            )
            by_b: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for task, r in per_task.items():
                by_b[benchmark_of(task)].append(r)
            ms.reasoning = {
                b: {
                    "accuracy": sum(r["accuracy"] for r in rs) / len(rs),
                    **{
                        rate: sum(r[rate] * r["n"] for r in rs) / max(sum(r["n"] for r in rs), 1)
                        for rate in ("parse_failure_rate", "truncated_rate")
                    },
                }
                for b, rs in by_b.items()
            }
        if judged_config is not None:
            t0 = time.monotonic()
            ms.judged = {
                "benchmark": judged_key,
                **run_alrage(
                    generate,
                    judged_config,
                    ep,
                    judge,
                    out_dir / f"{judged_key}_{label}.jsonl",
                    reasoning_format,
                ),
            }
            ms.seconds[judged_key] = round(time.monotonic() - t0, 2)
            ms.items.setdefault("leaderboard", {}).update(
                _items(
                    out_dir / f"{judged_key}_{label}.jsonl",
                    lambda r: r["score"] or 0.0,
                    lambda r: judged_config.name,
                )
            )  # unparseable and failed judgements score 0, as in the benchmark's score
    return ms


def _items(details: Path, score: Any, task: Any) -> dict[str, dict[str, float]]:
    """{task: {id: score}} from a details file phase 05 wrote (one row per document)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for r in read_jsonl(details):
        out[task(r)][str(r["id"])] = float(score(r))
    return dict(out)


def write_item_scores(models: list[ModelScores], path: Path) -> Path:
    """``item_scores.jsonl``: one row per model, scoring, task and document."""
    write_jsonl(
        path,
        [
            {"model": m.label, "scoring": scoring, "task": task, "id": i, "score": v}
            for m in models
            for scoring, tasks in m.items.items()
            for task, scores in tasks.items()
            for i, v in scores.items()
        ],
    )
    return path


def tidy_rows(models: list[ModelScores]) -> list[dict[str, Any]]:
    """model x benchmark x metric, the table the report reads."""
    rows = []
    for m in models:
        for b, v in m.leaderboard.items():
            rows.append(
                {
                    "model": m.label,
                    "benchmark": b,
                    "metric": "acc_norm (leaderboard, mean over subsets)",
                    "value": round(v, 4),
                }
            )
        if m.judged:
            rows.append(
                {
                    "model": m.label,
                    "benchmark": m.judged["benchmark"],
                    "metric": f"judge score /10 ({m.judged['judge']})",
                    "value": round(m.judged["score"], 4),
                }
            )
        board = m.board()
        counted = counted_in_average(board)
        mean = average(board, counted)
        if mean is not None:
            rows.append(
                {
                    "model": m.label,
                    "benchmark": "average",
                    "metric": f"mean of {len(counted)} benchmarks",
                    "value": round(mean, 4),
                }
            )
        if m.lighteval_all is not None:
            rows.append(
                {
                    "model": m.label,
                    "benchmark": "lighteval all",
                    "metric": "lighteval's 'all': mean over every task, not over benchmarks",
                    "value": round(m.lighteval_all, 4),
                }
            )
        for b, r in m.reasoning.items():
            rows.append(
                {
                    "model": m.label,
                    "benchmark": b,
                    "metric": "accuracy (reasoning: answer after </think>)",
                    "value": round(r["accuracy"], 4),
                }
            )
            rows.append(
                {
                    "model": m.label,
                    "benchmark": b,
                    "metric": "parse failure rate (reasoning)",
                    "value": round(r["parse_failure_rate"], 4),
                }
            )
            rows.append(
                {
                    "model": m.label,
                    "benchmark": b,
                    "metric": "truncated rate (reasoning: cut off by eval.reasoning_max_new_tokens)",
                    "value": round(r["truncated_rate"], 4),
                }
            )
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["model"])
        w.writeheader()
        w.writerows(rows)


def resolve_models(params: Params, run_dir: Path) -> list[tuple[str, str]]:
    out = []
    for m in params.eval.models:
        if m == "base":
            out.append(("base", base_model_path(params, run_dir, "oall_evaluation")))
        elif m == "finetuned":
            outputs = upstream_outputs(run_dir, "oall_evaluation", "moe_lora_sft")
            kind = next(
                (k for k in ("merged", "adapter") if k in outputs), None
            )  # merged when phase 04 made one
            if kind is None:
                raise EvalSetupError(
                    "eval.models has 'finetuned' but phase 04 left no merged model or adapter"
                )
            out.append(("finetuned", str(outputs[kind])))
        else:
            out.append((m.rsplit("/", 1)[-1], m))
    return out


@dataclass
class EvalResult:
    models: list[ModelScores]
    scores_path: Path
    warts: dict[str, Any]


def run_oall_evaluation(params: Params, phase: PhaseRun) -> EvalResult:
    """Phase 05 entry point for the notebook: every model of eval.models on every selected benchmark."""
    ep = params.eval
    judged = [b for b in ep.benchmarks if spec(b).scoring == "judged"]
    if judged and ep.judge is None:
        raise EvalSetupError(f"{judged[0]} is judged by an LLM: set eval.judge")
    judge = ep.judge
    if judge is not None and judge.teacher == "embedded":
        judge = judge.model_copy(
            update={"teacher": base_model_path(params, phase.run_dir, "oall_evaluation")}
        )
    warts = Warts()
    dtype = {"bfloat16": "bfloat16", "float16": "float16"}.get(params.model.dtype, "float32")
    models = [
        evaluate_model(label, path, ep, phase.dir, warts, judge, dtype, params.model.reasoning_format)
        for label, path in resolve_models(params, phase.run_dir)
    ]
    rows = tidy_rows(models)
    write_csv(phase.dir / SCORES_FILE, rows)
    write_csv(
        phase.dir / SUBSET_FILE,
        [
            {"model": m.label, "task": t, "acc_norm": round(v, 4)}
            for m in models
            for t, v in m.subsets.items()
        ],
    )
    w = warts.summary()
    write_json_atomic(phase.dir / WARTS_FILE, w, indent=1)
    details = {m.label: phase.dir / f"reasoning_{m.label}.jsonl" for m in models if m.reasoning}
    audit_files: dict[str, Path] = {}
    if details:  # the student's own traces, through phase 03's checks
        with morphology_cache(params.verify.morphology_cache):
            result = audit_models(
                {label: read_outputs(p) for label, p in details.items()},
                params.verify,
                params.model.reasoning_format,
            )
        audit_files = dict(
            zip(("student_audit", "student_audit_csv"), write_audit(result, phase.dir), strict=True)
        )
    scores = [{k: v for k, v in m.__dict__.items() if k != "items"} for m in models]
    write_json_atomic(phase.dir / "model_scores.json", scores, indent=1)
    phase.finish(
        {
            "scores": phase.dir / SCORES_FILE,
            "subset_scores": phase.dir / SUBSET_FILE,
            "model_scores": phase.dir / "model_scores.json",
            "item_scores": write_item_scores(models, phase.dir / ITEMS_FILE),
            **audit_files,
        },
        {
            "models": [m.label for m in models],
            "rows": len(rows),
            "warts": w["counts"],
            "benchmark_digests": mirror_digests(params.eval.mirror_dir, params.eval.benchmarks)
            if params.eval.source == "mirror"
            else {},
        },
    )
    return EvalResult(models, phase.dir / SCORES_FILE, w)
