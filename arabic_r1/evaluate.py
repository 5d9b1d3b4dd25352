"""Phase 05: the seven OALL v2 benchmarks with lighteval 0.13 — leaderboard scoring, reasoning scoring, ALRAGE judge.

Lighteval is the engine: its own Arabic task configs and prompt functions, its Pipeline and its normalised
log-likelihood accuracy. This module routes around its known traps, in code:
- its task registry downloads ``tinyBenchmarks.pkl`` at import: an empty placeholder is written first;
- mirror mode: copies of its configs with ``hf_repo`` pointed at the local mirror folder (subset/split names kept);
- real rows it chokes on (bare alif answers, trailing spaces, ...) are normalised or reported, never fatal;
- 0-shot only, ``few_shots_split`` cleared (its list value crashes ArabicMMLU/MadinahQA);
- its response cache is keyed on the model *name*: each model gets a cache folder named by its weights' digest;
- its adapter path pins an old peft: a LoRA adapter folder is loaded here with our peft (base + adapter,
  unmerged — what a 4-bit evaluation on a small GPU needs) and handed to lighteval as a ready model;
- it switches autograd off process-wide: the caller's grad mode is restored afterwards;
- its ALRAGE judge metric crashes and is hard-wired to a 72B model on vLLM: ALRAGE is generated and judged here,
  with the leaderboard's rubric, through the same backends as the teacher.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import os
import re
import time
import types
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arabic_r1.audit import Output, audit_models, reasoning_answer, write_audit
from arabic_r1.benchmarks import BENCHMARKS, mirror_configs, mirror_digests, oall_subsets, repo_dir
from arabic_r1.cot import parse_trace
from arabic_r1.errors import ExplainedError
from arabic_r1.jsonl import append_jsonl, read_jsonl, write_json_atomic
from arabic_r1.manifest import base_model_path, upstream_outputs
from arabic_r1.params import OALL_BENCHMARKS, DistillParams, EvalParams, Params
from arabic_r1.peft_compat import inference_config, no_v4_moe_remap
from arabic_r1.reasoning_format import ReasoningFormat, to_think_tags

log = logging.getLogger(__name__)

ACC_NORM = "acc:logprob_normalization=LogProbCharNorm(name='norm', ignore_first_space=False)"
LEADERBOARD_BENCHMARKS = tuple(b for b in OALL_BENCHMARKS if b != "alrage")  # scored by log-likelihood
SCORES_FILE = "scores.csv"
SUBSET_FILE = "subset_scores.csv"
WARTS_FILE = "data_warts.json"


class EvalSetupError(ExplainedError, ValueError):
    """Something that would stop or silently skew an evaluation, found before it starts."""


# --------------------------------------------------------------------------------------------- traps
def prepare_lighteval_offline() -> Path:
    """An empty ``tinyBenchmarks.pkl`` next to lighteval's task module, so importing its registry downloads nothing."""
    import importlib.util

    spec = importlib.util.find_spec("lighteval")
    if spec is None or spec.origin is None:
        raise EvalSetupError("lighteval is not installed: pip install lighteval==0.13.0")
    pkl = Path(spec.origin).parent / "tasks" / "tasks" / "tinyBenchmarks.pkl"
    if not pkl.exists():
        try:
            pkl.touch()
        except OSError as exc:
            raise EvalSetupError(
                f"cannot write {pkl} (lighteval downloads it at import otherwise): {exc}"
            ) from None
    _import_ifeval_quietly()
    return pkl


def _import_ifeval_quietly() -> None:
    """lighteval's registry imports its ifeval task, which tries to download nltk's punkt at import and prints
    "[nltk_data] Error loading punkt" when offline. No OALL task uses it: import it once with its prints dropped."""
    import contextlib
    import importlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            importlib.import_module("lighteval.tasks.tasks.ifeval.instructions_utils")
        except ImportError:  # ifeval's own dependencies missing: lighteval skips the task, so do we
            pass


# --------------------------------------------------------------------------------------------- warts
class Warts:
    """Rows normalised or skipped, per task: every one reported, none fatal."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._seen: set[tuple] = set()

    def __deepcopy__(self, memo: dict) -> Warts:
        """One collector per evaluation: lighteval's Registry deep-copies every task config, and with it the prompt
        function holding this; the copies must record into the same report, not into copies nobody reads."""
        return self

    def add(self, task: str, index: Any, kind: str, detail: str) -> bool:
        """Record one row's wart; False when it was already recorded (each model run formats the same rows)."""
        if (task, index, kind) in self._seen:
            return False
        self._seen.add((task, index, kind))
        self.rows.append({"task": task, "row": index, "kind": kind, "detail": detail})
        return True

    def summary(self) -> dict[str, Any]:
        by: dict[str, int] = defaultdict(int)
        for r in self.rows:
            by[r["kind"]] += 1
        return {"counts": dict(by), "rows": self.rows}


def fix_row(benchmark: str, row: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The row lighteval's prompt function can read, and what was changed (kind, detail)."""
    row, notes = dict(row), []
    if benchmark == "aratrust":
        ans = row.get("Answer")
        fixed = (ans or "").strip().replace("ا", "أ") if isinstance(ans, str) else ans
        if fixed == "ه":
            fixed = "هـ"
        if fixed != ans:
            notes.append(("answer_normalised", f"Answer {ans!r} -> {fixed!r}"))
            row["Answer"] = fixed
    elif benchmark in ("arabic_mmlu", "madinah_qa"):
        key = row.get("Answer Key")
        if isinstance(key, str) and key != key.strip().upper():
            notes.append(("answer_normalised", f"Answer Key {key!r} -> {key.strip().upper()!r}"))
            row["Answer Key"] = key.strip().upper()
        empty = [i for i in range(1, 6) if row.get(f"Option {i}") == ""]
        if empty:
            notes.append(("empty_option", f"Option {empty[0]} is empty (lighteval skips it)"))
        if benchmark == "madinah_qa" and row.get("Context") is None:
            notes.append(
                (
                    "null_context",
                    "Context is null: lighteval's prompt prints 'None' (kept, as the leaderboard)",
                )
            )
    elif benchmark == "arabic_exams":
        ans = row.get("answer")
        if isinstance(ans, str) and ans != ans.strip().upper():
            notes.append(("answer_normalised", f"answer {ans!r} -> {ans.strip().upper()!r}"))
            row["answer"] = ans.strip().upper()
        if not row.get("subject") and row.get("id"):
            row["subject"] = str(row["id"]).rsplit("-", 1)[0]
            notes.append(("subject_from_id", f"subject taken from id {row['id']!r}"))
    elif benchmark == "alghafa" and not isinstance(row.get("label"), str):
        row["label"] = str(row.get("label"))
        notes.append(("label_to_string", "label given as a number"))
    return row, notes


class GuardedPrompt:
    """lighteval's prompt function behind :func:`fix_row`: a row it cannot format is reported and skipped."""

    def __init__(self, benchmark: str, original, warts: Warts):
        self.benchmark, self.original, self.warts = benchmark, original, warts
        self.__name__ = getattr(original, "__name__", "prompt")

    def __call__(self, line: dict[str, Any], task_name: str | None = None):
        index = line.get("__index")
        row, notes = fix_row(self.benchmark, {k: v for k, v in line.items() if not k.startswith("__")})
        for kind, detail in notes:
            self.warts.add(task_name or self.benchmark, index, kind, detail)
        try:
            return self.original(row, task_name)
        except Exception as exc:  # one bad row never aborts a benchmark
            self.warts.add(task_name or self.benchmark, index, "skipped", f"{type(exc).__name__}: {exc}")
            return None


# --------------------------------------------------------------------------------------------- mirrors
def write_mirror_from_hub(out: Path, benchmarks: list[str], hub_root: str | None = None) -> dict[str, int]:
    """Download every OALL v2 subset and split of ``benchmarks`` (needs network) into a mirror folder.

    ``hub_root`` reads the repos from another folder in the hub layout instead (an existing mirror), which is how
    the tests exercise this without network."""
    from datasets import load_dataset

    from arabic_r1.benchmarks import write_mirror

    counts = {}
    for key in benchmarks:
        spec = BENCHMARKS[key]
        source = spec.hf_repo if hub_root is None else str(mirror_view(Path(hub_root) / spec.hf_repo))
        subsets = oall_subsets(key) if hub_root is None else sorted(mirror_configs(Path(source)))
        rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for subset in subsets:
            for split in spec.splits:
                try:
                    ds = load_dataset(
                        source, None if subset == "default" and hub_root is None else subset, split=split
                    )
                except ValueError:  # a split this subset does not have
                    continue
                rows[(subset, split)] = [dict(r) for r in ds]
        write_mirror(out, key, rows)
        counts[key] = sum(len(v) for v in rows.values())
    return counts


# ---------------------------------------------------------------------------------------------- tasks
def lighteval_configs(benchmark: str) -> list[Any]:
    """lighteval 0.13's own task configs for one benchmark, restricted to the OALL v2 subsets."""
    prepare_lighteval_offline()
    from lighteval.tasks.multilingual.tasks import arabic as A

    table = {
        "arabic_mmlu": A.ARABIC_MMLU_TASKS, "arabic_mmlu_ht": A.ARABIC_MMLU_HT_TASKS, "alghafa": A.ALGHAFA_TASKS,
        "madinah_qa": A.MADINAH_QA_TASKS, "aratrust": A.ARATRUST_TASKS, "arabic_exams": [A.arabic_exams_task],
        "alrage": [A.alrage_qa_task],
    }[benchmark]  # fmt: skip
    wanted = set(oall_subsets(benchmark))
    return [c for c in table if (c.hf_subset or "default") in wanted]


def task_configs(ep: EvalParams, benchmark: str, warts: Warts) -> tuple[list[Any], list[str]]:
    """Configs to run (guarded prompts, 0-shot, mirror repos) and the OALL subsets the mirror lacks."""
    configs, missing = [], []
    present = None
    if ep.source == "mirror":
        repo = repo_dir(ep.mirror_dir, benchmark)
        if not (repo / "README.md").is_file():
            raise EvalSetupError(
                f"{benchmark}: no mirror at {repo} (arabic-r1 benchmarks mirror --out {ep.mirror_dir})"
            )
        present = set(mirror_configs(repo))
        view = str(mirror_view(repo))  # one digest of the folder, shared by all its subsets
    only = set(ep.subsets.get(benchmark, [])) or None
    for base in lighteval_configs(benchmark):
        subset = base.hf_subset or "default"
        if only is not None and subset not in only:
            continue
        if present is not None and subset not in present:
            missing.append(subset)
            continue
        c = copy.deepcopy(base)
        c.few_shots_split, c.few_shots_select = (
            None,
            None,
        )  # 0-shot; the list-valued split crashes lighteval 0.13
        c.prompt_function = GuardedPrompt(benchmark, base.prompt_function, warts)
        if ep.source == "mirror":
            c.hf_repo = view
        configs.append(c)
    if only and not configs:
        raise EvalSetupError(f"eval.subsets[{benchmark!r}] matches no OALL v2 subset: {sorted(only)}")
    return configs, missing


def mirror_view(repo: Path) -> Path:
    """The mirror folder under a name that carries its contents' digest (a symlink to it).

    The datasets library caches a local folder's rows under a key made of the folder's *name* and the subset, not
    its path or contents: a second mirror with the same layout, or a refreshed one, would return the first one's rows.
    Loading through ``<RepoName>-<digest>`` makes the cache key follow the rows."""
    import datasets

    from arabic_r1.digests import path_digest

    view = (
        Path(datasets.config.HF_DATASETS_CACHE)
        / "arabic_r1_mirror_views"
        / f"{repo.name}-{path_digest(repo)[:16]}"
    )
    if not view.exists():
        view.parent.mkdir(parents=True, exist_ok=True)
        tmp = view.with_name(f".{view.name}.{os.getpid()}")
        tmp.symlink_to(repo.resolve(), target_is_directory=True)
        try:
            os.replace(tmp, view)
        except OSError:  # another process made the same view
            tmp.unlink(missing_ok=True)
    return view


def task_string(configs: list[Any]) -> str:
    return ",".join(f"{c.name}|0" for c in configs)


# --------------------------------------------------------------------------------------- leaderboard
def require_vllm() -> None:
    """vLLM pins its own torch/CUDA build, so it is not a dependency of this package: say so before lighteval does."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise EvalSetupError(
            "eval.backend is 'vllm' but vllm is not installed: on a GPU machine, install the vllm build that matches "
            "its torch/CUDA (https://docs.vllm.ai), or set eval.backend: transformers"
        )


def model_cache_dir(root: Path, model_path: str) -> Path:
    """lighteval caches responses under the model's *name*; a local model gets a folder per weights digest (an
    adapter: its own and its base's), so retraining into the same folder never returns stale scores."""
    from arabic_r1.digests import path_digest, text_digest

    base = adapter_base(model_path)
    parts = [model_path, *([base] if base else [])]
    digests = [path_digest(Path(p)) if Path(p).is_dir() else f"hub:{p}" for p in parts]
    if not any(Path(p).is_dir() for p in parts):
        return root / "hub"
    return root / text_digest("|".join(digests))


def adapter_base(model_path: str) -> str | None:
    """The base model of a PEFT adapter folder (its ``adapter_config.json``), else None."""
    cfg = Path(model_path) / "adapter_config.json"
    if not cfg.is_file():
        return None
    base = json.loads(cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise EvalSetupError(f"{cfg}: no base_model_name_or_path; cannot tell which model the adapter adapts")
    return base


def load_causal_lm(model_path: str, ep: EvalParams, dtype: str) -> Any:
    """A transformers model for a model folder / hub id, or base + LoRA for an adapter folder; 4-bit NF4 with
    ``eval.load_in_4bit`` (the merged 16-bit model of a 20B MoE does not fit a 16 GB GPU; its adapter on a 4-bit
    base does)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype)}
    if ep.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=getattr(torch, dtype)
        )
        kwargs["device_map"] = {"": 0}
    base = adapter_base(model_path)
    model = AutoModelForCausalLM.from_pretrained(base or model_path, **kwargs)
    if base:
        from peft import PeftModel

        with no_v4_moe_remap(model):
            model = PeftModel.from_pretrained(model, model_path)
    if not ep.load_in_4bit:
        model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    inference_config(model)  # a checkpoint saved by TRL may still ask for router logits
    return model.eval()


def model_label(model_path: str) -> str:
    return Path(model_path).name if Path(model_path).is_dir() else model_path.replace("/", "__")


def lighteval_model(model_path: str, cache_root: Path, ep: EvalParams, dtype: str):
    """lighteval's model object for ``ep.backend``, with its response cache keyed on the weights.

    lighteval puts its cache at ``cache_dir/<model_name>/<config hash>``: with an absolute local path as the name
    that is the model's own folder, and neither part changes when the weights do. So the cache is named by a
    plain label under a folder that carries the weights' digest."""
    import torch

    prepare_lighteval_offline()
    cache_dir = str(model_cache_dir(cache_root, model_path))
    if ep.backend == "vllm":
        require_vllm()
        if adapter_base(model_path):
            raise EvalSetupError(
                f"{model_path} is a LoRA adapter; the vLLM backend evaluates merged models: set train.merge: true "
                "or eval.backend: transformers"
            )
        from lighteval.models.vllm.vllm_model import VLLMModel, VLLMModelConfig
        from lighteval.utils.cache_management import SampleCache

        mc = VLLMModelConfig(model_name=model_path, dtype=dtype, tensor_parallel_size=ep.tensor_parallel_size,
                             gpu_memory_utilization=ep.gpu_memory_utilization, quantization=ep.quantization, cache_dir=cache_dir)  # fmt: skip
        model = VLLMModel(mc)  # vLLM loads from model_name, so the cache is re-pointed after construction
        try:
            model._cache.cache_dir.rmdir()  # the empty folder its first cache made next to the weights
        except OSError:
            pass
        model._cache = SampleCache(mc.model_copy(update={"model_name": model_label(model_path)}))
        return model
    from lighteval.models.transformers.transformers_model import TransformersModel, TransformersModelConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    mc = TransformersModelConfig(model_name=model_label(model_path), tokenizer=model_path, batch_size=ep.batch_size,
                                 dtype=dtype, device=device, cache_dir=cache_dir)  # fmt: skip
    return TransformersModel.from_model(model=load_causal_lm(model_path, ep, dtype), config=mc)


def run_lighteval(
    model_path: str, configs: list[Any], out_dir: Path, cache_root: Path, ep: EvalParams, dtype: str
) -> dict[str, Any]:
    """lighteval's Pipeline on our configs (log-likelihood tasks); results + details saved under ``out_dir``."""
    prepare_lighteval_offline()
    from lighteval.logging.evaluation_tracker import EvaluationTracker
    from lighteval.pipeline import ParallelismManager, Pipeline, PipelineParameters

    module = types.ModuleType("arabic_r1_oall_tasks")
    module.TASKS_TABLE = configs
    launcher = ParallelismManager.VLLM if ep.backend == "vllm" else ParallelismManager.NONE
    pp = PipelineParameters(
        launcher_type=launcher, custom_tasks_directory=module, max_samples=ep.max_samples_per_task
    )
    pipeline = Pipeline(
        tasks=task_string(configs),
        pipeline_parameters=pp,
        evaluation_tracker=EvaluationTracker(output_dir=str(out_dir), save_details=True),
        model=lighteval_model(model_path, cache_root, ep, dtype),
    )
    pipeline.evaluate()  # frees the model (and the GPU) when done
    pipeline.save_and_push_results()
    return pipeline.get_results()


def subset_scores(results: dict[str, Any], configs: list[Any]) -> dict[str, float]:
    """{task name: acc_norm} for the configs' tasks."""
    out = {}
    for c in configs:
        key = f"{c.name}:0" if f"{c.name}:0" in results["results"] else f"{c.name}|0"
        value = results["results"].get(key, {}).get(ACC_NORM)
        if value is not None:
            out[c.name] = float(value)
    return out


# ----------------------------------------------------------------------------------------- generation
Generate = Callable[[list[str], int], list[str]]


def generator(model_path: str, ep: EvalParams, dtype: str) -> Generate:
    """``generate(prompts, max_new_tokens)``: greedy, with the chat template (thinking on where it has a switch)."""
    if ep.backend == "vllm":
        require_vllm()
        from vllm import LLM, SamplingParams

        llm = LLM(model=model_path, dtype=dtype, tensor_parallel_size=ep.tensor_parallel_size,
                  gpu_memory_utilization=ep.gpu_memory_utilization, quantization=ep.quantization)  # fmt: skip

        def generate_vllm(prompts: list[str], max_new_tokens: int) -> list[str]:
            chats = [[{"role": "user", "content": p}] for p in prompts]
            # special tokens kept: <think> / harmony channel markers are what the answer parser reads
            sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, skip_special_tokens=False)
            outs = llm.chat(chats, sampling, use_tqdm=False)
            return [opened + o.outputs[0].text.strip() for o in outs]

        opened = think_prefix(llm.get_tokenizer())
        return generate_vllm
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = load_causal_lm(model_path, ep, dtype)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def generate_hf(prompts: list[str], max_new_tokens: int) -> list[str]:
        out: list[str] = []
        for i in range(0, len(prompts), ep.batch_size):
            batch = [[{"role": "user", "content": p}] for p in prompts[i : i + ep.batch_size]]
            enc = tokenizer.apply_chat_template(
                batch, add_generation_prompt=True, return_tensors="pt", return_dict=True, padding=True
            ).to(model.device)
            with torch.no_grad():
                gen = model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
            width = enc["input_ids"].shape[1]
            out += [
                opened
                + tokenizer.decode(g[width:], skip_special_tokens=False)
                .replace(tokenizer.pad_token, "")
                .strip()
                for g in gen
            ]
        return out

    opened = think_prefix(tokenizer)
    return generate_hf


def think_prefix(tokenizer: Any) -> str:
    """``"<think>\n"`` when the chat template's generation prompt opens the think block itself (Qwen3 thinking-2507,
    DeepSeek-R1): the output then starts inside it, and a truncated output must read as an unclosed block, not as
    an answer."""
    if not getattr(tokenizer, "chat_template", None):
        return ""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "?"}], add_generation_prompt=True, tokenize=False
    )
    return "<think>\n" if prompt.rstrip().endswith("<think>") else ""


def _docs(config: Any, max_samples: int | None) -> list[Any]:
    from lighteval.tasks.lighteval_task import LightevalTask

    task = LightevalTask(config=config)
    LightevalTask.load_datasets({config.name: task})
    return task.get_docs(max_samples)


GENERATION_CHUNK = 256  # prompts per call between cache writes


def cached_generations(generate: Generate, path: Path) -> Generate:
    """Greedy generations keyed by (prompt, token budget), appended as each chunk finishes: re-running phase 05, or
    a Colab session resumed after a disconnect, generates only what is missing. A torn last line is cut off."""
    from arabic_r1.digests import text_digest

    done: dict[str, str] = {}
    if path.is_file():
        done = {row["key"]: row["output"] for row in read_jsonl(path, key="key", repair=True)}

    def generate_cached(prompts: list[str], max_new_tokens: int) -> list[str]:
        keys = [text_digest(f"{max_new_tokens}\x00{p}", length=64) for p in prompts]
        todo = list(dict.fromkeys(k for k in keys if k not in done))
        first = {k: p for k, p in zip(keys, prompts, strict=True)}
        if len(todo) < len(set(keys)):
            log.info("generations: %d of %d from %s", len(set(keys)) - len(todo), len(set(keys)), path.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(todo), GENERATION_CHUNK):
            chunk = todo[start : start + GENERATION_CHUNK]
            outs = generate([first[k] for k in chunk], max_new_tokens)
            append_jsonl(path, [{"key": k, "output": o} for k, o in zip(chunk, outs, strict=True)])
            done.update(zip(chunk, outs, strict=True))
        return [done[k] for k in keys]

    return generate_cached


def run_reasoning(
    generate: Generate,
    configs: list[Any],
    ep: EvalParams,
    details_path: Path,
    fmt: ReasoningFormat = "think_tags",
    count_tokens: Callable[[str], int] | None = None,
) -> dict[str, dict[str, Any]]:
    """The paper's scoring: generate, parse the answer after </think>, accuracy and parse-failure rate per task.
    Every output lands in ``details_path`` with the document's labels and gold, which the student audit reads."""
    out: dict[str, dict[str, Any]] = {}
    with details_path.open("w", encoding="utf-8") as f:
        for c in configs:
            docs = _docs(c, ep.max_samples_per_task)
            texts = generate([d.query for d in docs], ep.reasoning_max_new_tokens)
            correct = failures = 0
            for d, text in zip(docs, texts, strict=True):
                choice, failure = reasoning_answer(text, list(d.choices), fmt)
                gold = d.gold_index[0] if isinstance(d.gold_index, list) else d.gold_index
                correct += choice == gold
                failures += failure is not None
                row = {"task": c.name, "id": d.id, "output": text, "choice": choice, "gold": gold, "failure": failure,
                       "labels": list(d.choices), "tokens": count_tokens(text) if count_tokens else None, "query": d.query}  # fmt: skip
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n = max(len(docs), 1)
            out[c.name] = {"accuracy": correct / n, "parse_failure_rate": failures / n, "n": len(docs)}
    return out


def read_outputs(details_path: Path) -> list[Output]:
    """The reasoning outputs of one model (``reasoning_<model>.jsonl``) as the audit reads them."""
    outs = []
    for r in read_jsonl(details_path):
        labels = tuple(r["labels"])
        gold = labels[r["gold"]] if isinstance(r["gold"], int) and 0 <= r["gold"] < len(labels) else None
        outs.append(
            Output(str(r["id"]), benchmark_of(r["task"]), r["output"], gold, labels, tokens=r.get("tokens"))
        )
    return outs


# --------------------------------------------------------------------------------------------- ALRAGE
_SCORE = re.compile(r"(?<![\d.])(10|\d)(?:\.\d+)?(?![\d.])")


def parse_judge_score(text: str) -> float | None:
    """The leaderboard's rubric: a number 0-10, divided by 10; None when there is none (counted, scored 0)."""
    m = _SCORE.search(text or "")
    return min(max(float(m.group(0)) / 10.0, 0.0), 1.0) if m else None


def run_alrage(
    generate: Generate,
    config: Any,
    ep: EvalParams,
    judge: DistillParams,
    details_path: Path,
    fmt: ReasoningFormat = "think_tags",
) -> dict[str, Any]:
    """Generate answers to ALRAGE items and score them with the leaderboard's judge prompt through ``judge``."""
    from lighteval.tasks.multilingual.tasks.arabic import judge_template

    from arabic_r1.completions import complete_all
    from arabic_r1.teachers import TeacherError

    docs = _docs(config, ep.max_samples_per_task)
    outputs = generate([d.query for d in docs], ep.alrage_max_new_tokens)
    # the judge reads the answer, not the reasoning (an output with no closed reasoning is judged whole)
    answers = [parse_trace(to_think_tags(o, fmt)).answer or o for o in outputs]
    # as lighteval's own judge metric: the question is the whole prompt, the gold the only choice
    requests = [
        (f"alrage-{d.id}", judge_template(d.query, answer, d.choices[0]))
        for d, answer in zip(docs, answers, strict=True)
    ]
    judged = complete_all(judge, requests, "oall_alrage_judge_v1")
    scores, unparseable, errors = [], 0, 0
    with details_path.open("w", encoding="utf-8") as f:
        for (rid, _), d, answer in zip(requests, docs, answers, strict=True):
            raw = judged[rid]
            score = None if isinstance(raw, TeacherError) else parse_judge_score(raw)
            errors += isinstance(raw, TeacherError)
            unparseable += score is None and not isinstance(raw, TeacherError)
            scores.append(score or 0.0)
            f.write(
                json.dumps(
                    {
                        "id": d.id,
                        "answer": answer,
                        "gold": d.choices[0],
                        "judge_output": str(raw),
                        "score": score,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    n = max(len(docs), 1)
    return {"score": sum(scores) / n, "n": len(docs), "unparseable": unparseable, "judge_errors": errors,
            "judge": f"{judge.backend}:{_judge_name(judge.teacher)}"}  # fmt: skip


def _judge_name(teacher: str) -> str:
    """A hub id as it is; a local model folder by its last two parts (``00_environment/base_model``): the label
    lands in scores.csv and the report, which must not name this machine's folders."""
    return Path(*Path(teacher).parts[-2:]).as_posix() if Path(teacher).is_absolute() else teacher


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
    alrage: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def benchmark_of(task_name: str) -> str:
    prefix = task_name.split(":", 1)[0]
    return next(b for b, s in BENCHMARKS.items() if s.task == prefix)


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
    mc_configs, alrage_config = [], None
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
        if b == "alrage":
            alrage_config = configs[0] if configs else None
        else:
            mc_configs += configs
    if alrage_config is not None and judge is None:
        raise EvalSetupError("alrage is judged by an LLM: set eval.judge")
    if "loglikelihood" in ep.scoring and mc_configs:
        t0 = time.monotonic()
        results = run_lighteval(
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
    if ("reasoning" in ep.scoring and mc_configs) or alrage_config is not None:
        cache = model_cache_dir(out_dir / "lighteval_cache", model_path) / f"generations.{ep.backend}.jsonl"
        generate = cached_generations(generator(model_path, ep, dtype), cache)
        if "reasoning" in ep.scoring and mc_configs:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_path)
            t0 = time.monotonic()
            per_task = run_reasoning(generate, mc_configs, ep, out_dir / f"reasoning_{label}.jsonl", reasoning_format,
                                     lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))  # fmt: skip
            ms.seconds["reasoning"] = round(time.monotonic() - t0, 2)
            by_b: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for task, r in per_task.items():
                by_b[benchmark_of(task)].append(r)
            ms.reasoning = {b: {"accuracy": sum(r["accuracy"] for r in rs) / len(rs),
                                "parse_failure_rate": sum(r["parse_failure_rate"] * r["n"] for r in rs) / max(sum(r["n"] for r in rs), 1)}
                            for b, rs in by_b.items()}  # fmt: skip
        if alrage_config is not None:
            t0 = time.monotonic()
            ms.alrage = run_alrage(
                generate, alrage_config, ep, judge, out_dir / f"alrage_{label}.jsonl", reasoning_format
            )
            ms.seconds["alrage"] = round(time.monotonic() - t0, 2)
    return ms


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
        if m.alrage:
            rows.append(
                {
                    "model": m.label,
                    "benchmark": "alrage",
                    "metric": f"judge score /10 ({m.alrage['judge']})",
                    "value": round(m.alrage["score"], 4),
                }
            )
        board = [m.leaderboard[b] for b in LEADERBOARD_BENCHMARKS if b in m.leaderboard] + (
            [m.alrage["score"]] if m.alrage else []
        )
        if board:
            rows.append(
                {
                    "model": m.label,
                    "benchmark": "average",
                    "metric": f"mean of {len(board)} benchmarks",
                    "value": round(sum(board) / len(board), 4),
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
            outputs = upstream_outputs(
                run_dir, "oall_evaluation", "moe_lora_sft", needed="the fine-tuned model"
            )
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


def run_oall_evaluation(params: Params, run) -> EvalResult:
    """Phase 05 entry point for the notebook: every model of eval.models on every selected benchmark."""
    ep = params.eval
    if "alrage" in ep.benchmarks and ep.judge is None:
        raise EvalSetupError("alrage is judged by an LLM: set eval.judge")
    if ep.load_in_4bit:
        import torch

        if not torch.cuda.is_available():
            raise EvalSetupError(
                "eval.load_in_4bit needs a CUDA GPU (bitsandbytes); set eval.load_in_4bit=false"
            )
    judge = ep.judge
    if judge is not None and judge.teacher == "embedded":
        judge = judge.model_copy(update={"teacher": base_model_path(params, run.run_dir, "oall_evaluation")})
    warts = Warts()
    dtype = {"bfloat16": "bfloat16", "float16": "float16"}.get(params.model.dtype, "float32")
    models = [
        evaluate_model(label, path, ep, run.dir, warts, judge, dtype, params.model.reasoning_format)
        for label, path in resolve_models(params, run.run_dir)
    ]
    rows = tidy_rows(models)
    write_csv(run.dir / SCORES_FILE, rows)
    write_csv(
        run.dir / SUBSET_FILE,
        [
            {"model": m.label, "task": t, "acc_norm": round(v, 4)}
            for m in models
            for t, v in m.subsets.items()
        ],
    )
    w = warts.summary()
    write_json_atomic(run.dir / WARTS_FILE, w, indent=1)
    details = {m.label: run.dir / f"reasoning_{m.label}.jsonl" for m in models if m.reasoning}
    audit_files: dict[str, Path] = {}
    if details:  # the student's own traces, through phase 03's checks
        from arabic_r1.trace_checks import load_morphology_cache, save_morphology_cache

        load_morphology_cache(params.verify.morphology_cache)
        result = audit_models({label: read_outputs(p) for label, p in details.items()}, params.verify,
                              params.model.reasoning_format)  # fmt: skip
        save_morphology_cache(params.verify.morphology_cache)
        audit_files = dict(
            zip(("student_audit", "student_audit_csv"), write_audit(result, run.dir), strict=True)
        )
    (run.dir / "model_scores.json").write_text(
        json.dumps([m.__dict__ for m in models], indent=1, ensure_ascii=False), encoding="utf-8"
    )
    run.finish(
        {
            "scores": run.dir / SCORES_FILE,
            "subset_scores": run.dir / SUBSET_FILE,
            "model_scores": run.dir / "model_scores.json",
            **audit_files,
        },
        {
            "models": [m.label for m in models],
            "rows": len(rows),
            "warts": w["counts"],
            "benchmark_digests": mirror_digests(params.eval.mirror_dir, params.eval.benchmarks)
            if params.eval.source == "mirror"
            else {},
        },  # fmt: skip
    )
    return EvalResult(models, run.dir / SCORES_FILE, w)
