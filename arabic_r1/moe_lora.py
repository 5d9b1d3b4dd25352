"""LoRA on sparse MoE models, by parameter family, with a coverage report that fails loudly.

Families: attention projections, routed experts (transformers 5 stores them as fused 3-D parameters
``mlp.experts.gate_up_proj`` / ``down_proj``, adapted through PEFT ``target_parameters``), shared experts and dense
MLP layers (DeepSeek-V3), routers (frozen unless asked), embeddings.

Every PEFT call that creates, saves or reloads one of these adapters runs inside ``peft_compat.no_v4_moe_remap``:
PEFT would otherwise move DeepSeek-V3's shared-expert and dense-MLP targets onto the routed experts.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
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


def full_shape(p: Any) -> tuple[int, ...]:
    """A parameter's shape, also under DeepSpeed ZeRO-3, which partitions it (the local tensor is empty; the full
    shape is kept in ``ds_shape``)."""
    return tuple(getattr(p, "ds_shape", p.shape))


def _linear_leaves(model: Any, family: str) -> list[tuple[str, int, int]]:
    """The family's nn.Linear layers in the model's order: the per-family patterns saved in adapter_config.json and
    the layer an error names are the same on every run."""
    import torch

    return [
        (name, mod.in_features, mod.out_features)
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and family_of(f".{name}") == family
    ]


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
            _check_rank(lora, family, name, (fan_in, fan_out))
            leaves[family].append(name)
    params = []
    if "routed_experts" in lora.targets:
        experts = [
            (n, full_shape(p))
            for n, p in model.named_parameters()
            if family_of(f".{n}") == "routed_experts" and len(full_shape(p)) == 3
        ]
        # per-expert nn.Linear modules (transformers-4 layouts, Unsloth's 4-bit gpt-oss) are adapted as modules
        split = _linear_leaves(model, "routed_experts")
        leaves["routed_experts"] = [name for name, _, _ in split]
        for name, fan_in, fan_out in split:
            _check_rank(lora, "routed_experts", name, (fan_in, fan_out))
        if not experts and not split:
            problems.append(
                f"routed_experts: no expert weights (mlp.experts.*, fused 3-D or nn.Linear) in {type(model).__name__}"
            )
        for name, shape in experts:
            _check_rank(lora, "routed_experts", name, shape[1:])
        params = sorted({"mlp.experts." + n.rsplit(".", 1)[-1] for n, _ in experts})
    if problems:
        raise CoverageError(
            "train.lora.targets asks for families this model does not have: " + "; ".join(problems)
        )
    # exact module names, anchored: no leaf name alone (PEFT would remap gate_proj & co. to the experts)
    names = sorted(n for family in leaves.values() for n in family)
    regex = "^(" + "|".join(re.escape(n) for n in names) + ")$" if names else None
    routers = sorted(
        {
            n.rsplit(".", 2)[-2] + "." + n.rsplit(".", 1)[-1]
            for n, _ in model.named_modules()
            if family_of(f".{n}") == "router" and n.endswith((".mlp.gate", ".mlp.router"))
        }
    )
    if params:
        leaves["routed_experts"] += params
    return {
        "target_modules": regex,
        "target_parameters": params or None,
        "modules_to_save": routers if lora.train_router and routers else None,
        "by_family": dict(leaves),  # module names and expert parameter names per family
    }


def _check_rank(lora: LoraParams, family: str, name: str, dims: tuple[int, ...]) -> None:
    r = lora.rank_of(family)
    if r > min(dims):
        key = f"train.lora.per_family.{family}.r" if family in lora.per_family else "train.lora.r"
        raise ValueError(f"{key}={r} is larger than the smaller dimension of {name} {tuple(dims)}")


def lora_config(model: Any, lora: LoraParams):
    """The one LoRA config of phase 04: PEFT takes it as is, Unsloth through :func:`unsloth_peft_kwargs`. A family
    with its own rank/alpha (``train.lora.per_family``) becomes PEFT's ``rank_pattern`` / ``alpha_pattern``, keyed by
    the exact module and expert-parameter names of that family (PEFT matches them as ``(.*\\.)?(key)$``)."""
    from peft import LoraConfig

    t = lora_targets(model, lora)
    patterns = {f: "|".join(re.escape(n) for n in t["by_family"].get(f, [])) for f in lora.per_family}
    patterns = {f: f"({p})" for f, p in patterns.items() if p}
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=t["target_modules"] or [],
        target_parameters=t["target_parameters"],
        modules_to_save=t["modules_to_save"],
        rank_pattern={p: lora.rank_of(f) for f, p in patterns.items()},
        alpha_pattern={p: lora.alpha_of(f) for f, p in patterns.items()},
    )


@contextlib.contextmanager
def expert_patterns_quiet():
    """PEFT 0.21.2 applies a rank_pattern key to expert parameters (target_parameters) but then warns that the key
    "did not match any targeted module and was ignored": its check looks at module targets only
    (peft/tuners/tuners_utils.py). That false line is dropped; :func:`check_family_ranks` checks what was applied."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The following (rank|alpha)_pattern keys did not match")
        yield


def check_family_ranks(model: Any, lora: LoraParams) -> dict[str, dict[str, float]]:
    """Every adapter's rank and scale as its family's (``train.lora`` / ``per_family``); raises naming a layer that
    got another. Returns the family table phase 04 prints and records."""
    wrong = []
    for name, module in model.named_modules():
        r = getattr(module, "r", None)
        if not isinstance(r, dict) or "default" not in r:
            continue
        bare = name.removeprefix("base_model.model.")
        family = "routed_experts" if bare.endswith(".experts") else family_of(f".{bare}")
        if family not in lora.targets:
            continue
        want_r, want_scale = lora.rank_of(family), lora.alpha_of(family) / lora.rank_of(family)
        if r["default"] != want_r or abs(module.scaling["default"] - want_scale) > 1e-9:
            wrong.append(
                f"{bare} ({family}): r={r['default']}, scale {module.scaling['default']:g}; expected "
                f"r={want_r}, scale {want_scale:g}"
            )
    if wrong:
        raise CoverageError(f"{len(wrong)} adapter(s) did not get their family's rank/alpha, e.g. {wrong[0]}")
    return lora.scales()


# Unsloth's get_peft_model names these itself; everything else it forwards to LoraConfig (**kwargs, read in
# unsloth/models/llama.py at the pinned 2026.10.9).
UNSLOTH_NAMED = (
    "r",
    "lora_alpha",
    "lora_dropout",
    "bias",
    "target_modules",
    "target_parameters",
    "modules_to_save",
)


def unsloth_peft_kwargs(cfg: Any) -> dict[str, Any]:
    """``FastLanguageModel.get_peft_model`` arguments from the same LoraConfig PEFT gets: nothing passed by hand
    twice, so the two backends cannot drift (per-family patterns included)."""
    kwargs = {name: getattr(cfg, name) for name in UNSLOTH_NAMED}
    kwargs["target_modules"] = kwargs["target_modules"] or []
    for name in ("rank_pattern", "alpha_pattern"):
        if getattr(cfg, name):
            kwargs[name] = dict(getattr(cfg, name))
    return kwargs


def coverage_from_names(names_and_sizes: list[tuple[str, int]]) -> dict[str, Any]:
    families: dict[str, dict[str, Any]] = {f: {"parameters": 0, "tensors": []} for f in REPORT_FAMILIES}
    for name, size in names_and_sizes:
        entry = families[family_of(name)]
        entry["parameters"] += size
        entry["tensors"].append(name)
    return families


def coverage_of_model(model: Any) -> dict[str, Any]:
    """Trainable parameters per family after ``get_peft_model``."""
    return coverage_from_names(
        [(n, math.prod(full_shape(p))) for n, p in model.named_parameters() if p.requires_grad]
    )


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


# ------------------------------------------------------------------------------------ did the experts learn
# pragma: no mutate block - `make mutation` covers the target builder above; what follows needs training to show
_EXPERT_LAYER = re.compile(r"layers\.(\d+)\.mlp\.experts(?:\.|$)")
_PER_EXPERT = re.compile(r"layers\.(\d+)\.mlp\.experts\.(?:(\d+)\.(\w+)|(\w+)\.(\d+))")


class ExpertsNotUpdated(ExplainedError, RuntimeError):
    """Training left routed-expert adapters untouched (or a merge did not carry them): the run would report LoRA on
    the experts while the experts never changed."""


def expert_layout(model: Any) -> str | None:
    """How this model stores its routed experts: ``fused`` (3-D parameters, transformers 5), ``per_expert`` (one
    nn.Linear per expert: transformers-4 layouts, Unsloth's 4-bit gpt-oss), or None (no experts)."""
    import torch

    names = [
        (n, m)
        for n, m in model.named_modules()
        if family_of(f".{n}") == "routed_experts" and "lora_" not in n
    ]
    if any(isinstance(m, torch.nn.Linear) for _, m in names):
        return "per_expert"
    fused = any(
        len(full_shape(p)) == 3 for n, p in model.named_parameters() if family_of(f".{n}") == "routed_experts"
    )
    return "fused" if fused else None


@contextlib.contextmanager
def gathered(param: Any):
    """``param``'s whole value while inside: under DeepSpeed ZeRO-3 each rank holds a slice, so every rank gathers
    it (a collective: all ranks call this in the same order); otherwise the tensor as it is."""
    if hasattr(param, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([param]):
            yield param.detach()
        return
    yield param.detach()


def expert_lora_b(model: Any, adapter: str = "default") -> dict[tuple[int, str], dict[int, float]]:
    """{(layer, adapted weight): {expert: largest |lora_B| entry of that expert}} for every routed-expert adapter of
    a PEFT model: PEFT's ParamWrapper keeps ``lora_B`` as ``[out, r * experts]`` (expert e = ``[:, :, e]`` of
    ``[out, r, experts]``, as its ``get_delta_weight`` reads it); per-expert layouts have one lora.Linear each."""
    out: dict[tuple[int, str], dict[int, float]] = {}
    for name, mod in model.named_modules():
        lora_b = getattr(mod, "lora_B", None)
        if lora_b is None or adapter not in lora_b or family_of(f".{name}.") != "routed_experts":
            continue
        with gathered(lora_b[adapter].weight) as weight:
            if hasattr(mod, "parameter_name") and getattr(mod, "num_experts", 1) > 1:  # a fused ParamWrapper
                layer = int(_EXPERT_LAYER.search(name).group(1))
                per = weight.float().reshape(weight.shape[0], -1, mod.num_experts).abs().amax(dim=(0, 1))
                out[(layer, mod.parameter_name)] = {e: float(v) for e, v in enumerate(per)}
            elif m := _PER_EXPERT.search(name):
                layer = int(m.group(1))
                expert, weight_name = (
                    (int(m.group(2)), m.group(3)) if m.group(2) else (int(m.group(5)), m.group(4))
                )
                out.setdefault((layer, weight_name), {})[expert] = float(weight.float().abs().max())
    return out


class RoutedTokens:
    """Tokens each expert of each MoE layer received during training (a forward pre-hook on every ``mlp.experts``
    module, as :mod:`arabic_r1.routing` counts them): an expert the router never picked cannot have learned, and is
    reported apart from one that got tokens and still did not change."""

    def __init__(self, model: Any):
        import torch

        cfg = model.config
        n = int(
            getattr(cfg, "n_routed_experts", None)
            or getattr(cfg, "num_experts", None)
            or getattr(cfg, "num_local_experts", 0)
            or 0
        )
        self.counts: dict[int, Any] = {}
        self.hooks = []
        for name, mod in model.named_modules():
            m = re.search(r"layers\.(\d+)\.mlp\.experts$", name)
            if m is None or not n:
                continue
            layer = int(m.group(1))
            self.counts[layer] = torch.zeros(n, dtype=torch.long)

            def hook(_mod, args, layer=layer):
                # transformers 5's experts get (hidden, top_k_index, top_k_weights); other layouts are not counted
                if len(args) > 1 and isinstance(args[1], torch.Tensor) and not args[1].is_floating_point():
                    self.counts[layer] += torch.bincount(args[1].detach().reshape(-1).cpu(), minlength=n)[:n]

            self.hooks.append(mod.register_forward_pre_hook(hook))

    def close(self) -> dict[int, list[int]]:
        """Remove the hooks; the counts summed over every rank of a launch."""
        import torch.distributed as dist

        for h in self.hooks:
            h.remove()
        if dist.is_available() and dist.is_initialized():
            for c in self.counts.values():
                dist.all_reduce(c)
        return {layer: c.tolist() for layer, c in sorted(self.counts.items())}


def check_experts_updated(model: Any, routed: dict[int, list[int]] | None) -> dict[str, Any]:
    """After training: every routed-expert adapter whose expert received tokens has a non-zero ``lora_B`` (LoRA starts
    it at zero, so an all-zero ``lora_B`` never took a step). Raises :class:`ExpertsNotUpdated` naming the layers;
    returns the counts for ``coverage.json``. Experts the router never picked are counted apart (not a failure)."""
    b = expert_lora_b(model)
    untouched, starved = [], []
    for (layer, weight), experts in sorted(b.items()):
        got = (routed or {}).get(layer)
        for e, value in experts.items():
            if value == 0.0:
                never = got is not None and got[e] == 0
                (starved if never else untouched).append(f"layer {layer} {weight} expert {e}")
    total = sum(len(v) for v in b.values())
    report = {
        "expert_adapters": total,
        "updated": total - len(untouched) - len(starved),
        "untouched": untouched,
        "never_routed": starved,
    }
    if untouched:
        layers = sorted({u.split(" ")[1] for u in untouched}, key=int)
        raise ExpertsNotUpdated(
            f"{len(untouched)} of {total} routed-expert adapters received tokens but kept lora_B = 0 (never updated), in "
            f"layers {', '.join(layers)}: e.g. {'; '.join(untouched[:3])}. The experts were left out of the optimizer "
            "or their LoRA was bypassed (an MoE kernel that ignores the adapter: try another train.unsloth_moe_backend, "
            "or train.backend: transformers)"
        )
    return report


def merge_checked(model: Any, sample: int = 3) -> tuple[Any, dict[str, Any]]:
    """(``merge_and_unload``'s model, what was checked and the largest error), checked on up to ``sample`` routed-expert adapters (first, middle, last): the merged weight
    minus the base weight is PEFT's own delta (``get_delta_weight``), to the rounding of the weight's dtype. A merge
    that drops the expert adapters (the base weights come back unchanged) raises :class:`ExpertsNotUpdated`."""
    import torch

    wrappers = [
        (n, m)
        for n, m in model.named_modules()
        if hasattr(m, "parameter_name")
        and hasattr(m, "get_delta_weight")
        and family_of(f".{n}.") == "routed_experts"
    ]
    picks = (
        [wrappers[i] for i in sorted({0, len(wrappers) // 2, len(wrappers) - 1})][:sample] if wrappers else []
    )
    before = []
    for name, mod in picks:
        with torch.no_grad():
            base, delta = (
                mod.get_param().detach().clone(),
                mod.get_delta_weight(mod.active_adapters[0]).detach().clone(),
            )
        target = (
            re.sub(r"^base_model\.model\.", "", name).replace(".base_layer", "") + "." + mod.parameter_name
        )
        before.append((target, base, delta))
    merged = model.merge_and_unload()
    params = dict(merged.named_parameters())
    worst = 0.0
    for target, base, delta in before:
        got = params[target].detach().float() - base.float()
        worst = max(worst, float((got - delta.float()).abs().max()))
        eps = torch.finfo(base.dtype).eps if base.is_floating_point() else 0.0
        allowed = eps * (base.float().abs() + delta.float().abs()) + 1e-12
        if delta.abs().max() > 0 and not bool(((got - delta.float()).abs() <= allowed).all()):
            raise ExpertsNotUpdated(
                f"the merged model's {target} differs from the base by {got.abs().max():.3g} at most, not by the "
                f"adapter's delta (up to {delta.abs().max():.3g}): the merge did not carry the expert adapters"
            )
    return merged, {"experts_checked": [t for t, _, _ in before], "max_abs_error": worst}
