"""Resource planner: GPU memory, tokens, teacher cost and time of a profile, before anything runs.

``arabic-r1 plan --params P`` prints the estimate and refuses (exit code 3) a profile that cannot fit the detected
(or stated) hardware, with the numbers. The formulas, all in this module:

- Backbone: the real architecture on PyTorch's *meta* device (no weights, no memory) from the model's config — the
  local folder or hub cache when present, else the copy the package ships (``resources/model_configs``) — so parameter counts and
  LoRA targets are exact, and the LoRA targets are the ones phase 04 would adapt (:func:`moe_lora.lora_targets`).
- LoRA parameters: ``r * (in + out)`` per targeted linear layer; ``r * E * (in + out)`` per fused expert tensor of
  ``E`` experts (PEFT's ``target_parameters`` adapter).
- Training memory per GPU = frozen weights (bytes/param by precision: 4-bit 0.5625 = NF4 + one fp32 absmax per 64,
  16-bit 2, fp32 4; ZeRO-3 divides by the GPU count) + LoRA states (fp32 weight and grad, 8 bytes/param, + the
  optimizer's state: 8 for AdamW's two fp32 moments, 2 for bitsandbytes' 8-bit AdamW; ``train.sft.optim``) + activations (gradient checkpointing: ``2·b·s·h`` bytes per layer kept + ``34·b·s·h`` for the layer
  being recomputed, Korthikanti et al. 2022) + logits (``2 · b·s·V · 4`` bytes: fp32 logits and their gradient;
  Unsloth's chunked cross-entropy: ``b·s·V · 2``) + 1 GiB CUDA context and allocator slack.
- Tokens: pool items = token budget / prompt tokens per item (the run's own phase 01 when it exists, else
  ``ASSUMED_PROMPT_TOKENS``); teacher output = items × expected trace tokens (capped by ``distill.max_new_tokens``);
  training tokens = kept items × (prompt + trace) × epochs.
- Layout: the processes and machines phase 04 launches (``train.processes`` = ``num_gpus`` per machine x
  ``num_machines``; 1 for ``single``), the per-rank batch and the global batch per optimizer step (per-rank batch
  x processes x accumulation): the same TrainParams properties the launch and every rank's world-size check use.
  GPU training time divides by the processes. On a CPU the processes share the machine's cores and each holds a
  whole model copy in RAM: no speed-up is assumed (measured on 2 cores: 2 ranks of the smoke-sized tiny MoE train
  1.3-1.6x faster than 1 process, whose matmuls are too small for 2 threads; a model that keeps cores busy won't).
- Time: training ``6 · N_active`` FLOPs per token (forward 2, backward through activations 2, checkpoint recompute 2;
  LoRA weight gradients are negligible) at ``MFU`` of the GPU's dense bf16/fp16 peak; OALL log-likelihood scoring
  ``2 · N_active`` FLOPs per scored token at ``EVAL_PREFILL_MFU`` of one GPU (lighteval's transformers model spreads
  one model over a machine's GPUs, which run in turn); generation at ``DECODE_TOKENS_PER_S`` per GPU scaled by 3B /
  ``N_active``, ``ASSUMED_ANSWER_TOKENS`` per answer expected, the whole budget as the upper bound.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arabic_r1.params import LoraParams, Params

GIB = 2**30
BYTES_PER_PARAM = {"4bit": 0.5625, "bfloat16": 2, "float16": 2, "float32": 4}
LORA_WEIGHT_GRAD_BYTES = (
    8  # fp32 LoRA weight + its fp32 gradient (mixed precision keeps trainable weights fp32)
)
# optimizer state bytes per trainable parameter, by the TRL/transformers `optim` name (train.sft.optim)
OPTIMIZER_STATE_BYTES = {"8bit": 2, "adafactor": 4, "sgd": 0, "adamw": 8, "adam": 8}
DEFAULT_OPTIM = "adamw_torch_fused"  # transformers 5's default `optim`


def optimizer_state_bytes(optim: str) -> float:
    """Bytes of optimizer state per trainable parameter: two fp32 moments for AdamW, two 8-bit ones (+ block
    scales, rounded up) for the bitsandbytes 8-bit optimizers, one factored row/column pair for Adafactor (at most)."""
    name = optim.lower()
    return next((v for k, v in OPTIMIZER_STATE_BYTES.items() if k in name), 8)


CUDA_OVERHEAD_GIB = 1.0
ASSUMED_PROMPT_TOKENS = 60  # smoke pool: 9,297 tokens over 163 prompts = 57
ASSUMED_TRACE_TOKENS = 900  # a four-phase trace plus its answer line (ASSUMED for a frontier teacher)
ASSUMED_TEMPLATE_TOKENS = 350  # the v1 system + instruction template around each prompt
ASSUMED_KEEP_RATE = 0.9  # phase 03 keeps 154/163 = 94% on the smoke traces; real teachers do worse
MFU = {
    "single": 0.20,
    "torchrun": 0.20,  # DDP: a whole model per GPU, only the LoRA gradients are all-reduced
    "accelerate_deepspeed_zero3": 0.10,
    "accelerate_fsdp": 0.10,
}  # ASSUMED MoE LoRA utilisation (expert matmuls are small and uneven; multi-node adds all-gathers)
EVAL_PREFILL_MFU = 0.25  # ASSUMED, vLLM prefill of short prompts on an MoE
DECODE_TOKENS_PER_S = {
    "T4": 150,
    "A100": 1500,
    "H100": 2500,
    "H200": 3000,
}  # ASSUMED aggregate vLLM decode per GPU for a ~3B-active MoE; scaled by DECODE_REF_ACTIVE / active parameters
DECODE_REF_ACTIVE = 3e9
ARABIC_CHARS_PER_TOKEN = 3.0  # ASSUMED for a ~150k-vocabulary tokenizer on Arabic
ASSUMED_ANSWER_TOKENS = (
    1500  # ASSUMED mean length of a reasoning answer to a multiple-choice item (thought + answer)
)
# dense fp16/bf16 tensor-core peaks (vendor data sheets), TFLOP/s; T4 has no bf16
GPU_PEAK_TFLOPS = {"T4": 65, "L4": 121, "A10G": 125, "A100": 312, "H100": 989, "H200": 989, "B200": 2250}
# Full OALL v2 eval-split sizes: approximate, from the datasets' cards (MadinahQA's is a guess).
OALL_DOC_WORK = {"choices": 3.53, "prompt_chars": 242}  # measured on the real rows (benchmarks/bench_eval.py)


class PlanError(ValueError):
    """The planner cannot size this backbone (unknown config and no local copy) or read a --hardware spec."""


@dataclass
class Hardware:
    name: str  # "H100", "T4", ... or "CPU"
    memory_gib: float  # per device
    count: int = 1  # GPUs per machine × machines

    @property
    def is_gpu(self) -> bool:
        return self.name != "CPU"


@dataclass
class Backbone:
    name: str
    total_params: int
    active_params: int
    layers: int
    hidden: int
    vocab: int
    lora_params: int
    config_source: str


@dataclass
class Plan:
    backbone: Backbone
    hardware: Hardware
    memory_gib: dict[str, float]  # component -> GiB per device (training)
    tokens: dict[str, float]
    cost_usd: dict[str, float | None]
    hours: dict[str, float]
    problems: list[str] = field(default_factory=list)
    mfu: float = 0.0
    layout: dict[str, Any] = field(default_factory=dict)

    @property
    def train_memory_gib(self) -> float:
        return sum(self.memory_gib.values())

    def layout_line(self) -> str:
        lo = self.layout
        return (
            f"phase 04 launch: {lo['launcher']}, {lo['processes']} process(es) = {lo['per_machine']} per machine x "
            f"{lo['machines']} machine(s); per-rank batch {lo['per_rank_batch']} x {lo['accumulation']} accumulation "
            f"x {lo['processes']} = global batch {lo['global_batch']} sequences per step"
        )

    def table(self) -> str:
        b, hw = self.backbone, self.hardware
        lines = [
            f"backbone {b.name} ({b.config_source}): {b.total_params / 1e9:.2f}B parameters, "
            f"{b.active_params / 1e9:.2f}B active per token, {b.layers} layers; LoRA {b.lora_params / 1e6:.1f}M",
            f"hardware: {hw.count} x {hw.name} ({hw.memory_gib:.0f} GiB each)",
            self.layout_line(),
            "",
            "training memory per device (GiB):",
        ]
        w = max(28, *(len(k) + 1 for k in self.memory_gib))
        lines += [f"  {k:<{w}}{v:9.2f}" for k, v in self.memory_gib.items()]
        lines.append(
            f"  {'total':<{w}}{self.train_memory_gib:9.2f}   (available {self.hardware.memory_gib:.1f})"
        )
        lines += ["", "tokens:"] + [f"  {k:<{w}}{v:14,.0f}" for k, v in self.tokens.items()]
        lines += ["", "teacher API cost (USD):"]
        lines += [
            f"  {k:<{w}}{'set distill.price_per_m_*' if v is None else f'{v:14,.2f}'}"
            for k, v in self.cost_usd.items()
        ]
        lines += ["", "time (hours):"] + [f"  {k:<{w}}{v:14,.2f}" for k, v in self.hours.items()]
        lines += [
            "",
            f"assumed (arabic_r1/plan.py): {ASSUMED_PROMPT_TOKENS} prompt tokens per pool item unless phase 01 "
            f"ran, {ASSUMED_TRACE_TOKENS}-token traces, {ASSUMED_KEEP_RATE:.0%} kept by phase 03, MFU {self.mfu:.2f} "
            f"of the {self.hardware.name} peak, prefill MFU {EVAL_PREFILL_MFU:.2f} for log-likelihoods",
        ]
        if self.problems:
            lines += ["", "DOES NOT FIT:"] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------- hardware
def detect_hardware(params: Params) -> Hardware:
    """The GPU this machine has (its memory, and train.num_gpus × num_machines of them), or the CPU's RAM."""
    import torch

    count = params.train.num_gpus * params.train.num_machines
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Hardware(gpu_kind(props.name), props.total_memory / GIB, count)
    import psutil

    return Hardware("CPU", psutil.virtual_memory().total / GIB, 1)


def gpu_kind(device_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100' (the key of the peak table), else the name as given."""
    return next((k for k in GPU_PEAK_TFLOPS if k in device_name.upper()), device_name)


# ------------------------------------------------------------------------------------------- backbone
def backbone_config(params: Params) -> tuple[Any, str]:
    """The transformers config of ``model.name_or_path`` and where it came from: the embedded shape, or the
    config.json of the local folder, the hub cache, the package's shipped copy (``resources/model_configs``) or the
    hub (:func:`arabic_r1.model_loading.config_dict`)."""
    from arabic_r1.model_loading import ModelLoadError, config_dict, hf_config

    m = params.model
    if m.is_embedded:
        from arabic_r1.tiny_model import build_config, build_tokenizer

        return build_config(m.family, m.tiny, build_tokenizer(m.tiny.vocab_size)), "embedded tiny MoE"
    try:
        cfg, source = config_dict(m.name_or_path, m.revision)
    except ModelLoadError as exc:
        raise PlanError(str(exc)) from None
    return hf_config(cfg), source


def meta_backbone(params: Params) -> tuple[Any, Any, str]:
    """(the architecture on PyTorch's meta device: no weights, no memory; its config; where the config came from)."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg, source = backbone_config(params)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return model, cfg, source


def size_backbone(params: Params, model: Any = None) -> Backbone:
    """Exact counts from the architecture built on the meta device; LoRA from phase 04's own target rules."""
    from arabic_r1.moe_lora import family_of, lora_targets

    model, cfg, source = meta_backbone(params) if model is None else (model, model.config, "meta model given")
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if family_of(f".{n}") == "routed_experts")
    n_exp = (
        getattr(cfg, "n_routed_experts", None) or getattr(cfg, "num_experts", None) or cfg.num_local_experts
    )
    # active = compute per token: all but the unused experts and the input embedding (a lookup, not a matmul)
    embedding = model.get_input_embeddings().weight.numel()
    active = total - embedding - experts + experts * cfg.num_experts_per_tok / n_exp
    targets = lora_targets(model, params.train.lora)
    lora = _lora_params(model, targets, params.train.lora)
    return Backbone(
        params.model.name_or_path,
        total,
        int(active),
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.vocab_size,
        lora,
        source,
    )


def _lora_params(model: Any, targets: dict[str, Any], lora: LoraParams) -> int:
    """LoRA weights PEFT will create: r x (fan_in + fan_out) per targeted layer (per expert for fused expert weights),
    with each family's own rank."""
    import torch

    from arabic_r1.moe_lora import family_of

    n = 0
    pattern = re.compile(targets["target_modules"]) if targets["target_modules"] else None
    for name, mod in model.named_modules():
        if pattern and isinstance(mod, torch.nn.Linear) and pattern.match(name):
            n += lora.rank_of(family_of(f".{name}")) * (mod.in_features + mod.out_features)
    for name, p in model.named_parameters():
        if (
            targets["target_parameters"]
            and p.dim() == 3
            and any(name.endswith(t) for t in targets["target_parameters"])
        ):
            n += lora.rank_of("routed_experts") * p.shape[0] * (p.shape[1] + p.shape[2])
    return n


# ------------------------------------------------------------------------------------------------ plan
def weight_bytes_per_param(params: Params) -> float:
    if params.model.load_in_4bit:
        return BYTES_PER_PARAM["4bit"]
    if params.model.dtype == "auto":  # the embedded model is float32; hub checkpoints load in their bf16
        return 4 if params.model.is_embedded else 2
    return BYTES_PER_PARAM[params.model.dtype]


def training_memory(params: Params, b: Backbone, hw: Hardware) -> dict[str, float]:
    t = params.train
    optim = str(t.sft.get("optim", DEFAULT_OPTIM))
    shards = hw.count if t.launcher == "accelerate_deepspeed_zero3" else 1
    seq, batch = params.model.max_seq_length, t.per_device_batch_size
    act_bytes = 4 if t.precision == "fp32" or (t.precision == "auto" and not hw.is_gpu) else 2
    bsh = batch * seq * b.hidden * act_bytes  # one hidden-state tensor
    # checkpointing keeps each layer's input and recomputes one layer at a time (~17 such tensors, 34·bsh bytes
    # at 2 bytes); without it every layer keeps all of its ~17
    activations = bsh * b.layers + 17 * bsh if t.gradient_checkpointing else 17 * bsh * b.layers
    return {
        "frozen weights": b.total_params * weight_bytes_per_param(params) / shards / GIB,
        f"LoRA weights+grads+{optim}": b.lora_params
        * (LORA_WEIGHT_GRAD_BYTES + optimizer_state_bytes(optim))
        / shards
        / GIB,
        "activations": activations / GIB,
        # Unsloth's fused, chunked cross-entropy never holds the fp32 logits: one 16-bit copy
        "logits": (batch * seq * b.vocab * 2 if t.backend == "unsloth" else 2 * batch * seq * b.vocab * 4)
        / GIB,
        "CUDA context + slack": CUDA_OVERHEAD_GIB if hw.is_gpu else 0.0,
    }


def pool_items(params: Params, run_dir: Path | None) -> tuple[float, float, str]:
    """(items, prompt tokens per item, where from): the run's own pool when phase 01 has run, else the assumption."""
    import json

    stats = (run_dir / "01_data_mixture" / "mixture_stats.json") if run_dir else None
    if stats and stats.is_file():
        s = json.loads(stats.read_text(encoding="utf-8"))
        items = sum(c["items"] for c in s["cells"])
        return items, s["tokens"] / max(items, 1), "measured (phase 01)"
    return params.data.token_budget / ASSUMED_PROMPT_TOKENS, ASSUMED_PROMPT_TOKENS, "assumed"


def eval_docs(params: Params) -> tuple[float, float]:
    """(log-likelihood documents, judged documents) per model, honouring subsets and max_samples_per_task: counted
    in the mirror when the profile reads one, else from the benchmarks' published sizes (``BenchmarkSpec.docs``)."""
    from collections import Counter

    from arabic_r1.benchmark_mirrors import iter_mirror_rows
    from arabic_r1.benchmarks import oall_subsets, spec

    ep = params.eval
    ll = judged = 0.0
    for b in ep.benchmarks:
        subsets = oall_subsets(b)
        wanted = set(ep.subsets.get(b, []) or subsets)
        if ep.source == "mirror":
            rows = Counter(r.subset for r in iter_mirror_rows(ep.mirror_dir, b, [spec(b).eval_split]))
            sizes = [n for subset, n in rows.items() if subset in wanted]
        else:
            sizes = [spec(b).docs / len(subsets)] * len(wanted)
        cap = ep.max_samples_per_task or math.inf
        docs = sum(min(n, cap) for n in sizes)
        if spec(b).scoring == "judged":
            judged += docs
        else:
            ll += docs
    return ll, judged


def launch_layout(params: Params) -> dict[str, Any]:
    """What phase 04 launches (see the module docstring)."""
    t = params.train
    return {
        "launcher": t.launcher,
        "processes": t.processes,
        "machines": 1 if t.launcher == "single" else t.num_machines,
        "per_machine": 1 if t.launcher == "single" else t.num_gpus,
        "per_rank_batch": t.per_device_batch_size,
        "accumulation": t.gradient_accumulation_steps,
        "global_batch": t.global_batch,
    }


def make_plan(params: Params, hw: Hardware, run_dir: Path | None = None) -> Plan:
    b = size_backbone(params)
    mem = training_memory(params, b, hw)
    items, prompt_tokens, source = pool_items(params, run_dir)
    d = params.distill
    trace = min(ASSUMED_TRACE_TOKENS, d.max_new_tokens)
    kept = items * ASSUMED_KEEP_RATE
    tokens = {
        f"pool items ({source})": items,
        "teacher input tokens": items * (prompt_tokens + ASSUMED_TEMPLATE_TOKENS),
        "teacher output tokens": items * trace,
        "teacher output, upper bound": items * d.max_new_tokens,
        "training tokens": kept * (prompt_tokens + trace) * params.train.epochs,
    }
    priced = d.price_per_m_input > 0 or d.price_per_m_output > 0
    in_usd = tokens["teacher input tokens"] / 1e6 * d.price_per_m_input
    cost: dict[str, float | None] = {
        "expected": in_usd + tokens["teacher output tokens"] / 1e6 * d.price_per_m_output if priced else None,
        "upper bound": in_usd + tokens["teacher output, upper bound"] / 1e6 * d.price_per_m_output
        if priced
        else None,
    }
    peak = GPU_PEAK_TFLOPS.get(hw.name, 1.0 if not hw.is_gpu else 100) * 1e12  # a CPU: ~1 TFLOP/s
    layout = launch_layout(params)
    train_devices = layout["processes"] if hw.is_gpu else 1  # CPU processes share one machine's cores
    train_s = (
        6 * b.active_params * tokens["training tokens"] / (peak * MFU[params.train.launcher] * train_devices)
    )
    ll_docs, alrage_docs = eval_docs(params)
    n_models = len(params.eval.models)
    scored_tokens = (
        ll_docs * OALL_DOC_WORK["choices"] * (OALL_DOC_WORK["prompt_chars"] / ARABIC_CHARS_PER_TOKEN + 2)
    )
    tp = params.eval.tensor_parallel_size
    replicas = max(1, hw.count // tp)  # one model per tensor-parallel group of GPUs
    # log-likelihoods: lighteval's transformers model, one model spread over a machine's GPUs (device_map): the layers
    # run one GPU after the other, so one GPU's compute
    ll_s = n_models * 2 * b.active_params * scored_tokens / (peak * EVAL_PREFILL_MFU)
    decode = DECODE_TOKENS_PER_S.get(hw.name, 20.0) * DECODE_REF_ACTIVE / b.active_params * tp * replicas
    reasoning = "reasoning" in params.eval.scoring
    budget = params.eval.reasoning_max_new_tokens
    alrage_tokens = alrage_docs * params.eval.alrage_max_new_tokens
    gen_tokens = (ll_docs * budget if reasoning else 0) + alrage_tokens
    expected_gen = (ll_docs * min(ASSUMED_ANSWER_TOKENS, budget) if reasoning else 0) + alrage_tokens
    hours = {
        "training": train_s / 3600,
        "OALL log-likelihood": ll_s / 3600 if "loglikelihood" in params.eval.scoring else 0.0,
        "OALL generation (expected)": n_models * expected_gen / decode / 3600,
        "OALL generation (upper bound)": n_models * gen_tokens / decode / 3600,
    }
    plan = Plan(
        b,
        hw,
        {k: round(v, 3) for k, v in mem.items()},
        tokens,
        cost,
        hours,
        mfu=MFU[params.train.launcher],
        layout=layout,
    )
    if hw.is_gpu and layout["processes"] > hw.count:
        plan.problems.append(
            f"phase 04 launches {layout['processes']} ranks, one GPU each (train.num_gpus x train.num_machines); "
            f"the hardware has {hw.count} GPUs"
        )
    if params.run.device == "cuda" and not hw.is_gpu:
        plan.problems.append("run.device is cuda but this machine has no GPU")
    limit = hw.memory_gib * (0.95 if hw.is_gpu else 0.8)
    copies = 1 if hw.is_gpu else layout["per_machine"]  # CPU ranks: a whole model each, in one machine's RAM
    if not hw.is_gpu and copies > 1 and plan.train_memory_gib * copies > limit:
        plan.problems.append(
            f"training needs ~{plan.train_memory_gib:.1f} GiB per process x {copies} processes on this machine; "
            f"it has {hw.memory_gib:.1f} GiB (usable ~{limit:.1f}): fewer processes (train.num_gpus)"
        )
    if plan.train_memory_gib > limit:
        plan.problems.append(
            f"training needs ~{plan.train_memory_gib:.1f} GiB per device; {hw.name} has {hw.memory_gib:.1f} GiB "
            f"(usable ~{limit:.1f}): use load_in_4bit, a smaller max_seq_length/batch, or more GPUs with ZeRO-3"
        )
    if params.eval.backend == "vllm" and hw.is_gpu:
        need = (
            b.total_params
            * (1 if params.eval.quantization == "fp8" else BYTES_PER_PARAM.get(params.model.dtype, 2))
            / params.eval.tensor_parallel_size
            / GIB
        )
        if need > hw.memory_gib * params.eval.gpu_memory_utilization:
            plan.problems.append(
                f"evaluation: vLLM needs ~{need:.1f} GiB of weights per GPU (tensor_parallel_size "
                f"{params.eval.tensor_parallel_size}); {hw.memory_gib * params.eval.gpu_memory_utilization:.1f} GiB allowed"
            )
    return plan


def parse_hardware(spec: str) -> Hardware:
    """``--hardware 8xH100:80`` / ``T4:15`` / ``cpu:24``: plan for a machine other than this one."""
    m = re.fullmatch(r"(?:(\d+)x)?([A-Za-z][A-Za-z0-9_-]*):(\d+(?:\.\d+)?)", spec.strip())
    if not m or int(m.group(1) or 1) < 1:
        raise PlanError(f"--hardware {spec!r}: expected [COUNTx]NAME:GIB, e.g. T4:15 or 8xH100:80")
    count, name, mem = int(m.group(1) or 1), m.group(2), float(m.group(3))
    return Hardware("CPU" if name.lower() == "cpu" else gpu_kind(name), mem, count)
