"""``arabic-r1 preflight --params P``: will this profile's first real run start? Judged on a laptop, offline, in
seconds, for the machine the profile is written for (``run.hardware``), not the one it runs on.

It builds the backbone on PyTorch's meta device from its config.json (the package ships those of the profiles'
models), applies phase 04's real PEFT config to it, and runs every rule of :data:`CHECKS` that needs no weights:
quantization conflicts (:mod:`arabic_r1.model_loading`, the loaders' own rules), LoRA options PEFT refuses, the
launcher against the engines the set-up installs, the packages the profile needs against the extras that install
them (:mod:`arabic_r1.needs`), memory for training and scoring against the declared hardware (:mod:`arabic_r1.plan`),
and reasoning budgets against the model cards. What only the target machine can answer is listed as such.

Each problem is one line with the key to change. Phases 04 and 05 run it in their first cell (``open_phase``), so a
notebook on Colab stops there, not an hour later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from arabic_r1.errors import ExplainedError
from arabic_r1.params import Params

Status = Literal["ok", "fail", "unchecked"]
# Output budgets the model cards recommend for their thinking mode (reasoning scoring truncates below them)
REASONING_BUDGETS = {
    "Qwen/Qwen3-30B-A3B-Thinking-2507": (32768, "model card: 32,768 output tokens for most queries"),
    "unsloth/Qwen3-30B-A3B-Thinking-2507": (32768, "model card: 32,768 output tokens for most queries"),
    "deepseek-ai/DeepSeek-R1": (32768, "model card: maximum generation length 32,768 tokens"),
}


class PreflightFailed(ExplainedError, RuntimeError):
    """The profile would fail on its target machine; the message lists each problem with its key."""


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    key: str = ""

    def line(self) -> str:
        mark = {"ok": "ok  ", "fail": "FAIL", "unchecked": "----"}[self.status]
        return f"[{mark}] {self.check}: {self.message}" + (f"  -> {self.key}" if self.key else "")


@dataclass
class Target:
    """What every check reads: the params, the declared hardware, the backbone's config and its meta skeleton."""

    params: Params
    hardware: Any  # plan.Hardware
    config: dict[str, Any]
    skeleton: Any = None
    notes: list[str] = field(default_factory=list)

    @property
    def gpu(self) -> bool:
        return self.hardware.is_gpu


# ------------------------------------------------------------------------------------------------ checks
def check_quantization(t: Target) -> list[Finding]:
    """The loaders' own rules (model_loading.load_plan) for phase 04's and phase 05's loads, on the target."""
    from arabic_r1.model_loading import (
        FP8_KERNEL_GPUS,
        ModelLoadError,
        load_plan,
        quant_method,
        quantization_of,
    )

    p = t.params
    quant = None if p.model.bf16_copy else quantization_of(t.config)
    found: list[Finding] = []
    loads = []
    if p.train.backend == "transformers":
        placement = "engine" if p.train.launcher.startswith("accelerate_") else "process"
        loads.append(("phase 04", "train", p.model.load_in_4bit, "model.load_in_4bit", placement))
    elif quant is not None and quant_method(quant) == "fp8":
        found.append(
            Finding(
                "quantization",
                "fail",
                "Unsloth does not load DeepSeek's FP8 checkpoint for training",
                "train.backend: transformers with model.bf16_copy: true",
            )
        )
    if p.eval.backend != "unsloth":  # log-likelihoods and transformers generation load through model_loading
        loads.append(("phase 05", "eval", p.eval.load_in_4bit, "eval.load_in_4bit", "spread"))
    for phase, purpose, four_bit, key, placement in loads:
        try:
            plan = load_plan(
                purpose,
                quant,
                load_in_4bit=four_bit,
                key=key,
                compute_dtype="bfloat16",
                cuda=t.gpu,
                fp8_kernels=t.hardware.name in FP8_KERNEL_GPUS,
                placement=placement,
            )
        except ModelLoadError as exc:
            key_hint = key if key in str(exc) else "model.bf16_copy" if "bf16_copy" in str(exc) else ""
            found.append(Finding("quantization", "fail", f"{phase}: {exc}", key_hint))
            continue
        found.append(Finding("quantization", "ok", f"{phase}: " + ("; ".join(plan.notes) or "plain load")))
    return found


def check_adapter(t: Target) -> list[Finding]:
    """Phase 05 can put phase 04's adapter back on its base: Unsloth trains gpt-oss in 4-bit on its per-expert copy,
    which only Unsloth loads (model_loading.check_adapter_loader refuses it at load time; this says so up front)."""
    p = t.params
    if "finetuned" not in p.eval.models or p.train.merge:
        return []
    per_expert = p.train.backend == "unsloth" and p.model.load_in_4bit and p.model.family == "gpt_oss"
    if per_expert and p.eval.backend != "unsloth":
        return [
            Finding(
                "adapter",
                "fail",
                "phase 04 trains through Unsloth on its per-expert 4-bit gpt-oss copy and "
                "keeps only the adapter (train.merge: false); plain transformers + PEFT cannot place it",
                "eval.backend: unsloth",
            )
        ]
    return [
        Finding(
            "adapter", "ok", f"phase 05 loads the adapter on its base with eval.backend: {p.eval.backend}"
        )
    ]


def check_lora(t: Target) -> list[Finding]:
    """Phase 04's target rules and PEFT's own ``get_peft_model`` on the meta skeleton (what PEFT refuses, it refuses
    here: e.g. lora_dropout with target_parameters)."""
    from peft import get_peft_model

    from arabic_r1.moe_lora import (
        CoverageError,
        check_family_ranks,
        coverage_of_model,
        expert_patterns_quiet,
        lora_config,
    )
    from arabic_r1.peft_compat import no_v4_moe_remap

    lora = t.params.train.lora
    try:
        cfg = lora_config(t.skeleton, lora)
    except CoverageError as exc:
        return [Finding("lora", "fail", str(exc), "train.lora.targets")]
    except ValueError as exc:
        return [Finding("lora", "fail", str(exc), "train.lora.r")]
    import torch

    try:  # on the meta device too: PEFT would otherwise initialise every LoRA matrix on the CPU (~80 GB for paper)
        with no_v4_moe_remap(t.skeleton), expert_patterns_quiet(), torch.device("meta"):
            peft_model = get_peft_model(t.skeleton, cfg)
        check_family_ranks(peft_model, lora)
    except Exception as exc:  # noqa: BLE001 - PEFT's own refusal is the finding
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        key = "train.lora.dropout: 0.0" if "dropout" in text else "train.lora"
        return [Finding("lora", "fail", f"PEFT refuses the adapter: {text}", key)]
    cov = coverage_of_model(peft_model)
    empty = [f for f in lora.targets if cov[f]["parameters"] == 0]
    if empty:
        return [Finding("lora", "fail", f"families {', '.join(empty)} get no adapter", "train.lora.targets")]
    sizes = ", ".join(
        f"{f} {cov[f]['parameters'] / 1e6:,.1f}M (r={v['r']}, alpha/r={v['scale']:g})"
        for f, v in lora.scales().items()
    )
    return [Finding("lora", "ok", f"PEFT builds the adapter: {sizes} trainable")]


def check_packages(t: Target) -> list[Finding]:
    """Every distribution the profile needs is installed by a set-up extra (needs.py)."""
    from arabic_r1.needs import GPU_SETUP_EXTRAS, needs_of, provider

    found = []
    for need in needs_of(t.params):
        got = provider(need.dist)
        if got is None:
            found.append(
                Finding(
                    "packages",
                    "fail",
                    f"{need.why} needs {need.dist}, which no extra of this package installs",
                    need.why.split(":")[0],
                )
            )
            continue
        extra, req = got
        how = (
            "make install on a GPU machine"
            if extra in GPU_SETUP_EXTRAS
            else f"make install GPU_EXTRAS={','.join((*GPU_SETUP_EXTRAS, extra))}"
        )
        found.append(
            Finding("packages", "ok", f"{need.why} needs {req.name}{req.specifier}: extra '{extra}' ({how})")
        )
    return found or [Finding("packages", "ok", "nothing beyond the base install")]


def check_launcher(t: Target) -> list[Finding]:
    from arabic_r1.params import CONFIGS_DIR, LAUNCHER_CONFIGS

    tr = t.params.train
    found = []
    if tr.launcher in LAUNCHER_CONFIGS and not (CONFIGS_DIR / LAUNCHER_CONFIGS[tr.launcher]).is_file():
        found.append(
            Finding(
                "launcher", "fail", f"no {LAUNCHER_CONFIGS[tr.launcher]} in {CONFIGS_DIR}", "train.launcher"
            )
        )
    if t.gpu and tr.processes > t.hardware.count:
        found.append(
            Finding(
                "launcher",
                "fail",
                f"{tr.processes} ranks (one GPU each) on {t.hardware.count} GPUs",
                "train.num_gpus / train.num_machines",
            )
        )
    if tr.launcher in LAUNCHER_CONFIGS and tr.merge:
        gib = sum(p.numel() for p in t.skeleton.parameters()) * 2 / 2**30
        t.notes.append(
            f"train.merge with {tr.launcher}: no rank holds the whole model, so rank 0 reloads the base and "
            f"merges the saved adapter in host memory: ~{gib:,.0f} GiB of RAM on its machine"
        )
    if tr.num_machines > 1:
        t.notes.append(
            f"train.num_machines={tr.num_machines}: phase 04 starts its own machine's ranks; the others "
            "are started by your scheduler (srun) with MASTER_ADDR/MASTER_PORT"
        )
    return found or [Finding("launcher", "ok", f"{tr.launcher}, {tr.processes} process(es)")]


def check_memory(t: Target) -> list[Finding]:
    """Training memory per device (weights + LoRA + its optimizer state + activations + logits) and scoring memory
    (the whole model on one machine's GPUs for log-likelihoods; weights / tensor_parallel_size for vLLM)."""
    from arabic_r1.plan import GIB, make_plan, weight_bytes_per_param

    p = t.params
    plan = make_plan(p, t.hardware)
    found = [
        Finding(
            "memory",
            "fail",
            msg,
            "model.max_seq_length / train.per_device_batch_size / train.sft.optim / "
            "model.load_in_4bit / run.hardware",
        )
        for msg in plan.problems
    ]
    if not plan.problems:
        found.append(
            Finding(
                "memory",
                "ok",
                f"training ~{plan.train_memory_gib:.1f} GiB per device of "
                f"{t.hardware.memory_gib:.0f} ({', '.join(f'{k} {v:.1f}' for k, v in plan.memory_gib.items())})",
            )
        )
    if t.gpu and "loglikelihood" in p.eval.scoring:
        per_param = (
            0.5625
            if p.eval.load_in_4bit or p.model.load_in_4bit and p.eval.backend == "unsloth"
            else weight_bytes_per_param(p)
        )
        need = plan.backbone.total_params * per_param / GIB
        per_machine = t.hardware.count // max(p.train.num_machines, 1)
        have = per_machine * t.hardware.memory_gib * 0.9
        status: Status = "ok" if need <= have else "fail"
        found.append(
            Finding(
                "memory",
                status,
                f"phase 05 log-likelihoods hold the whole model on one machine's GPUs: "
                f"~{need:.0f} GiB of weights, {per_machine} x {t.hardware.memory_gib:.0f} GiB there",
                ""
                if status == "ok"
                else "eval.scoring (drop loglikelihood) / eval.load_in_4bit / run.hardware",
            )
        )
    return found


def check_reasoning(t: Target) -> list[Finding]:
    """Reasoning scoring's budget against the model card's (a truncated thought is no answer), and the chat template
    of log-likelihood scoring."""
    p = t.params
    found = []
    budget = REASONING_BUDGETS.get(p.model.name_or_path)
    if "reasoning" in p.eval.scoring and budget is not None:
        ok = p.eval.reasoning_max_new_tokens >= budget[0]
        found.append(
            Finding(
                "reasoning",
                "ok" if ok else "fail",
                f"eval.reasoning_max_new_tokens {p.eval.reasoning_max_new_tokens:,} vs {budget[1]}"
                + ("" if ok else ": most thoughts would be cut off and counted as truncated"),
                "" if ok else f"eval.reasoning_max_new_tokens: {budget[0]}",
            )
        )
    if "loglikelihood" in p.eval.scoring:
        found.append(
            Finding(
                "chat template",
                "ok",
                f"log-likelihoods with eval.loglikelihood_chat_template: "
                f"{p.eval.loglikelihood_chat_template}",
            )
        )
    return found


CHECKS: tuple[Callable[[Target], list[Finding]], ...] = (
    check_quantization,
    check_adapter,
    check_lora,
    check_launcher,
    check_packages,
    check_memory,
    check_reasoning,
)
# What a laptop cannot tell about the target machine
UNCHECKABLE = (
    "GPU kernels (Unsloth's MoE backends, FP8/MXFP4 kernels, flash attention) on the target's CUDA/driver",
    "hub access: gated licences, token, download bandwidth and disk for the weights",
    "teacher/judge API keys and rate limits (phase 02 stops cleanly at its budget)",
)


def target_of(params: Params) -> Target:
    from arabic_r1.model_loading import config_dict
    from arabic_r1.plan import detect_hardware, meta_backbone, parse_hardware

    hw = parse_hardware(params.run.hardware) if params.run.hardware else detect_hardware(params)
    skeleton, cfg, _ = meta_backbone(params)
    raw = (
        cfg.to_dict()
        if params.model.is_embedded
        else config_dict(params.model.name_or_path, params.model.revision)[0]
    )
    return Target(params, hw, raw, skeleton)


def preflight(params: Params) -> list[Finding]:
    """Every check on this profile's target; a check that crashes is reported as a failure, not raised."""
    t = target_of(params)
    found: list[Finding] = []
    if params.run.hardware is None:
        found.append(
            Finding(
                "hardware",
                "unchecked",
                f"no run.hardware: judged against this machine "
                f"({t.hardware.count} x {t.hardware.name}, {t.hardware.memory_gib:.0f} GiB)",
                "run.hardware",
            )
        )
    for check in CHECKS:
        try:
            found += check(t)
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is itself a finding
            found.append(
                Finding(check.__name__.removeprefix("check_"), "fail", f"{type(exc).__name__}: {exc}")
            )
    found += [Finding("target only", "unchecked", n) for n in (*t.notes, *UNCHECKABLE)]
    return found


def require_preflight(params: Params) -> list[Finding]:
    """Phase 04/05's first cell: raise with every failing line, else return the findings (for the notebook)."""
    found = preflight(params)
    failed = [f for f in found if f.status == "fail"]
    if failed:
        raise PreflightFailed(
            f"profile '{params.profile}' would fail on {params.run.hardware or 'this machine'}:\n"
            + "\n".join(f.line() for f in failed)
            + f"\n(all checks: {params.command('preflight')})"
        )
    return found
