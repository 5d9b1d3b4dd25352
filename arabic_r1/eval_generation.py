"""Generated answers for phase 05: greedy generations (cached per prompt, resumable), reasoning-mode scoring of the
multiple-choice benchmarks from the parsed answer, and ALRAGE.

Lighteval's ALRAGE judge metric crashes and is hard-wired to a 72B model on vLLM: ALRAGE is generated and judged
here, with the leaderboard's rubric, through the same cached, budgeted LLM service as the teacher (completions.py).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from arabic_r1.audit import Output, reasoning_answer
from arabic_r1.benchmarks import benchmark_of, spec
from arabic_r1.completions import complete_all
from arabic_r1.cot import parse_trace
from arabic_r1.digests import text_digest
from arabic_r1.eval_models import adapter_base, load_causal_lm, require_vllm
from arabic_r1.jsonl import append_jsonl, read_jsonl
from arabic_r1.oall_tasks import EvalSetupError
from arabic_r1.params import DistillParams, EvalParams
from arabic_r1.reasoning_format import ReasoningFormat, to_think_tags
from arabic_r1.teachers import TeacherError, stop_ids

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- generation
class Generation(NamedTuple):
    """One greedy output, and whether the token budget stopped it (not the model's own stop token): a thinking model
    cut off mid-thought has given no answer, which is a budget fact, not a parse failure."""

    text: str
    truncated: bool


Generate = Callable[[list[str], int], list[Generation]]


def generator(model_path: str, ep: EvalParams, dtype: str) -> Generate:
    """``generate(prompts, max_new_tokens)``: greedy, with the chat template (thinking on where it has a switch)."""
    if ep.backend == "vllm":
        require_vllm()
        if adapter_base(model_path):
            raise EvalSetupError(
                f"{model_path} is a LoRA adapter; vLLM generates from merged models: set train.merge: true or "
                "eval.backend: transformers"
            )
        from vllm import LLM, SamplingParams

        llm = LLM(
            model=model_path,
            dtype=dtype,
            tensor_parallel_size=ep.tensor_parallel_size,
            gpu_memory_utilization=ep.gpu_memory_utilization,
            quantization=ep.quantization,
        )

        def generate_vllm(prompts: list[str], max_new_tokens: int) -> list[Generation]:
            chats = [[{"role": "user", "content": p}] for p in prompts]
            # special tokens kept: <think> / harmony channel markers are what the answer parser reads
            sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, skip_special_tokens=False)
            outs = llm.chat(chats, sampling, use_tqdm=False)
            return [
                Generation(opened + o.outputs[0].text.strip(), o.outputs[0].finish_reason == "length")
                for o in outs
            ]

        opened = think_prefix(llm.get_tokenizer())
        return generate_vllm
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = load_causal_lm(model_path, ep, dtype)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    stops = stop_ids(tokenizer, model)

    def generate_hf(prompts: list[str], max_new_tokens: int) -> list[Generation]:
        out: list[Generation] = []
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
            for g in gen:
                text = (
                    tokenizer.decode(g[width:], skip_special_tokens=False)
                    .replace(tokenizer.pad_token, "")
                    .strip()
                )
                out.append(Generation(opened + text, not stops.intersection(g[width:].tolist())))
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
    a Colab session resumed after a disconnect, generates only what is missing. A torn last line is cut off; a row
    written before truncation was recorded is generated again."""

    done: dict[str, Generation] = {}
    if path.is_file():
        rows = read_jsonl(path, key="key", repair=True)
        done = {r["key"]: Generation(r["output"], r["truncated"]) for r in rows if "truncated" in r}

    def generate_cached(prompts: list[str], max_new_tokens: int) -> list[Generation]:
        keys = [text_digest(f"{max_new_tokens}\x00{p}", length=64) for p in prompts]
        todo = list(dict.fromkeys(k for k in keys if k not in done))
        first = {k: p for k, p in zip(keys, prompts, strict=True)}
        if len(todo) < len(set(keys)):
            log.info("generations: %d of %d from %s", len(set(keys)) - len(todo), len(set(keys)), path.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(todo), GENERATION_CHUNK):
            chunk = todo[start : start + GENERATION_CHUNK]
            outs = generate([first[k] for k in chunk], max_new_tokens)
            append_jsonl(
                path,
                [
                    {"key": k, "output": o.text, "truncated": o.truncated}
                    for k, o in zip(chunk, outs, strict=True)
                ],
            )
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
    """The paper's scoring: generate, parse the answer after </think>, accuracy per task, and the two ways an output
    names no option counted apart: cut off by ``eval.reasoning_max_new_tokens`` (truncated) or finished without a
    readable answer (parse failure). Every output lands in ``details_path`` with the document's labels and gold,
    which the student audit reads."""
    out: dict[str, dict[str, Any]] = {}
    budget = ep.reasoning_max_new_tokens
    with details_path.open("w", encoding="utf-8") as f:
        for c in configs:
            docs = _docs(c, ep.max_samples_per_task)
            outputs = generate([d.query for d in docs], budget)
            answers = spec(benchmark_of(c.name)).answers
            correct = failures = truncated = 0
            for d, g in zip(docs, outputs, strict=True):
                choice, failure = reasoning_answer(g.text, list(d.choices), fmt, answers)
                cut = g.truncated and choice is None
                failure = f"truncated at {budget} tokens" if cut else failure
                gold = d.gold_index[0] if isinstance(d.gold_index, list) else d.gold_index
                correct += choice == gold
                truncated += cut
                failures += failure is not None and not cut
                row = {
                    "task": c.name,
                    "id": d.id,
                    "output": g.text,
                    "choice": choice,
                    "gold": gold,
                    "failure": failure,
                    "truncated": g.truncated,
                    "labels": list(d.choices),
                    "query": d.query,
                    "tokens": count_tokens(g.text) if count_tokens else None,
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n = max(len(docs), 1)
            out[c.name] = {
                "accuracy": correct / n,
                "parse_failure_rate": failures / n,
                "truncated_rate": truncated / n,
                "n": len(docs),
            }
    return out


def read_outputs(details_path: Path) -> list[Output]:
    """The reasoning outputs of one model (``reasoning_<model>.jsonl``) as the audit reads them."""
    outs = []
    for r in read_jsonl(details_path):
        labels = tuple(r["labels"])
        gold = labels[r["gold"]] if isinstance(r["gold"], int) and 0 <= r["gold"] < len(labels) else None
        outs.append(
            Output(
                str(r["id"]),
                benchmark_of(r["task"]),
                r["output"],
                gold,
                labels,
                tokens=r.get("tokens"),
                truncated=bool(r.get("truncated")),
            )
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

    docs = _docs(config, ep.max_samples_per_task)
    outputs = [g.text for g in generate([d.query for d in docs], ep.alrage_max_new_tokens)]
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
    return {
        "score": sum(scores) / n,
        "n": len(docs),
        "unparseable": unparseable,
        "judge_errors": errors,
        "judge": f"{judge.backend}:{_judge_name(judge.teacher)}",
    }


def _judge_name(teacher: str) -> str:
    """A hub id as it is; a local model folder by its last two parts (``00_environment/base_model``): the label
    lands in scores.csv and the report, which must not name this machine's folders."""
    return Path(*Path(teacher).parts[-2:]).as_posix() if Path(teacher).is_absolute() else teacher
