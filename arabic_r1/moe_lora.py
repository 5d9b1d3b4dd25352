"""LoRA on sparse MoE models, by parameter family, with a coverage report that fails loudly.

Families: attention projections, routed experts (transformers 5 stores them as fused 3-D parameters
``mlp.experts.gate_up_proj`` / ``down_proj``, adapted through PEFT ``target_parameters``), shared experts and dense
MLP layers (DeepSeek-V3), routers (frozen unless asked), embeddings.

Every PEFT call that creates, saves or reloads one of these adapters runs inside ``peft_compat.no_v4_moe_remap``:
PEFT would otherwise move DeepSeek-V3's shared-expert and dense-MLP targets onto the routed experts.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from arabic_r1.errors import ExplainedError
from arabic_r1.params import LoraParams

FAMILY_PATTERNS = (  # order matters: first match wins
    ("routed_experts", re.compile(r"\.mlp\.experts\.")),
    ("shared_experts", re.compile(r"\.mlp\.shared_experts\.")),
    ("router", re.compile(r"\.mlp\.(gate|router)(\.|$)")),  # gpt-oss names it router
    ("dense_mlp", re.compile(r"\.mlp\.(gate_proj|up_proj|down_proj)(\.|$)")),
    ("attention", re.compile(r"\.self_attn\.")),
    ("embeddings", re.compile(r"(embed_tokens|lm_head)")),
)
REPORT_FAMILIES = (
    "attention",
    "routed_experts",
    "shared_experts",
    "dense_mlp",
    "router",
    "embeddings",
    "other",
)


class CoverageError(ExplainedError, RuntimeError):
    """A family that params ask to adapt got no adapter (or matches nothing in this architecture)."""


def family_of(name: str) -> str:
    for family, pattern in FAMILY_PATTERNS:
        if pattern.search(name):
            return family
    return "other"


def _linear_leaves(model: Any, family: str) -> set[tuple[str, int, int]]:
    import torch

    out = set()
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and family_of(f".{name}") == family:
            out.add((name, mod.in_features, mod.out_features))
    return out


def lora_targets(model: Any, lora: LoraParams) -> dict[str, Any]:
    """PEFT target_modules (an anchored regex), target_parameters and modules_to_save for the requested families.

    Raises CoverageError for a family the architecture does not have, and ValueError for a rank larger than a
    targeted layer's smaller dimension.
    """
    leaves: dict[str, list[str]] = defaultdict(list)
    problems = []
    for family in ("attention", "shared_experts", "dense_mlp"):
        if family not in lora.targets:
            continue
        found = _linear_leaves(model, family)
        if not found:
            problems.append(f"{family}: no nn.Linear layers of this family in {type(model).__name__}")
        for name, fan_in, fan_out in found:
            if lora.r > min(fan_in, fan_out):
                raise ValueError(
                    f"train.lora.r={lora.r} is larger than the smaller dimension of {name} ({fan_in}x{fan_out})"
                )
            leaves[family].append(name)
    params = []
    if "routed_experts" in lora.targets:
        experts = [
            (n, tuple(p.shape))
            for n, p in model.named_parameters()
            if family_of(f".{n}") == "routed_experts" and p.dim() == 3
        ]
        # per-expert nn.Linear modules (transformers-4 layouts, Unsloth's 4-bit gpt-oss) are adapted as modules
        split = _linear_leaves(model, "routed_experts")
        leaves["routed_experts"] = [name for name, _, _ in split]
        for name, fan_in, fan_out in split:
            if lora.r > min(fan_in, fan_out):
                raise ValueError(f"train.lora.r={lora.r} is larger than the smaller dimension of {name}")
        if not experts and not split:
            problems.append(
                f"routed_experts: no expert weights (mlp.experts.*, fused 3-D or nn.Linear) in {type(model).__name__}"
            )
        for name, shape in experts:
            if lora.r > min(shape[1:]):
                raise ValueError(
                    f"train.lora.r={lora.r} is larger than the smaller dimension of {name} {shape[1:]}"
                )
        params = sorted({"mlp.experts." + n.rsplit(".", 1)[-1] for n, _ in experts})
    if problems:
        raise CoverageError(
            "train.lora.targets asks for families this model does not have: " + "; ".join(problems)
        )
    # exact module names, anchored: no leaf name alone (PEFT would remap gate_proj & co. to the experts)
    names = sorted(n for family in leaves.values() for n in family)
    regex = "^(" + "|".join(re.escape(n) for n in names) + ")$" if names else None
    routers = sorted(
        {n.rsplit(".", 2)[-2] + "." + n.rsplit(".", 1)[-1] for n, _ in model.named_modules()
         if family_of(f".{n}") == "router" and n.endswith((".mlp.gate", ".mlp.router"))}
    )  # fmt: skip
    return {
        "target_modules": regex,
        "target_parameters": params or None,
        "modules_to_save": routers if lora.train_router and routers else None,
    }


def lora_config(model: Any, lora: LoraParams):
    from peft import LoraConfig

    t = lora_targets(model, lora)
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none", task_type="CAUSAL_LM",
        target_modules=t["target_modules"] or [], target_parameters=t["target_parameters"], modules_to_save=t["modules_to_save"],
    )  # fmt: skip


def coverage_from_names(names_and_sizes: list[tuple[str, int]]) -> dict[str, Any]:
    families: dict[str, dict[str, Any]] = {f: {"parameters": 0, "tensors": []} for f in REPORT_FAMILIES}
    for name, size in names_and_sizes:
        entry = families[family_of(name)]
        entry["parameters"] += size
        entry["tensors"].append(name)
    return families


def coverage_of_model(model: Any) -> dict[str, Any]:
    """Trainable parameters per family after ``get_peft_model``."""
    return coverage_from_names([(n, p.numel()) for n, p in model.named_parameters() if p.requires_grad])


def coverage_of_adapter(adapter_dir: Path) -> dict[str, Any]:
    """The same report read back from the saved adapter file (what will actually be loaded later)."""
    from safetensors import safe_open

    with safe_open(str(Path(adapter_dir) / "adapter_model.safetensors"), "pt") as f:
        return coverage_from_names([(k, math.prod(f.get_slice(k).get_shape())) for k in f.keys()])


def check_coverage(report: dict[str, Any], lora: LoraParams, where: str) -> None:
    requested = list(lora.targets) + (["router"] if lora.train_router else [])
    empty = [f for f in requested if report[f]["parameters"] == 0]
    if empty:
        raise CoverageError(
            f"{where}: requested famil{'y' if len(empty) == 1 else 'ies'} {', '.join(empty)} got no adapter"
        )


def coverage_table(
    model_report: dict[str, Any], adapter_report: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    rows = []
    for f in REPORT_FAMILIES:
        row = {
            "family": f,
            "trainable parameters": model_report[f]["parameters"],
            "tensors": len(model_report[f]["tensors"]),
        }
        if adapter_report is not None:
            row["saved adapter parameters"] = adapter_report[f]["parameters"]
            row["saved adapter tensors"] = len(adapter_report[f]["tensors"])
        rows.append(row)
    return rows
