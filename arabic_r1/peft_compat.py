"""Where the package works around PEFT and TRL for MoE models: the only module that touches their internals.

PEFT rewrites any target named ``gate_proj``/``up_proj``/``down_proj`` into the routed experts for model types it
converts from transformers 4 (deepseek_v3 among them), which silently leaves DeepSeek-V3's shared experts and dense
first layers without adapters (tests/test_train.py shows the loss). :func:`no_v4_moe_remap` switches that conversion
off for our own adapters, at creation, save and reload (phase 04) and when phase 05 loads an adapter to score it;
our targets already name the transformers-5 parameters. :func:`inference_config` undoes the one training-only
setting TRL leaves in a saved MoE config.
"""

from __future__ import annotations

import contextlib
from typing import Any

from arabic_r1.errors import ExplainedError


class PeftInternalsChanged(ExplainedError, RuntimeError):
    """The PEFT private table this module patches is gone or changed shape: the remapping fix needs updating."""


def _peft_conversion_table() -> dict[str, Any]:
    """PEFT's private ``model_type -> v4 conversion`` table (peft 0.21), the one private PEFT name the package
    touches; checked here so a PEFT release that moves it fails with a sentence, not deep inside training."""
    import peft

    try:
        from peft.utils import transformers_weight_conversion as twc

        table = twc._MODEL_TO_CONVERSION_PATTERN
    except (ImportError, AttributeError):
        table = None
    if not isinstance(table, dict):
        raise PeftInternalsChanged(
            f"peft {peft.__version__} has no dict peft.utils.transformers_weight_conversion._MODEL_TO_CONVERSION_PATTERN "
            "(peft 0.21 has): arabic_r1.peft_compat.no_v4_moe_remap must be updated for this release, or pin peft<0.22; "
            "without it PEFT may silently move DeepSeek-V3's shared-expert and dense-MLP adapters onto the routed experts"
        )
    return table


@contextlib.contextmanager
def no_v4_moe_remap(model: Any):
    """Disable PEFT's transformers-4 MoE target remapping for this model type while inside the block."""
    table = _peft_conversion_table()
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    saved = table.pop(model_type, None) if model_type else None
    try:
        yield
    finally:
        if saved is not None:
            table[model_type] = saved


def inference_config(model: Any) -> None:
    """TRL switches ``output_router_logits`` on for its load-balancing loss and the saved config keeps it; at
    inference that only costs time, and transformers' batched generate then crashes computing the same loss over a
    padded cache (gpt-oss, Qwen3-MoE). Saved models get the inference setting."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(cfg, "output_router_logits", False):
        cfg.output_router_logits = False
