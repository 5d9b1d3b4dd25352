"""The model under test, loaded for lighteval's log-likelihood scoring (phase 05's leaderboard numbers).

- lighteval's response cache is keyed on the model *name*: each model gets a cache folder named by its weights' digest;
- its adapter path pins an old peft: a LoRA adapter folder is loaded here with our peft (base + adapter,
  unmerged — what a 4-bit evaluation on a small GPU needs) and handed to lighteval as a ready model;
- the model is loaded by the rules of :mod:`arabic_r1.model_loading` (no second quantization on a quantized
  checkpoint, weights placed on the GPUs at load), or through Unsloth (``eval.backend: unsloth``) the way phase 04
  loaded it; lighteval always scores with its transformers model: its vLLM model (0.13.0) needs ``vllm<0.10.2`` and
  calls ``LLM.generate(prompt_token_ids=...)``, which vLLM 0.10.2 removed, and no vLLM that old runs transformers 5;
- the chat template of log-likelihood scoring is ``eval.loglikelihood_chat_template`` (the leaderboard's rule by
  default: the tokenizer's template when it has one);
- it switches autograd off process-wide: the caller's grad mode is restored afterwards.
"""

from __future__ import annotations

import json
import logging
import re
import types
from pathlib import Path
from typing import Any

from arabic_r1.digests import path_digest, text_digest
from arabic_r1.model_loading import (
    ModelLoadError,
    check_adapter_loader,
    config_dict,
    load_plan,
    quantization_of,
)
from arabic_r1.oall_tasks import ACC_NORM, EvalSetupError, prepare_lighteval_offline, task_string
from arabic_r1.params import EvalParams
from arabic_r1.peft_compat import inference_config, no_v4_moe_remap

log = logging.getLogger(__name__)


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
    """A transformers model for a model folder / hub id, or base + LoRA for an adapter folder: 4-bit NF4 with
    ``eval.load_in_4bit`` (the merged 16-bit model of a 20B MoE does not fit a 16 GB GPU; its adapter on a 4-bit base
    does), a checkpoint's own quantization kept, on the GPUs from the start; or through Unsloth."""
    import torch
    from transformers import AutoModelForCausalLM

    base = adapter_base(model_path)
    try:
        if base:
            check_adapter_loader(Path(model_path), ep.backend)
        if ep.backend == "unsloth":
            return load_with_unsloth(model_path, ep, dtype)
        plan = load_plan(
            "eval",
            quantization_of(config_dict(base or model_path)[0]),
            load_in_4bit=ep.load_in_4bit,
            key="eval.load_in_4bit",
            compute_dtype=dtype,
            cuda=torch.cuda.is_available(),
            placement="spread",
        )
    except ModelLoadError as exc:
        raise EvalSetupError(str(exc)) from None
    for note in plan.notes:
        log.info("%s: %s", model_label(model_path), note)
    model = AutoModelForCausalLM.from_pretrained(
        base or model_path, dtype=getattr(torch, dtype), **plan.kwargs
    )
    if base:
        from peft import PeftModel

        with no_v4_moe_remap(model):
            model = PeftModel.from_pretrained(model, model_path)
    inference_config(model)  # a checkpoint saved by TRL may still ask for router logits
    return model.eval()


def load_with_unsloth(model_path: str, ep: EvalParams, dtype: str) -> Any:
    """Base or adapter through Unsloth's ``FastLanguageModel`` on a GPU: an adapter goes back on its base loaded as
    phase 04 loaded it (for gpt-oss in 4-bit: Unsloth's per-expert bnb copy), and base and fine-tuned are scored on
    the same quantized weights."""
    import torch

    if not torch.cuda.is_available():
        raise EvalSetupError(
            "eval.backend: unsloth needs a CUDA GPU; set eval.backend: transformers on this machine"
        )
    import unsloth  # noqa: F401  - before anything it patches is used
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(
        model_name=model_path, dtype=getattr(torch, dtype), load_in_4bit=ep.load_in_4bit
    )
    FastLanguageModel.for_inference(model)
    inference_config(model)
    return model


def model_label(model_path: str) -> str:
    return Path(model_path).name if Path(model_path).is_dir() else model_path.replace("/", "__")


CHAT_TEMPLATE_OVERRIDE = {"leaderboard": None, "on": True, "off": False}  # lighteval's override_chat_template


def lighteval_model(model_path: str, cache_root: Path, ep: EvalParams, dtype: str):
    """lighteval's transformers model around our loaded model, with its response cache keyed on the weights.

    lighteval puts its cache at ``cache_dir/<model_name>/<config hash>``: with an absolute local path as the name
    that is the model's own folder, and neither part changes when the weights do. So the cache is named by a
    plain label under a folder that carries the weights' digest."""
    import torch
    from lighteval.models.transformers.transformers_model import TransformersModel, TransformersModelConfig

    prepare_lighteval_offline()
    cache_dir = str(model_cache_dir(cache_root, model_path))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    template = CHAT_TEMPLATE_OVERRIDE[
        ep.loglikelihood_chat_template
    ]  # lighteval's field refuses an explicit None
    mc = TransformersModelConfig(
        model_name=model_label(model_path),
        tokenizer=model_path,
        batch_size=ep.batch_size,
        dtype=dtype,
        device=device,
        cache_dir=cache_dir,
        **({} if template is None else {"override_chat_template": template}),
    )
    return TransformersModel.from_model(model=load_causal_lm(model_path, ep, dtype), config=mc)


def run_lighteval(
    model_path: str, configs: list[Any], out_dir: Path, cache_root: Path, ep: EvalParams, dtype: str
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """lighteval's Pipeline on our configs (log-likelihood tasks): its results, and each document's acc_norm
    (:func:`item_scores`); results + details also saved under ``out_dir``."""
    prepare_lighteval_offline()
    from lighteval.logging.evaluation_tracker import EvaluationTracker
    from lighteval.pipeline import ParallelismManager, Pipeline, PipelineParameters

    module = types.ModuleType("arabic_r1_oall_tasks")
    module.TASKS_TABLE = configs
    pp = PipelineParameters(
        launcher_type=ParallelismManager.NONE,
        custom_tasks_directory=module,
        max_samples=ep.max_samples_per_task,
    )
    pipeline = Pipeline(
        tasks=task_string(configs),
        pipeline_parameters=pp,
        evaluation_tracker=EvaluationTracker(output_dir=str(out_dir), save_details=True),
        model=lighteval_model(model_path, cache_root, ep, dtype),
    )
    pipeline.evaluate()  # frees the model (and the GPU) when done
    pipeline.save_and_push_results()
    return pipeline.get_results(), item_scores(pipeline.evaluation_tracker.details_logger.details)


def item_scores(details: dict[str, list[Any]]) -> dict[str, dict[str, float]]:
    """{task: {document id: acc_norm}} from lighteval's per-document details: what phase 06 resamples for its
    intervals and pairs between models (by id; a document without one by its position, the same for every model)."""
    out: dict[str, dict[str, float]] = {}
    for task, rows in details.items():
        name = re.sub(r"[|:]\d+$", "", task)  # "arabic_mmlu:Islamic Studies|0" -> the config's name
        out[name] = {
            str(d.doc.id) if d.doc.id != "" else f"#{i}": float(d.metric[ACC_NORM])
            for i, d in enumerate(rows)
        }
    return out


def subset_scores(results: dict[str, Any], configs: list[Any]) -> dict[str, float]:
    """{task name: acc_norm} for the configs' tasks."""
    out = {}
    for c in configs:
        key = f"{c.name}:0" if f"{c.name}:0" in results["results"] else f"{c.name}|0"
        value = results["results"].get(key, {}).get(ACC_NORM)
        if value is not None:
            out[c.name] = float(value)
    return out
