"""Phase 04: MoE LoRA SFT on the verified four-phase traces (TRL SFTTrainer; Unsloth or plain transformers+PEFT).

One code path, two backends: ``unsloth`` loads and wraps the model with ``FastLanguageModel`` (its MoE kernels on
a GPU, its CPU fallback here), ``transformers`` with ``AutoModelForCausalLM`` + ``peft.get_peft_model``; both get
the same LoRA config (:mod:`arabic_r1.moe_lora`) and the same TRL ``SFTTrainer`` (loss on assistant tokens only,
cosine schedule with warmup, checkpoints every ``train.save_steps`` and resume from the last one).

For several GPUs (``train.launcher``) the same code runs under ``accelerate launch`` with the DeepSpeed ZeRO-3 or
FSDP config in ``configs/accelerate/``: ``python -m arabic_r1.train --params ... --run-dir ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arabic_r1.jsonl import JsonlError, append_jsonl, read_jsonl, write_jsonl
from arabic_r1.moe_lora import (
    check_coverage,
    coverage_of_adapter,
    coverage_of_model,
    lora_config,
    lora_targets,
    no_v4_moe_remap,
)
from arabic_r1.params import REPO_DIR, Params

log = logging.getLogger(__name__)

CONFIGS_DIR = REPO_DIR / "configs" / "accelerate"
LAUNCHER_CONFIGS = {"accelerate_deepspeed_zero3": "deepspeed_zero3.yaml", "accelerate_fsdp": "fsdp.yaml"}
CUDA_ONLY_MOE_BACKENDS = ("grouped_mm", "unsloth_triton", "sonic_moe")


class TrainSetupError(ValueError):
    """Bad input found before training starts (data, template, targets, hardware options)."""


# ---------------------------------------------------------------------------------------------- data
def load_sft_examples(path: Path) -> list[dict[str, Any]]:
    """Verified traces (phase 03) or any chat dataset: JSONL rows with ``messages`` (+ optional lang, category)."""
    try:
        rows = read_jsonl(path)
    except JsonlError as exc:
        raise TrainSetupError(str(exc)) from None
    for i, row in enumerate(rows):
        msgs = row.get("messages")
        if (
            not isinstance(msgs, list)
            or not all(isinstance(m, dict) for m in msgs)
            or not any(m.get("role") == "assistant" for m in msgs)
        ):
            raise TrainSetupError(f"{path} record {i + 1}: expected 'messages' with an assistant turn")
    if not rows:
        raise TrainSetupError(f"{path}: the training set is empty (did phase 03 keep any trace?)")
    return rows


def check_chat_template(tokenizer: Any, source: str) -> None:
    template = getattr(tokenizer, "chat_template", None) or ""
    if "generation" not in template or not any(
        tag in template
        for tag in ("{% generation %}", "{%- generation %}", "{% generation -%}", "{%- generation -%}")
    ):
        raise TrainSetupError(
            f"the chat template of {source} has no {{% generation %}} markers, so the loss cannot be limited to "
            "assistant tokens; set train.chat_template to a template that has them (e.g. arabic_r1/resources/chat_template.jinja)"
        )


def assistant_mask(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    return list(out["input_ids"]), list(out["assistant_masks"])


def mask_example(tokenizer: Any, messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Tokens of one example with their loss mask, for the notebook to show."""
    ids, mask = assistant_mask(tokenizer, messages)
    return [{"token": tokenizer.decode([i]), "loss": bool(m)} for i, m in zip(ids, mask, strict=True)]


@dataclass
class Prepared:
    examples: list[dict[str, Any]]
    lengths: list[int]
    assistant_tokens: list[int]
    dropped_too_long: int
    composition: dict[str, Any]


def prepare(tokenizer: Any, rows: list[dict[str, Any]], max_length: int, params: Params) -> Prepared:
    """Token counts and loss masks for every example; over-long ones are dropped (and counted), not truncated:
    a truncated trace loses its answer."""
    kept, lengths, answer_tokens, dropped = [], [], [], 0
    for row in rows:
        ids, mask = assistant_mask(tokenizer, row["messages"])
        if sum(mask) == 0:
            raise TrainSetupError(
                f"example {row.get('id')}: no assistant tokens under the chat template's generation markers"
            )
        if len(ids) > max_length:
            dropped += 1
            continue
        kept.append(row)
        lengths.append(len(ids))
        answer_tokens.append(sum(mask))
    if not kept:
        raise TrainSetupError(
            f"all {len(rows)} examples are longer than model.max_seq_length={max_length} tokens"
        )
    if dropped:
        log.warning(
            "%d of %d examples are longer than %d tokens and were left out", dropped, len(rows), max_length
        )
    return Prepared(kept, lengths, answer_tokens, dropped, composition(kept, lengths, params))


def composition(rows: list[dict[str, Any]], lengths: list[int], params: Params) -> dict[str, Any]:
    """Achieved training tokens by language and category, next to the params targets."""
    by_lang: Counter = Counter()
    by_cat: Counter = Counter()
    for row, n in zip(rows, lengths, strict=True):
        by_lang[row.get("lang", "unknown")] += n
        by_cat[row.get("category", "unknown")] += n
    total = sum(lengths)
    shares = params.data.category_shares
    return {
        "tokens": total,
        "examples": len(rows),
        "arabic_share": {"achieved": round(by_lang["ar"] / total, 4), "target": params.data.arabic_share},
        "categories": {
            c: {
                "tokens": by_cat.get(c, 0),
                "achieved": round(by_cat.get(c, 0) / total, 4),
                "target": shares.get(c),
            }
            for c in sorted(set(by_cat) | set(shares))
        },
    }


# --------------------------------------------------------------------------------------------- model
def resolve_precision(params: Params) -> str:
    import torch

    p = params.train.precision
    cuda = torch.cuda.is_available()
    if p == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else ("fp16" if cuda else "fp32")
    if p in ("bf16", "fp16") and not cuda:
        log.warning("train.precision=%s on a CPU: training in fp32 instead", p)
        return "fp32"
    return p


def check_hardware_options(params: Params) -> None:
    """GPU-only options on a machine without one: an error, or an explicit logged fallback."""
    import importlib.util

    import torch

    if params.model.load_in_4bit and (
        not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None
    ):
        raise TrainSetupError(
            "model.load_in_4bit needs a CUDA GPU and bitsandbytes; set model.load_in_4bit=false on this machine"
        )
    backend = params.train.unsloth_moe_backend
    if (
        params.train.backend == "unsloth"
        and backend in CUDA_ONLY_MOE_BACKENDS
        and not torch.cuda.is_available()
    ):
        log.warning("train.unsloth_moe_backend=%s needs a GPU: using native_torch on this CPU", backend)
        os.environ["UNSLOTH_MOE_BACKEND"] = "native_torch"
    elif params.train.backend == "unsloth" and backend != "auto":
        os.environ["UNSLOTH_MOE_BACKEND"] = backend


def load_model_and_tokenizer(params: Params, model_path: str, precision: str):
    """The base model and tokenizer through the chosen backend (Unsloth imported only when chosen)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    if params.train.backend == "unsloth":
        import unsloth  # noqa: F401  - patches transformers/TRL; must come before the model is built
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=model_path, max_seq_length=params.model.max_seq_length, dtype=dtype,
            load_in_4bit=params.model.load_in_4bit, trust_remote_code=params.model.trust_remote_code,
        )  # fmt: skip
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(
            model_path,
            dtype=dtype,
            trust_remote_code=params.model.trust_remote_code,
            revision=params.model.revision,
        )
        tokenizer = AutoTokenizer.from_pretrained(
            model_path, trust_remote_code=params.model.trust_remote_code, revision=params.model.revision
        )
        if torch.cuda.is_available():
            model = model.to("cuda")
    if params.train.chat_template is not None:
        tokenizer.chat_template = params.train.chat_template.read_text(encoding="utf-8")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


RESUME_KEY_FILE = "resume_key.json"


def resume_key(params: Params, examples_path: Path, model_path: str) -> dict[str, str]:
    """What a checkpoint is valid for: a notebook re-run after a change of LoRA rank, data or base model must not
    resume the old optimizer state (the runner would re-run the phase; an interactive re-run reaches here too)."""
    from arabic_r1.manifest import file_digest

    return {"params": params.section_hash("model", "train", "run.seed"), "examples": file_digest(examples_path),
            "model": str(model_path)}  # fmt: skip


CHECKPOINT_FILES = {  # what Trainer writes into checkpoint-N (adapter first, trainer_state.json last); any one
    # pattern of a row will do: DeepSpeed keeps the optimizer in global_step*/, FSDP in optimizer_0/, ranks > 1 rng_state_R
    "the LoRA weights": ("adapter_model.safetensors",),
    "the LoRA config": ("adapter_config.json",),
    "the optimizer state (without it a resume diverges from the uninterrupted run)": (
        "optimizer.pt", "optimizer.bin", "global_step*", "optimizer_0"),
    "the learning-rate schedule": ("scheduler.pt",),
    "the random state (dropout, data order)": ("rng_state.pth", "rng_state_*.pth"),
    "the step count and log history": ("trainer_state.json",),
}  # fmt: skip


def _torn(f: Path) -> str | None:
    """Why a checkpoint file is cut short, read from its own index (safetensors header, torch's zip directory,
    JSON) without loading a tensor; None when it reads."""
    import zipfile

    from safetensors import safe_open

    if f.is_dir():
        return None if any(f.iterdir()) else "is an empty folder"
    if f.stat().st_size == 0:
        return "is empty"
    try:
        if f.suffix == ".safetensors":
            with safe_open(str(f), "pt") as st:
                st.keys()
        elif f.suffix in (".pt", ".pth", ".bin"):
            if not zipfile.is_zipfile(f):
                return "is cut short (no complete torch archive)"
        elif f.name == "trainer_state.json":
            if not isinstance(json.loads(f.read_text(encoding="utf-8")).get("global_step"), int):
                return "has no global_step"
        elif f.suffix == ".json":
            json.loads(f.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - whatever the reader says, the file does not read
        return f"does not read ({str(exc)[:100]})"
    return None


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed exactly (a part missing or torn: a kill while Trainer wrote it), or
    None when it is complete."""
    for what, patterns in CHECKPOINT_FILES.items():
        found = [f for pattern in patterns for f in sorted(checkpoint.glob(pattern))]
        if not found:
            return f"{patterns[0]} ({what}) is missing"
        torn = _torn(found[0])
        if torn:
            return f"{found[0].name} ({what}) {torn}"
    return None


def newest_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` that resumes exactly. Newer incomplete ones are moved aside to
    ``broken-checkpoint-N`` (kept for inspection, never picked by a resume or by Trainer's rotation), saying why."""
    found = sorted(
        (p for p in Path(ckpt_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for ckpt in found:
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return str(ckpt)
        aside = ckpt.with_name(f"broken-{ckpt.name}")
        shutil.rmtree(aside, ignore_errors=True)
        ckpt.rename(aside)
        log.warning("checkpoint %s skipped (moved to %s): %s", ckpt.name, aside.name, problem)
    return None


def finished(checkpoint: str | Path) -> bool:
    """The checkpoint is the last step of its schedule (Trainer would take one more step if resumed from it)."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    return state["global_step"] >= state["max_steps"] > 0


def load_finished(trainer: Any, model: Any, checkpoint: str | Path) -> None:
    """Adapter weights and trainer state of a finished checkpoint, without training."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState

    with no_v4_moe_remap(model):
        set_peft_model_state_dict(model, load_file(str(Path(checkpoint) / "adapter_model.safetensors")))
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    log.info("training already finished at %s: reusing it", Path(checkpoint).name)


def inference_config(model: Any) -> None:
    """TRL switches ``output_router_logits`` on for its load-balancing loss and the saved config keeps it; at
    inference that only costs time, and transformers' batched generate then crashes computing the same loss over a
    padded cache (gpt-oss, Qwen3-MoE). Saved models get the inference setting."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(cfg, "output_router_logits", False):
        cfg.output_router_logits = False


def add_lora(params: Params, model: Any):
    """Wrap with LoRA (same config for both backends); returns the PEFT model."""
    lora = params.train.lora
    cfg = lora_config(model, lora)
    with no_v4_moe_remap(model):
        if params.train.backend == "unsloth":
            from unsloth import FastLanguageModel

            return FastLanguageModel.get_peft_model(
                model, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=cfg.target_modules,
                target_parameters=cfg.target_parameters, modules_to_save=cfg.modules_to_save, bias="none",
                use_gradient_checkpointing="unsloth" if params.train.gradient_checkpointing else False, random_state=params.run.seed,
            )  # fmt: skip
        from peft import get_peft_model

        return get_peft_model(model, cfg)


# ------------------------------------------------------------------------------------------ training
class TrainLog:
    """A TrainerCallback writing one JSON line per logged step: loss, lr, grad norm, tokens/s, peak memory."""

    def __init__(self, path: Path):
        from transformers import TrainerCallback

        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        log_ref = self

        class _Callback(TrainerCallback):
            def __init__(self):
                self.t = time.perf_counter()
                self.tokens = 0

            def on_log(self, args, state, control, logs=None, **kwargs):
                if not logs or "loss" not in logs:
                    return
                now, seen = time.perf_counter(), int(state.num_input_tokens_seen or 0)
                row = {"step": state.global_step, "loss": logs.get("loss"), "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
                       "tokens_per_s": round((seen - self.tokens) / max(now - self.t, 1e-9), 1), "peak_memory_mb": _peak_memory_mb()}  # fmt: skip
                self.t, self.tokens = now, seen
                log_ref.rows.append(row)
                append_jsonl(log_ref.path, [row])
                every = max(
                    1, (state.max_steps or 1) // 10
                )  # ten progress lines per run, whatever its length
                if state.global_step % every == 0 or state.global_step == state.max_steps:
                    log.info(
                        "step %d/%d loss %.4f lr %.2e %.0f tokens/s",
                        state.global_step,
                        state.max_steps,
                        row["loss"],
                        row["lr"] or 0,
                        row["tokens_per_s"],
                    )

        self.callback = _Callback()


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def sft_config(params: Params, out_dir: Path, precision: str, max_length: int):
    import torch
    from trl import SFTConfig

    t = params.train
    return SFTConfig(
        output_dir=str(out_dir / "checkpoints"), max_steps=t.max_steps or -1, num_train_epochs=t.epochs,
        per_device_train_batch_size=t.per_device_batch_size, gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler, warmup_steps=t.warmup_ratio,  # <1: a ratio (transformers 5)
        gradient_checkpointing=t.gradient_checkpointing and params.train.backend != "unsloth",
        gradient_checkpointing_kwargs={"use_reentrant": False}, bf16=precision == "bf16", fp16=precision == "fp16",
        assistant_only_loss=True, packing=t.packing, max_length=max_length, logging_steps=1,
        save_steps=t.save_steps, save_total_limit=t.save_total_limit, seed=params.run.seed, data_seed=params.run.seed,
        report_to="none", dataloader_num_workers=0, include_num_input_tokens_seen="non_padding", use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not sys.stderr.isatty(),
    )  # fmt: skip


def make_trainer(**kwargs):
    """TRL's SFTTrainer; where its Triton loss kernel cannot run (no GPU, or no triton), the same token-level NLL
    on assistant tokens is computed from the model's logits instead (TRL 1.15 has no CPU path of its own)."""
    import torch
    from trl import SFTTrainer
    from trl.trainer import utils as trl_utils

    if torch.cuda.is_available() and trl_utils._ChunkedLogProbFunction is not None:
        return SFTTrainer(**kwargs)

    class PortableSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"][:, 1:]
            outputs = model(
                **{k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
            )
            logits = outputs.logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
            )
            denom = (
                num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum().clamp(min=1)
            )
            loss = nll / denom
            return (loss, outputs) if return_outputs else loss

    return PortableSFTTrainer(**kwargs)


@dataclass
class TrainResult:
    out_dir: Path
    adapter_dir: Path
    merged_dir: Path | None
    coverage_model: dict[str, Any]
    coverage_adapter: dict[str, Any]
    log_rows: list[dict[str, Any]]
    composition: dict[str, Any]
    routing: dict[str, Any]
    mask: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def train_sft(
    params: Params, examples_path: Path, model_path: str, out_dir: Path, resume: bool = True
) -> TrainResult:
    """The whole phase on any chat dataset: load, LoRA, coverage, routing before, SFT, save, merge, routing after."""
    from datasets import Dataset
    from transformers import set_seed

    from arabic_r1.routing import probe_texts, routing_stats

    out_dir.mkdir(parents=True, exist_ok=True)
    set_seed(params.run.seed)  # LoRA initialisation happens before the Trainer seeds anything
    check_hardware_options(params)
    rows = load_sft_examples(examples_path)
    precision = resolve_precision(params)
    t0 = time.monotonic()
    model, tokenizer = load_model_and_tokenizer(params, model_path, precision)
    check_chat_template(
        tokenizer, model_path if params.train.chat_template is None else str(params.train.chat_template)
    )
    max_length = params.model.max_seq_length
    data = prepare(tokenizer, rows, max_length, params)
    lora_targets(model, params.train.lora)  # fails before training on missing families / too-large rank
    probes = probe_texts(params.train.probe_texts)
    routing_before = routing_stats(model, tokenizer, probes)
    model = add_lora(params, model)
    cov_model = coverage_of_model(model)
    check_coverage(cov_model, params.train.lora, "after get_peft_model")
    log.info("LoRA: %s trainable parameters", f"{sum(v['parameters'] for v in cov_model.values()):,}")

    ckpt_dir = out_dir / "checkpoints"
    last = newest_complete_checkpoint(ckpt_dir) if resume and ckpt_dir.is_dir() else None
    key = resume_key(params, examples_path, model_path)
    stamp = ckpt_dir / RESUME_KEY_FILE
    if last is not None and (not stamp.is_file() or json.loads(stamp.read_text(encoding="utf-8")) != key):
        log.warning("checkpoints in %s were made with other params or data: starting over", ckpt_dir)
        shutil.rmtree(ckpt_dir)
        last = None
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(key), encoding="utf-8")
    train_log = TrainLog(out_dir / "train_log.jsonl")
    if last is None and train_log.path.exists():
        train_log.path.unlink()
    elif last is not None:  # keep the rows up to the checkpoint; the resumed steps append after them
        step = int(Path(last).name.split("-")[-1])
        logged = read_jsonl(train_log.path, repair=True) if train_log.path.exists() else []
        kept = [r for r in logged if r["step"] <= step]
        write_jsonl(train_log.path, kept)
        train_log.rows = kept
        log.info("resuming from %s", last)
    dataset = Dataset.from_list([{"messages": r["messages"]} for r in data.examples])
    trainer = make_trainer(model=model, args=sft_config(params, out_dir, precision, max_length), train_dataset=dataset,
                           processing_class=tokenizer, callbacks=[train_log.callback])  # fmt: skip
    from transformers.trainer_callback import PrinterCallback

    # one dict per step would flood papermill's output; TrainLog logs instead
    trainer.remove_callback(PrinterCallback)
    if last is not None and finished(
        last
    ):  # a re-run of a finished phase: its final checkpoint, no extra step
        load_finished(trainer, model, last)
    else:
        with no_v4_moe_remap(model):  # resuming reloads the adapter from the checkpoint
            trainer.train(resume_from_checkpoint=last)
    train_seconds = time.monotonic() - t0
    inference_config(model)

    adapter_dir = out_dir / "adapter"
    with no_v4_moe_remap(model):
        model.save_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    cov_adapter = coverage_of_adapter(adapter_dir)
    check_coverage(cov_adapter, params.train.lora, f"saved adapter {adapter_dir}")
    merged_dir = None
    trained = model
    if params.train.merge:
        merged = model.merge_and_unload()
        merged_dir = out_dir / "merged"
        merged.save_pretrained(str(merged_dir))
        tokenizer.save_pretrained(str(merged_dir))
        trained = merged
    routing_after = routing_stats(trained, tokenizer, probes)
    routing = {"before": routing_before, "after": routing_after}
    (out_dir / "routing.json").write_text(json.dumps(routing, indent=1), encoding="utf-8")
    (out_dir / "coverage.json").write_text(
        json.dumps({"model": cov_model, "adapter": cov_adapter}, indent=1), encoding="utf-8"
    )
    (out_dir / "composition.json").write_text(json.dumps(data.composition, indent=1), encoding="utf-8")
    losses = [r["loss"] for r in train_log.rows if r.get("loss") is not None]
    tail = sorted(
        losses[-max(1, len(losses) // 10) :]
    )  # one step's loss is one batch's: the median says more
    summary = {
        "backend": params.train.backend, "precision": precision, "steps": trainer.state.global_step, "examples": len(data.examples),
        "dropped_too_long": data.dropped_too_long, "tokens": data.composition["tokens"], "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None, "final_loss_median": tail[len(tail) // 2] if tail else None,
        "train_seconds": round(train_seconds, 1), "peak_memory_mb": _peak_memory_mb(),
        "resumed_from": last, "lora": params.train.lora.model_dump(), "trainable_parameters": {f: v["parameters"] for f, v in cov_model.items()},
    }  # fmt: skip
    (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return TrainResult(out_dir, adapter_dir, merged_dir, cov_model, cov_adapter, train_log.rows, data.composition, routing,
                       mask_example(tokenizer, data.examples[0]["messages"]), summary)  # fmt: skip


# ------------------------------------------------------------------------------------------- launch
def launch_command(params: Params, run_dir: Path) -> list[str]:
    """``accelerate launch`` for several GPUs with the repo's DeepSpeed ZeRO-3 or FSDP config."""
    t = params.train
    if t.launcher == "single":
        raise ValueError("train.launcher is 'single': train in-process, no accelerate launch needed")
    if params.source_file is None:
        raise ValueError("a multi-GPU launch needs params loaded from a file")
    cmd = ["accelerate", "launch", "--config_file", str(CONFIGS_DIR / LAUNCHER_CONFIGS[t.launcher]),
           "--num_processes", str(t.num_gpus * t.num_machines), "--num_machines", str(t.num_machines),
           "-m", "arabic_r1.train", "--params", str(params.source_file), "--run-dir", str(run_dir)]  # fmt: skip
    for item in params.overrides:
        cmd += ["-o", item]
    return cmd


def run_moe_lora_sft(params: Params, run) -> TrainResult:
    """Phase 04 entry point for the notebook: trains on phase 03's verified traces, finishes the phase."""
    from arabic_r1.environment import base_model_path
    from arabic_r1.manifest import read_manifest
    from arabic_r1.phases import find_phase

    verified = (
        run.run_dir
        / read_manifest(run.run_dir, find_phase("trace_verification"))["outputs"]["verified"]["path"]
    )
    result = train_sft(params, verified, base_model_path(params, run.run_dir), run.dir)
    outputs = {"adapter": result.adapter_dir, "train_log": run.dir / "train_log.jsonl", "routing": run.dir / "routing.json",
               "coverage": run.dir / "coverage.json", "summary": run.dir / "train_summary.json"}  # fmt: skip
    if result.merged_dir is not None:
        outputs["merged"] = result.merged_dir
    s = result.summary
    if (
        os.environ.get("RANK", "0") == "0"
    ):  # under accelerate launch, one manifest, written by the main process
        run.finish(
            outputs,
            {
                k: s[k]
                for k in (
                    "backend",
                    "steps",
                    "examples",
                    "first_loss",
                    "last_loss",
                    "final_loss_median",
                    "train_seconds",
                    "trainable_parameters",
                )
            },
        )
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m arabic_r1.train``: phase 04 outside a notebook (what ``accelerate launch`` runs on each GPU)."""
    from arabic_r1.manifest import start_phase
    from arabic_r1.notebook import apply_runtime, configure_logging
    from arabic_r1.params import load_params

    ap = argparse.ArgumentParser(prog="python -m arabic_r1.train")
    ap.add_argument("--params", required=True)
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("-o", "--override", dest="overrides", action="append", default=[])
    args = ap.parse_args(argv)
    configure_logging()
    params = load_params(args.params, args.overrides)
    apply_runtime(params)
    run_moe_lora_sft(params, start_phase("moe_lora_sft", params, args.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
