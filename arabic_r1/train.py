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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arabic_r1.digests import file_digest, text_digest
from arabic_r1.errors import ExplainedError
from arabic_r1.jsonl import JsonlError, append_jsonl, read_jsonl, write_json_atomic, write_jsonl
from arabic_r1.manifest import PhaseRun, base_model_path, start_phase, upstream_artifact
from arabic_r1.model_loading import (
    ModelLoadError,
    config_dict,
    load_plan,
    quantization_of,
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
    expert_patterns_quiet,
    lora_config,
    lora_targets,
    merge_checked,
    unsloth_peft_kwargs,
)
from arabic_r1.params import CONFIGS_DIR, LAUNCHER_CONFIGS, SFT_OWNED, Params
from arabic_r1.peft_compat import inference_config, no_v4_moe_remap
from arabic_r1.progress import Progress
from arabic_r1.run_owner import RUN_ENV, new_token, owned_command
from arabic_r1.tracking import finish_tracking, start_tracking

log = logging.getLogger(__name__)

CUDA_ONLY_MOE_BACKENDS = ("grouped_mm", "unsloth_triton", "sonic_moe")


class TrainSetupError(ExplainedError, ValueError):
    """Bad input found before training starts (data, template, targets, hardware options, world size)."""


class LaunchFailed(RuntimeError):
    """A launched rank exited non-zero (the message names it), or the launcher itself failed."""


# --------------------------------------------------------------------------------------------- ranks
DIST_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a launch, from what torchrun / accelerate set (RANK, LOCAL_RANK, WORLD_SIZE)."""

    rank: int = 0
    local: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Ranks:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def check_world_size(params: Params, ranks: Ranks) -> None:
    """The launch started the processes the params ask for: a silent 1-process launch (``accelerate launch --cpu``,
    a MULTI_CPU config) would otherwise train with a global batch ``train.processes`` times too small."""
    t = params.train
    if ranks.world != t.processes:
        raise TrainSetupError(
            f"train.launcher={t.launcher} asks for {t.processes} processes (train.num_gpus={t.num_gpus} x "
            f"train.num_machines={t.num_machines}) but this one is one of WORLD_SIZE={ranks.world}: "
            + ("start it through the phase (arabic-r1 run 04 / notebook 04), which launches them"
               if ranks.world == 1 else "launch it with the command of arabic_r1.train.launch_command")
        )  # fmt: skip


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (a no-op alone): the others wait here while rank 0 writes what they will read."""
    if _distributed():
        import torch.distributed as dist

        dist.barrier()


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (also a barrier): one decision, e.g. which checkpoint to resume."""
    if not _distributed():
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


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
    """One example as runs of tokens with the same loss mask, each run decoded as a whole (a byte-level token alone
    can be half a UTF-8 letter): ``[{"text", "tokens", "loss"}]``, for notebook 04 to show."""
    ids, mask = assistant_mask(tokenizer, messages)
    runs: list[tuple[bool, list[int]]] = []
    for i, m in zip(ids, mask, strict=True):
        if runs and runs[-1][0] == bool(m):
            runs[-1][1].append(i)
        else:
            runs.append((bool(m), [i]))
    return [{"text": tokenizer.decode(run), "tokens": len(run), "loss": loss} for loss, run in runs]


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
            model_name=model_path, max_seq_length=params.model.max_seq_length, dtype=dtype, revision=params.model.revision,
            load_in_4bit=params.model.load_in_4bit, trust_remote_code=params.model.trust_remote_code,
        )  # fmt: skip
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        m = params.model
        try:
            plan = load_plan("train", quantization_of(config_dict(model_path, m.revision)[0]), load_in_4bit=m.load_in_4bit,
                             key="model.load_in_4bit", compute_dtype=str(dtype).removeprefix("torch."),
                             cuda=torch.cuda.is_available(), local_rank=Ranks.from_env().local,
                             placement="engine" if params.train.launcher in LAUNCHER_CONFIGS else "process")  # fmt: skip
        except ModelLoadError as exc:
            raise TrainSetupError(str(exc)) from None
        for note in plan.notes:
            log.info("%s: %s", model_path, note)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, trust_remote_code=m.trust_remote_code,
                                                     revision=m.revision, **plan.kwargs)  # fmt: skip
        tokenizer = AutoTokenizer.from_pretrained(
            model_path, trust_remote_code=params.model.trust_remote_code, revision=params.model.revision
        )
    if params.train.chat_template is not None:
        tokenizer.chat_template = params.train.chat_template.read_text(encoding="utf-8")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


RESUME_KEY_FILE = "resume_key.json"


def resume_key(params: Params, examples_path: Path, model_path: str) -> dict[str, str]:
    """What a checkpoint is valid for: a notebook re-run after a change of LoRA rank, data or base model must not
    resume the old optimizer state (the runner would re-run the phase; an interactive re-run reaches here too)."""

    return {"params": params.section_hash("model", "train", "run.seed"), "examples": file_digest(examples_path),
            "model": str(model_path)}  # fmt: skip


RNG_STATE = "the random state (dropout, data order)"
CHECKPOINT_FILES = {  # what Trainer writes into checkpoint-N (adapter first, trainer_state.json last); any one
    # pattern of a row will do: DeepSpeed keeps the optimizer in global_step*/, FSDP in optimizer_0/. The random
    # state is per rank: W > 1 ranks each write rng_state_R.pth, and every one is needed (rng_files)
    "the LoRA weights": ("adapter_model.safetensors",),
    "the LoRA config": ("adapter_config.json",),
    "the optimizer state (without it a resume diverges from the uninterrupted run)": (
        "optimizer.pt", "optimizer.bin", "global_step*", "optimizer_0"),
    "the learning-rate schedule": ("scheduler.pt",),
    RNG_STATE: ("rng_state.pth",),
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


def rng_files(world_size: int) -> list[str]:
    """The random-state files a checkpoint of ``world_size`` ranks holds: Trainer writes one per rank, each rank its
    own, so rank 0's trainer_state.json can be on disk while a killed rank's file is not."""
    return ["rng_state.pth"] if world_size == 1 else [f"rng_state_{r}.pth" for r in range(world_size)]


def _required_files(world_size: int) -> list[tuple[str, tuple[str, ...]]]:
    """(what, patterns) a complete checkpoint has, one file of each; the random state once per rank."""
    rows = []
    for what, patterns in CHECKPOINT_FILES.items():
        rows += [(what, (f,)) for f in rng_files(world_size)] if what == RNG_STATE else [(what, patterns)]
    return rows


def checkpoint_problem(checkpoint: Path, world_size: int = 1) -> str | None:
    """Why ``checkpoint`` cannot be resumed exactly by ``world_size`` ranks (a part missing or torn: a kill while
    Trainer wrote it), or None when it is complete."""
    for what, patterns in _required_files(world_size):
        found = [f for pattern in patterns for f in sorted(checkpoint.glob(pattern))]
        if not found:
            return f"{patterns[0]} ({what}) is missing"
        torn = _torn(found[0])
        if torn:
            return f"{found[0].name} ({what}) {torn}"
    return None


def checkpoint_step(checkpoint: str | Path | None) -> int:
    """The step of ``checkpoint-N`` (0 for none: training from the start)."""
    return int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0


def newest_complete_checkpoint(ckpt_dir: Path, world_size: int = 1) -> str | None:
    """The newest ``checkpoint-N`` that ``world_size`` ranks resume exactly. Newer incomplete ones are moved aside to
    ``broken-checkpoint-N`` (kept for inspection, never picked by a resume or by Trainer's rotation), saying why.
    Under a launch, rank 0 alone calls this (it renames folders)."""
    found = sorted(
        (p for p in Path(ckpt_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=checkpoint_step,
        reverse=True,
    )
    for ckpt in found:
        problem = checkpoint_problem(ckpt, world_size)
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


def add_lora(params: Params, model: Any):
    """Wrap with LoRA (one config, both backends); returns the PEFT model."""
    lora = params.train.lora
    cfg = lora_config(model, lora)
    for family, v in lora.scales().items():
        log.info("LoRA %s: r=%d alpha=%g (update scale alpha/r = %g)", family, v["r"], v["alpha"], v["scale"])
    with no_v4_moe_remap(model), expert_patterns_quiet():
        if params.train.backend == "unsloth":
            from unsloth import FastLanguageModel

            checkpointing = "unsloth" if params.train.gradient_checkpointing else False
            return FastLanguageModel.get_peft_model(
                model,
                **unsloth_peft_kwargs(cfg),
                use_gradient_checkpointing=checkpointing,
                random_state=params.run.seed,
            )
        from peft import get_peft_model

        return get_peft_model(model, cfg)


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
                row = {"step": state.global_step, "loss": logs.get("loss"), "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
                       "tokens_per_s": round((seen - self.tokens) / max(now - self.t, 1e-9), 1), "peak_memory_mb": _peak_memory_mb()}  # fmt: skip
                self.t, self.tokens = now, seen
                append_jsonl(log_ref.path, [row])
                if self.bar is None:
                    self.bar = Progress(state.max_steps, "step", logger=log)
                self.bar.update(state.global_step - self.bar.done, loss=row["loss"], lr=row["lr"] or 0.0,
                                tokens_per_s=row["tokens_per_s"])  # fmt: skip

            def on_train_end(self, args, state, control, **kwargs):
                if self.bar is not None:
                    self.bar.close()

        self.callback = _Callback()


def save_on_time(minutes: float):
    """A TrainerCallback asking for a checkpoint once ``minutes`` of training passed since the last one, on top of
    ``save_steps``: on a slow or busy machine, or a Colab session that disconnects, steps-based saving alone can
    leave hours unsaved. Rank 0's clock decides for every rank (a save is collective under a launch)."""
    from transformers import TrainerCallback

    class _SaveOnTime(TrainerCallback):
        def __init__(self):
            self.last = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            due = time.monotonic() - self.last >= minutes * 60
            if from_rank0(due):
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            self.last = time.monotonic()

    return _SaveOnTime()


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


SHARDS_DIR = "data_shards"


def example_digest(input_ids: Sequence[int]) -> str:
    """One example as the model saw it (its token ids, padding stripped), comparable across ranks and runs."""
    return text_digest(",".join(map(str, input_ids)))


class ShardLog:
    """Which examples this rank trained on: one JSON line per micro-batch, ``{"step", "examples": [digest]}``, in
    ``data_shards/rank<R>.jsonl``; the proof that the ranks' shards are disjoint and together the dataset."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def keep_until(self, step: int) -> None:
        """Forget the micro-batches after ``step`` (a resume from checkpoint-``step`` trains them again)."""
        rows = read_jsonl(self.path, repair=True) if self.path.exists() else []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(self.path, [r for r in rows if r["step"] <= step])

    def record(self, step: int, inputs: dict[str, Any]) -> None:
        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
        rows = ids if mask is None else [row[m.bool()] for row, m in zip(ids, mask, strict=True)]
        append_jsonl(self.path, [{"step": step, "examples": [example_digest(r.tolist()) for r in rows]}])


def sft_config(params: Params, out_dir: Path, precision: str, max_length: int):
    import torch
    from trl import SFTConfig

    t = params.train
    owned = dict(
        output_dir=str(out_dir / "checkpoints"), max_steps=t.max_steps or -1, num_train_epochs=t.epochs,
        per_device_train_batch_size=t.per_device_batch_size, gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler, warmup_steps=t.warmup_ratio,  # <1: a ratio (transformers 5)
        gradient_checkpointing=t.gradient_checkpointing and params.train.backend != "unsloth",
        gradient_checkpointing_kwargs={"use_reentrant": False}, bf16=precision == "bf16", fp16=precision == "fp16",
        assistant_only_loss=True, packing=t.packing, max_length=max_length, logging_steps=1,
        save_steps=t.save_steps, save_total_limit=t.save_total_limit, seed=params.run.seed, data_seed=params.run.seed,
        report_to=list(t.report_to) or "none", run_name=params.run.name or params.profile, dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding", use_cpu=not torch.cuda.is_available(), disable_tqdm=not sys.stderr.isatty(),
    )  # fmt: skip
    assert owned.keys() == SFT_OWNED.keys(), "params.SFT_OWNED must list exactly the fields set here"
    try:
        return SFTConfig(**t.sft, **owned)
    except (TypeError, ValueError) as exc:
        raise TrainSetupError(
            f"TRL's SFTConfig rejected the training arguments ({exc}); check train.sft {t.sft}"
        ) from None


def next_token_nll(logits: Any, labels: Any, num_items: Any = None) -> Any:
    """Mean negative log-likelihood of each labelled token given the logits one position before it (labels
    -100 are masked: prompt and padding); ``num_items``: the token count to divide by (the whole accumulated
    batch's, as Trainer passes it), else this batch's labelled tokens."""
    import torch

    labels = labels[:, 1:]
    logits = logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return nll / (num_items if num_items is not None else (labels != -100).sum().clamp(min=1))


def make_trainer(shards: ShardLog | None = None, **kwargs):
    """TRL's SFTTrainer; where its Triton loss kernel cannot run (no GPU, or no triton), the same token-level NLL
    on assistant tokens is computed from the model's logits instead (TRL 1.15 has no CPU path of its own).
    With ``shards``, every micro-batch this rank trains on is recorded there."""
    import torch
    from trl import SFTTrainer
    from trl.trainer import utils as trl_utils

    base = SFTTrainer if torch.cuda.is_available() and trl_utils._ChunkedLogProbFunction is not None else None

    class PortableSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(
                **{k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
            )
            loss = next_token_nll(outputs.logits, inputs["labels"], num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                # as in Trainer.compute_loss and TRL's: num_items_in_batch counts the tokens of every rank and DDP
                # averages the ranks' gradients, so W ranks would otherwise step W times too short
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

        def _load_optimizer_and_scheduler(self, checkpoint):
            # With world_size > 1 Trainer loads the optimizer state onto args.device, which accelerate names
            # cpu:<local rank> on a CPU, and torch.load cannot map to that: on a CPU, load onto the one CPU device
            if checkpoint is None or self.args.device.type != "cpu":
                return super()._load_optimizer_and_scheduler(checkpoint)
            ckpt = Path(checkpoint)
            self.optimizer.load_state_dict(
                torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
            )
            self.lr_scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))

    base = base or PortableSFTTrainer
    if shards is None:
        return base(**kwargs)

    class RecordingTrainer(base):  # type: ignore[misc, valid-type]
        def training_step(self, model, inputs, num_items_in_batch=None):
            shards.record(self.state.global_step + 1, inputs)
            return super().training_step(model, inputs, num_items_in_batch)

    return RecordingTrainer(**kwargs)


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
    trainer = make_trainer(shards, model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                           callbacks=callbacks)  # fmt: skip
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
        summary = {"backend": params.train.backend, "precision": precision, "steps": trainer.state.global_step,
                   "train_seconds": round(train_seconds, 1), "resumed_from": last, "launcher": params.train.launcher,
                   "processes": ranks.world, "global_batch": params.train.global_batch}  # fmt: skip
        if not sharded:
            with no_v4_moe_remap(model):
                model.save_pretrained(str(adapter_dir))
        save_outputs(params, None if sharded else model, model_path, tokenizer, out_dir, data, cov_model, experts,
                     routing_before, probes, summary)  # fmt: skip
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


def resume_point(out_dir: Path, key: dict[str, str], world_size: int, resume: bool = True) -> str | None:
    """The checkpoint to resume (rank 0 decides; it moves broken ones aside): the newest complete one made with the
    same params, data and model, or None. The train log and shard records keep their rows up to the checkpoint:
    the resumed steps append after them."""
    ckpt_dir = out_dir / "checkpoints"
    last = newest_complete_checkpoint(ckpt_dir, world_size) if resume and ckpt_dir.is_dir() else None
    stamp = ckpt_dir / RESUME_KEY_FILE
    if last is not None and (not stamp.is_file() or json.loads(stamp.read_text(encoding="utf-8")) != key):
        log.warning("checkpoints in %s were made with other params or data: starting over", ckpt_dir)
        shutil.rmtree(ckpt_dir)
        last = None
    if last is None:
        shutil.rmtree(out_dir / SHARDS_DIR, ignore_errors=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stamp, key, indent=None)
    train_log = out_dir / "train_log.jsonl"
    step = checkpoint_step(last)
    rows = read_jsonl(train_log, repair=True) if train_log.exists() else []
    write_jsonl(train_log, [r for r in rows if r["step"] <= step])
    return last


def save_outputs(params: Params, model: Any, model_path: str, tokenizer: Any, out_dir: Path, data: Prepared,
                 cov_model: dict[str, Any], experts: dict[str, Any], routing_before: dict[str, Any],
                 probes: dict[str, list[str]], summary: dict[str, Any]) -> None:  # fmt: skip
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
    write_adapter_provenance(adapter_dir, {"base_requested": params.model.name_or_path, "base_loaded": base_loaded,
                                           "backend": params.train.backend, "load_in_4bit": params.model.load_in_4bit,
                                           "expert_layout": expert_layout(model) if model is not None else "fused"})  # fmt: skip
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
        "examples": len(data.examples), "dropped_too_long": data.dropped_too_long, "tokens": data.composition["tokens"],
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "final_loss_median": tail[len(tail) // 2] if tail else None, "peak_memory_mb": _peak_memory_mb(),
        "merged": params.train.merge, "merge_check": merge_check, "lora": {**params.train.lora.model_dump(), "families": params.train.lora.scales()},
        "trainable_parameters": {f: v["parameters"] for f, v in cov_model.items()},
        "expert_adapters": {k: v if isinstance(v, int) else len(v) for k, v in experts.items()},
    }  # fmt: skip
    reports = {"routing.json": routing, "coverage.json": {"model": cov_model, "adapter": cov_adapter, "experts": experts},
               "composition.json": data.composition, "loss_mask.json": mask_example(tokenizer, data.examples[0]["messages"]),
               "train_summary.json": summary}  # fmt: skip
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
        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, revision=params.model.revision,
                                                    trust_remote_code=params.model.trust_remote_code)  # fmt: skip
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = registered
    with no_v4_moe_remap(base):
        return PeftModel.from_pretrained(base, str(adapter_dir))


def load_result(out_dir: Path) -> TrainResult:
    """The phase's outputs as written, however the training ran (in this process or launched as ranks)."""

    def read(name: str) -> Any:
        return json.loads((out_dir / name).read_text(encoding="utf-8"))

    summary, coverage = read("train_summary.json"), read("coverage.json")
    return TrainResult(out_dir, out_dir / "adapter", out_dir / "merged" if summary["merged"] else None, coverage["model"],
                       coverage["adapter"], read_jsonl(out_dir / "train_log.jsonl"), read("composition.json"),
                       read("routing.json"), read("loss_mask.json"), summary)  # fmt: skip


# ------------------------------------------------------------------------------------------- launch
def launch_command(params: Params, run_dir: Path) -> list[str]:
    """The ranks of ``python -m arabic_r1.train`` the params ask for: torchrun (DDP; ``--standalone`` on one
    machine, a c10d rendezvous at ``$MASTER_ADDR:$MASTER_PORT`` across several) or ``accelerate launch`` with the
    repo's DeepSpeed ZeRO-3 / FSDP config. Both through this interpreter (``-m``), so no PATH is assumed."""
    t = params.train
    if t.launcher == "single":
        raise ValueError("train.launcher is 'single': train in-process, no launch needed")
    if params.source_file is None:
        raise ValueError("a multi-process launch needs params loaded from a file")
    if t.launcher == "torchrun":
        nodes = (["--standalone"] if t.num_machines == 1 else
                 ["--rdzv-backend", "c10d", "--rdzv-endpoint", "$MASTER_ADDR:$MASTER_PORT", "--rdzv-id", run_dir.name])  # fmt: skip
        cmd = [sys.executable, "-m", "torch.distributed.run", *nodes, "--nnodes", str(t.num_machines),
               "--nproc-per-node", str(t.num_gpus)]  # fmt: skip
    else:
        # the precision the Trainer uses, so the engine's agrees (DeepSpeed refuses "ds bf16.enabled=True vs hf bf16=False")
        mixed = {"bf16": "bf16", "fp16": "fp16"}.get(resolve_precision(params), "no")
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS_DIR / LAUNCHER_CONFIGS[t.launcher]),
               "--num_processes", str(t.processes), "--num_machines", str(t.num_machines), "--mixed_precision", mixed]  # fmt: skip
    cmd += ["-m", "arabic_r1.train", "--params", str(params.source_file), "--run-dir", str(run_dir)]
    for item in params.overrides:
        cmd += ["-o", item]
    return cmd


def launch(params: Params, run_dir: Path) -> None:
    """Run :func:`launch_command` here, its output streamed to this process's stdout (the notebook's cell).

    The launch is a sub-run owned by this process (:mod:`arabic_r1.run_owner`): its own token and watchdog, so the
    ranks end when this process ends, however it ends (the runner ending the kernel included), or when it is
    interrupted. A rank that exits non-zero makes torchrun stop the others; the error names that rank."""
    t = params.train
    cmd = launch_command(params, run_dir)
    if t.num_machines > 1:
        raise LaunchFailed(
            f"train.num_machines={t.num_machines}: this process starts the ranks of its own machine only; run on "
            f"every machine (e.g. srun, with MASTER_ADDR / MASTER_PORT set): {' '.join(cmd)}"
        )
    token = new_token()
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}  # a launch from a rank: a new world
    env |= {RUN_ENV: token, "PYTHONUNBUFFERED": "1"}
    log.info("launching %d ranks: %s", t.processes, " ".join(cmd))
    proc = subprocess.Popen(owned_command(cmd, token), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            text=True, encoding="utf-8", errors="replace", start_new_session=True)  # fmt: skip
    tail: deque[str] = deque(maxlen=300)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            sys.stdout.write(line)
            tail.append(line)
        rc = proc.wait()
    except BaseException:  # an interrupt: the watchdog ends every process of the launch
        proc.terminate()
        proc.wait()
        raise
    sys.stdout.flush()
    if rc != 0:
        raise LaunchFailed(failure_message("".join(tail), rc, t.processes))


ROOT_CAUSE = re.compile(
    r"Root Cause.*?rank\s*:\s*(\d+)\s*\(local_rank:\s*(\d+)\)\s*exitcode\s*:\s*(-?\d+)(.*?)={8}", re.S
)


def failure_message(output: str, rc: int, world: int) -> str:
    """Which rank failed, how, and its traceback, from the failure summary torchrun prints (accelerate launches
    through it too); the lines of the launch otherwise."""
    m = ROOT_CAUSE.search(output)
    if m is None:
        last = "".join(output.splitlines(keepends=True)[-20:])
        return f"phase 04: the launch exited with code {rc} without naming a failed rank; its last output:\n{last}"
    rank, local, code = int(m.group(1)), int(m.group(2)), int(m.group(3))
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    cause = re.search(r"traceback\s*:\s*(.*)", m.group(4), re.S)
    return (f"phase 04: rank {rank} of {world} (local rank {local}) {how}; torchrun stopped the other ranks, and "
            f"running the phase again resumes from its last complete checkpoint, if it has one. "
            f"{cause.group(1).strip()[-2000:] if cause else ''}").rstrip()  # fmt: skip


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
    outputs = {"adapter": result.adapter_dir, "train_log": d / "train_log.jsonl", "routing": d / "routing.json",
               "coverage": d / "coverage.json", "summary": d / "train_summary.json"}  # fmt: skip
    if result.merged_dir is not None:
        outputs["merged"] = result.merged_dir
    metrics = ("backend", "launcher", "processes", "global_batch", "steps", "examples", "first_loss", "last_loss",
               "final_loss_median", "train_seconds", "trainable_parameters")  # fmt: skip
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
