"""Expert-routing statistics: how many tokens each expert of each MoE layer receives, for Arabic and English.

Counts come from a forward pre-hook on every ``mlp.experts`` module, which receives the router's chosen
``top_k_index`` whatever the family's routing rule (softmax top-k, DeepSeek-V3's sigmoid group-limited top-k):
exact by construction. :func:`recount_by_router` recomputes the same counts from the routers themselves, as a check.
"""

from __future__ import annotations

import re
from typing import Any

_EXPERTS = re.compile(r"layers\.(\d+)\.mlp\.experts$")
_MOE_BLOCK = re.compile(r"layers\.(\d+)\.mlp$")


def _modules(model: Any, pattern: re.Pattern) -> dict[int, Any]:
    return {int(m.group(1)): mod for name, mod in model.named_modules() if (m := pattern.search(name))}


def _num_experts(model: Any) -> int:
    c = model.config
    return int(getattr(c, "n_routed_experts", None) or getattr(c, "num_experts", None) or c.num_local_experts)


def _run(model: Any, tokenizer: Any, texts: list[str]) -> None:
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        for text in texts:  # one at a time: no padding tokens in the counts
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
            if ids.shape[1]:
                model(input_ids=ids)


def routing_counts(model: Any, tokenizer: Any, texts: list[str]) -> dict[int, list[int]]:
    """{MoE layer index: tokens routed to each expert} over ``texts`` (each token counted once per chosen expert)."""
    import torch

    n = _num_experts(model)
    counts: dict[int, torch.Tensor] = {}
    hooks = []
    for layer, mod in _modules(model, _EXPERTS).items():
        counts[layer] = torch.zeros(n, dtype=torch.long)

        def hook(_mod, args, layer=layer):
            counts[layer] += torch.bincount(args[1].reshape(-1).cpu(), minlength=n)[:n]

        hooks.append(mod.register_forward_pre_hook(hook))
    try:
        _run(model, tokenizer, texts)
    finally:
        for h in hooks:
            h.remove()
    return {layer: c.tolist() for layer, c in sorted(counts.items())}


def recount_by_router(model: Any, tokenizer: Any, texts: list[str]) -> dict[int, list[int]]:
    """The same counts, recomputed by calling each layer's router on the MoE block's input (brute force)."""
    import torch

    n = _num_experts(model)
    counts: dict[int, torch.Tensor] = {}
    hooks = []
    for layer, block in _modules(model, _MOE_BLOCK).items():
        if not hasattr(block, "experts"):
            continue  # a dense layer
        counts[layer] = torch.zeros(n, dtype=torch.long)

        def hook(mod, args, layer=layer):
            hidden = args[0].reshape(-1, args[0].shape[-1])
            router = mod.gate if hasattr(mod, "gate") else mod.router  # gpt-oss names it router
            _, _, indices = router(hidden)
            counts[layer] += torch.bincount(indices.reshape(-1).cpu(), minlength=n)[:n]

        hooks.append(block.register_forward_pre_hook(hook))
    try:
        _run(model, tokenizer, texts)
    finally:
        for h in hooks:
            h.remove()
    return {layer: c.tolist() for layer, c in sorted(counts.items())}


def probe_texts(n: int) -> dict[str, list[str]]:
    """A fixed probe set: the first ``n`` Arabic and English lines of the package's corpus."""
    from arabic_r1.arabic_text import detect_language
    from arabic_r1.tiny_model import corpus_lines

    out: dict[str, list[str]] = {"ar": [], "en": []}
    for line in corpus_lines():
        lang = detect_language(line).lang
        if lang in out and len(out[lang]) < n:
            out[lang].append(line)
    return out


def routing_stats(model: Any, tokenizer: Any, probes: dict[str, list[str]]) -> dict[str, Any]:
    """Per language: counts per layer and expert, and each layer's load share per expert."""
    out = {}
    for lang, texts in probes.items():
        counts = routing_counts(model, tokenizer, texts)
        out[lang] = {
            "texts": len(texts),
            "counts": {str(k): v for k, v in counts.items()},
            "share": {str(k): [round(x / max(sum(v), 1), 4) for x in v] for k, v in counts.items()},
        }
    return out
