"""Phase 04: MoE LoRA SFT on the verified four-phase traces (TRL SFTTrainer; Unsloth or plain transformers+PEFT).

One code path, two backends: ``unsloth`` loads and wraps the model with ``FastLanguageModel`` (its MoE kernels on
a GPU, its CPU fallback here), ``transformers`` with ``AutoModelForCausalLM`` + ``peft.get_peft_model``; both get
the same LoRA config (:mod:`arabic_r1.moe_lora`) and the same TRL ``SFTTrainer`` (loss on assistant tokens only,
cosine schedule with warmup, checkpoints every ``train.save_steps`` and resume from the last one).

Several processes (``train.launcher``): the phase launches ``train.processes`` ranks of the same entry point,
``python -m arabic_r1.train --params ... --run-dir ...`` (:func:`launch`), through ``torchrun`` (DDP: a full model
copy per rank, gloo on a CPU, nccl on GPUs) or ``accelerate launch`` with the DeepSpeed ZeRO-3 / FSDP config in
``configs/accelerate/`` (torchrun underneath). Every rank checks that ``WORLD_SIZE`` is what the params ask for
(``accelerate launch --cpu`` and MULTI_CPU configs silently start one process). Each rank trains on its own shard of
every global batch and records which examples it saw (``data_shards/rank<R>.jsonl``); rank 0 alone picks the
checkpoint to resume and writes the manifest, train log, checkpoints, adapter, merged model and reports. With the
same global batch (per-device batch x processes x accumulation) and seed, the losses and adapter are the
1-process run's (tests/test_train_ddp.py).

This module is the phase driver; its parts are in sft_data.py (tokenized SFT examples, the loss mask),
train_backends.py (Unsloth or transformers, the LoRA wrap, SFTConfig, the trainer), checkpoints.py (complete
checkpoints, resume, on-time saves, data shards) and train_launch.py (ranks and the multi-process launch).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arabic_r1.checkpoints import (
    SHARDS_DIR,
    ShardLog,
    checkpoint_step,
    finished,
    load_finished,
    resume_key,
    resume_point,
    save_on_time,
)
from arabic_r1.jsonl import append_jsonl, read_jsonl, write_json_atomic
from arabic_r1.manifest import PhaseRun, base_model_path, start_phase, upstream_artifact
from arabic_r1.model_loading import (
    write_adapter_provenance,
)
from arabic_r1.moe_lora import (
    RoutedTokens,
    check_coverage,
    check_experts_updated,
    check_family_ranks,
    coverage_of_adapter,
    coverage_of_model,
    expert_layout,
    lora_targets,
    merge_checked,
)
from arabic_r1.params import LAUNCHER_CONFIGS, Params
from arabic_r1.peft_compat import inference_config, no_v4_moe_remap
from arabic_r1.progress import Progress
from arabic_r1.sft_data import (
    Prepared,
    check_chat_template,
    load_sft_examples,
    mask_example,
    prepare,
)
from arabic_r1.tracking import finish_tracking, start_tracking
from arabic_r1.train_backends import (
    add_lora,
    check_hardware_options,
    load_model_and_tokenizer,
    make_trainer,
    sft_config,
)
from arabic_r1.train_launch import Ranks, barrier, check_world_size, from_rank0, launch, resolve_precision

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ training
class TrainLog:
    """A TrainerCallback writing one JSON line per logged step: loss, lr, grad norm, tokens/s, peak memory. Under a
    launch, rank 0 writes it (Trainer logs the loss averaged over the ranks on each)."""

    def __init__(self, path: Path):
        from transformers import TrainerCallback

        self.path = Path(path)
        log_ref = self

        class _Callback(TrainerCallback):
            def __init__(self):
                self.t = time.perf_counter()
                self.tokens = 0
                self.bar: Progress | None = None  # built at the first log (max_steps is known then)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if not logs or "loss" not in logs or not state.is_world_process_zero:
                    return
                now, seen = time.perf_counter(), int(state.num_input_tokens_seen or 0)
                row = {
                    "step": state.global_step,
                    "loss": logs.get("loss"),
                    "lr": logs.get("learning_rate"),
                    "grad_norm": logs.get("grad_norm"),
                    "tokens_per_s": round((seen - self.tokens) / max(now - self.t, 1e-9), 1),
                    "peak_memory_mb": _peak_memory_mb(),
                }
                self.t, self.tokens = now, seen
                append_jsonl(log_ref.path, [row])
                if self.bar is None:
                    self.bar = Progress(state.max_steps, "step", logger=log)
                self.bar.update(
                    state.global_step - self.bar.done,
                    loss=row["loss"],
                    lr=row["lr"] or 0.0,
                    tokens_per_s=row["tokens_per_s"],
                )

            def on_train_end(self, args, state, control, **kwargs):
                if self.bar is not None:
                    self.bar.close()

        self.callback = _Callback()


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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
    """The whole phase on any chat dataset: load, LoRA, coverage, routing before, SFT, save, merge, routing after.

    Under a launch every rank runs this with its own shard of each batch; rank 0 alone picks the checkpoint to
    resume and writes what the phase outputs while the others wait at a barrier, then every rank returns the
    outputs as written (:func:`load_result`)."""
    from datasets import Dataset
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    from arabic_r1.routing import probe_texts, routing_stats

    ranks = Ranks.from_env()
    check_world_size(params, ranks)
    out_dir.mkdir(parents=True, exist_ok=True)
    start_tracking(params.train.report_to, out_dir)
    set_seed(params.run.seed)  # LoRA initialisation happens before the Trainer seeds anything
    check_hardware_options(params)
    rows = load_sft_examples(examples_path)
    precision = resolve_precision(params)
    max_length = params.model.max_seq_length
    args = sft_config(params, out_dir, precision, max_length)  # under a launch: joins the process group
    t0 = time.monotonic()
    model, tokenizer = load_model_and_tokenizer(params, model_path, precision)
    check_chat_template(
        tokenizer, model_path if params.train.chat_template is None else str(params.train.chat_template)
    )
    data = prepare(tokenizer, rows, max_length, params)
    lora_targets(model, params.train.lora)  # fails before training on missing families / too-large rank
    probes = probe_texts(params.train.probe_texts)
    sharded = params.train.launcher in LAUNCHER_CONFIGS  # ZeRO-3 / FSDP: no rank holds the whole model
    routing_before = SHARDED_ROUTING if sharded else routing_stats(model, tokenizer, probes)
    model = add_lora(params, model)
    cov_model = coverage_of_model(model)
    check_coverage(cov_model, params.train.lora, "after get_peft_model")
    check_family_ranks(model, params.train.lora)
    log.info("LoRA: %s trainable parameters", f"{sum(v['parameters'] for v in cov_model.values()):,}")

    key = resume_key(params, examples_path, model_path)
    last = from_rank0(resume_point(out_dir, key, ranks.world, resume) if ranks.main else None)
    shards = ShardLog(out_dir / SHARDS_DIR / f"rank{ranks.rank}.jsonl")
    shards.keep_until(checkpoint_step(last))
    if last is not None:
        log.info(
            "resuming from %s",
            Path(last).relative_to(out_dir) if Path(last).is_relative_to(out_dir) else last,
        )
    dataset = Dataset.from_list([{"messages": r["messages"]} for r in data.examples])
    callbacks = [TrainLog(out_dir / "train_log.jsonl").callback]
    if params.train.save_minutes:
        callbacks.append(save_on_time(params.train.save_minutes))
    trainer = make_trainer(
        shards, model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks
    )
    # one dict per step would flood papermill's output; TrainLog logs instead
    trainer.remove_callback(PrinterCallback)
    routed = RoutedTokens(model)  # which experts the router fed during training
    if last is not None and finished(last):  # a re-run of a finished phase: no extra step
        load_finished(trainer, model, last)
    else:
        with no_v4_moe_remap(model):  # resuming reloads the adapter from the checkpoint
            trainer.train(resume_from_checkpoint=last)
    train_seconds = time.monotonic() - t0
    # an expert that got tokens and kept lora_B = 0 never learned (a frozen or bypassed expert adapter): stop here;
    # every rank takes part (under ZeRO-3 each lora_B is gathered in turn)
    counts = routed.close()
    with full_parameters(trainer):
        experts = (
            check_experts_updated(model, counts) if "routed_experts" in params.train.lora.targets else {}
        )
    finish_tracking(params.train.report_to)
    inference_config(model)
    adapter_dir = out_dir / "adapter"
    if sharded:  # every rank: ZeRO-3 consolidates the trainable (LoRA) weights on rank 0, which writes them
        if getattr(
            trainer, "is_fsdp_enabled", False
        ):  # as PEFT's FSDP example does: a sharded state dict saves nothing
            trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        with no_v4_moe_remap(model):
            trainer.save_model(str(adapter_dir))
    if ranks.main:
        summary = {
            "backend": params.train.backend,
            "precision": precision,
            "steps": trainer.state.global_step,
            "train_seconds": round(train_seconds, 1),
            "resumed_from": last,
            "launcher": params.train.launcher,
            "processes": ranks.world,
            "global_batch": params.train.global_batch,
        }
        if not sharded:
            with no_v4_moe_remap(model):
                model.save_pretrained(str(adapter_dir))
        save_outputs(
            params,
            None if sharded else model,
            model_path,
            tokenizer,
            out_dir,
            data,
            cov_model,
            experts,
            routing_before,
            probes,
            summary,
        )
    barrier()
    return load_result(out_dir)


SHARDED_ROUTING = {"skipped": "under ZeRO-3 / FSDP no rank holds the whole model: routing is counted in phase 05's "
                   "model or with train.launcher: single / torchrun"}  # fmt: skip


@contextlib.contextmanager
def full_parameters(trainer: Any):
    """The whole (trainable) parameters on every rank while inside: FSDP's summon_full_params; under DeepSpeed ZeRO-3
    the expert check gathers each lora_B itself (moe_lora.gathered); a no-op otherwise."""
    if getattr(trainer, "is_fsdp_enabled", False):
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(trainer.model_wrapped, writeback=False):
            yield
        return
    yield


def save_outputs(
    params: Params,
    model: Any,
    model_path: str,
    tokenizer: Any,
    out_dir: Path,
    data: Prepared,
    cov_model: dict[str, Any],
    experts: dict[str, Any],
    routing_before: dict[str, Any],
    probes: dict[str, list[str]],
    summary: dict[str, Any],
) -> None:
    """What the phase outputs (rank 0 alone, the adapter already saved): merged model, routing after, coverage,
    composition, the loss mask of one example, the summary. ``model`` is None after a ZeRO-3 / FSDP launch, whose
    weights no rank holds whole: the merge then loads the base from ``model_path`` into this process's memory and
    puts the saved adapter on it (the same merge as one process's)."""
    from arabic_r1.routing import routing_stats

    adapter_dir = out_dir / "adapter"
    tokenizer.save_pretrained(str(adapter_dir))
    if model is None and params.train.merge:
        model = reload_adapted(params, model_path, adapter_dir)
    base_loaded = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))[
        "base_model_name_or_path"
    ]
    write_adapter_provenance(
        adapter_dir,
        {
            "base_requested": params.model.name_or_path,
            "base_loaded": base_loaded,
            "backend": params.train.backend,
            "load_in_4bit": params.model.load_in_4bit,
            "expert_layout": expert_layout(model) if model is not None else "fused",
        },
    )
    cov_adapter = coverage_of_adapter(adapter_dir)
    check_coverage(cov_adapter, params.train.lora, f"saved adapter {adapter_dir}")
    trained, merge_check = model, None
    if params.train.merge:
        trained, merge_check = merge_checked(model)
        trained.save_pretrained(str(out_dir / "merged"))
        tokenizer.save_pretrained(str(out_dir / "merged"))
    after = routing_stats(trained, tokenizer, probes) if trained is not None else SHARDED_ROUTING
    routing = {"before": routing_before, "after": after}
    losses = [r["loss"] for r in read_jsonl(out_dir / "train_log.jsonl") if r.get("loss") is not None]
    # one step's loss is one batch's: the median of the last tenth says more
    tail = sorted(losses[-max(1, len(losses) // 10) :])
    summary |= {
        "examples": len(data.examples),
        "dropped_too_long": data.dropped_too_long,
        "tokens": data.composition["tokens"],
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "final_loss_median": tail[len(tail) // 2] if tail else None,
        "peak_memory_mb": _peak_memory_mb(),
        "merged": params.train.merge,
        "merge_check": merge_check,
        "lora": {**params.train.lora.model_dump(), "families": params.train.lora.scales()},
        "trainable_parameters": {f: v["parameters"] for f, v in cov_model.items()},
        "expert_adapters": {k: v if isinstance(v, int) else len(v) for k, v in experts.items()},
    }
    reports = {
        "routing.json": routing,
        "coverage.json": {"model": cov_model, "adapter": cov_adapter, "experts": experts},
        "composition.json": data.composition,
        "loss_mask.json": mask_example(tokenizer, data.examples[0]["messages"]),
        "train_summary.json": summary,
    }
    for name, payload in reports.items():
        write_json_atomic(out_dir / name, payload, indent=1)


def reload_adapted(params: Params, model_path: str, adapter_dir: Path) -> Any:
    """The base from disk (transformers' own loading rules, no device placement: host memory) with the saved adapter:
    what a sharded launch merges, since no rank holds the whole trained model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from transformers.integrations import deepspeed as hf_deepspeed

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_precision(params), torch.float32)
    # the launch's TrainingArguments registered ZeRO-3 for the whole process: from_pretrained would partition the
    # weights with a collective while the other ranks wait at a barrier (a deadlock, seen on 2 CPU ranks)
    registered = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        base = AutoModelForCausalLM.from_pretrained(
            model_path,
            dtype=dtype,
            revision=params.model.revision,
            trust_remote_code=params.model.trust_remote_code,
        )
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = registered
    with no_v4_moe_remap(base):
        return PeftModel.from_pretrained(base, str(adapter_dir))


def load_result(out_dir: Path) -> TrainResult:
    """The phase's outputs as written, however the training ran (in this process or launched as ranks)."""

    def read(name: str) -> Any:
        return json.loads((out_dir / name).read_text(encoding="utf-8"))

    summary, coverage = read("train_summary.json"), read("coverage.json")
    return TrainResult(
        out_dir,
        out_dir / "adapter",
        out_dir / "merged" if summary["merged"] else None,
        coverage["model"],
        coverage["adapter"],
        read_jsonl(out_dir / "train_log.jsonl"),
        read("composition.json"),
        read("routing.json"),
        read("loss_mask.json"),
        summary,
    )


def run_moe_lora_sft(params: Params, phase: PhaseRun) -> TrainResult:
    """Phase 04 entry point for the notebook: trains on phase 03's verified traces, here (``train.launcher``
    single) or as launched ranks, whose rank 0 finishes the phase (the same ``main`` a cluster job runs)."""
    if params.train.launcher != "single":
        launch(params, phase.run_dir)
        return load_result(phase.dir)
    result = train_phase(params, phase.run_dir, phase.dir)
    finish_phase(phase, result)
    return result


def train_phase(params: Params, run_dir: Path, out_dir: Path) -> TrainResult:
    """:func:`train_sft` on the run's verified traces (phase 03) and base model (phase 00)."""
    verified = upstream_artifact(run_dir, "moe_lora_sft", "trace_verification/verified")
    return train_sft(params, verified, base_model_path(params, run_dir, "moe_lora_sft"), out_dir)


def finish_phase(phase: PhaseRun, result: TrainResult) -> None:
    """The phase's manifest (one per run: the caller is the only process, or rank 0)."""
    d = phase.dir
    outputs = {
        "adapter": result.adapter_dir,
        "train_log": d / "train_log.jsonl",
        "routing": d / "routing.json",
        "coverage": d / "coverage.json",
        "summary": d / "train_summary.json",
    }
    if result.merged_dir is not None:
        outputs["merged"] = result.merged_dir
    metrics = (
        "backend",
        "launcher",
        "processes",
        "global_batch",
        "steps",
        "examples",
        "first_loss",
        "last_loss",
        "final_loss_median",
        "train_seconds",
        "trainable_parameters",
    )
    phase.finish(outputs, {k: result.summary[k] for k in metrics})


def main(argv: list[str] | None = None) -> int:
    """``python -m arabic_r1.train``: phase 04 as one rank of a launch (or alone with ``train.launcher: single``).
    Every rank checks the world size first; rank 0 alone writes the manifest."""
    import torch.distributed as dist

    from arabic_r1.notebook import apply_runtime, unsloth_first
    from arabic_r1.params_loading import load_params
    from arabic_r1.phases import find_phase
    from arabic_r1.progress import configure_output

    ap = argparse.ArgumentParser(prog="python -m arabic_r1.train")
    ap.add_argument("--params", required=True)
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("-o", "--override", dest="overrides", action="append", default=[])
    args = ap.parse_args(argv)
    unsloth_first("moe_lora_sft", args.params, args.overrides)
    ranks = Ranks.from_env()
    configure_output(rank=ranks.rank if ranks.world > 1 else None)
    params = load_params(args.params, args.overrides)
    check_world_size(params, ranks)
    apply_runtime(params)
    run_dir = (args.run_dir or params.run_dir).resolve()
    phase = start_phase("moe_lora_sft", params, run_dir) if ranks.main else None
    result = train_phase(params, run_dir, run_dir / find_phase("moe_lora_sft").slug)
    if phase is not None:
        finish_phase(phase, result)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(main)())  # a rank's exception reaches torchrun's failure summary
