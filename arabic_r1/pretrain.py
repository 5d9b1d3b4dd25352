"""Phase 00: a short causal-LM pre-training of the embedded backbone on the package's plain text, cached by content.

Why: LoRA on a *random* backbone barely learns (80 steps left the smoke loss at ~6.2; 600 steps at ~5.0, with every
output a loop): the adapters have to work around a random embedding, attention and LM head. The paper adapts
DeepSeek-R1, a model that already predicts language. A few hundred full-parameter steps on
``resources/pretrain_corpus.txt`` give the tiny MoE that starting point: it predicts Arabic and English text, and it
has never seen a four-phase trace or a benchmark item, so whatever format the fine-tuned student writes, LoRA taught.
The text also holds answered multiple-choice questions (``resources/pretrain_questions.jsonl``, no reasoning): measured
here, without them the student answered digit-labelled questions (1-4, 0-3) with a letter 9 times in 10, with them it
names one of the question's own labels in 98% of its answers.

The result is cached in ``model.tiny.pretrain.cache_dir`` under a key made of everything it depends on (family, shape,
seed, the pre-training params, the shipped corpus, tokenizer and chat-template texts, the source of this module and
of ``tiny_model``, and the torch/transformers/tokenizers versions), so a re-run, a sweep or a test suite pays once.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from arabic_r1.digests import json_digest
from arabic_r1.params import TinyMoEParams
from arabic_r1.progress import Progress
from arabic_r1.tiny_model import (
    BUILD_INFO,
    PRETRAIN_CORPUS,
    PRETRAIN_QUESTIONS,
    TOKENIZER_CORPUS,
    build_tiny_moe,
    pretrain_texts,
    resource_text,
    save_backbone,
)

log = logging.getLogger(__name__)


def cache_key(family: str, shape: TinyMoEParams, seed: int) -> str:
    """What a pre-trained backbone depends on, as one digest (the cache folder's name)."""
    import arabic_r1.tiny_model as tiny_model

    code = "".join(Path(m.__file__).read_text(encoding="utf-8") for m in (tiny_model, _this_module()))
    return json_digest(
        {
            "family": family,
            "seed": seed,
            "shape": shape.model_dump(mode="json", exclude={"pretrain": {"cache_dir"}}),
            "texts": [
                resource_text(n)
                for n in (TOKENIZER_CORPUS, PRETRAIN_CORPUS, PRETRAIN_QUESTIONS, "chat_template.jinja")
            ],
            "code": code,
            "versions": {p: metadata.version(p) for p in ("torch", "transformers", "tokenizers")},
        }
    )


def _this_module():
    import sys

    return sys.modules[__name__]


def token_stream(tokenizer: Any, lines: list[str]) -> list[int]:
    """Every line tokenised and closed with the end-of-text token, one stream (documents packed back to back)."""
    ids: list[int] = []
    for line in lines:
        ids += tokenizer(line, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids


def pretrain(
    model: Any,
    tokenizer: Any,
    lines: list[str],
    steps: int,
    learning_rate: float,
    batch_size: int,
    seq_length: int,
    seed: int,
) -> dict[str, Any]:
    """Full-parameter next-token training on random windows of the packed text (AdamW, warmup + cosine)."""
    import torch

    data = torch.tensor(token_stream(tokenizer, lines))
    seq_length = min(seq_length, len(data) - 1)
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, steps // 20)
    bar = Progress(steps, "pre-training step", logger=log)
    losses, t0 = [], time.monotonic()
    model.train()
    for step in range(steps):
        scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = learning_rate * scale
        starts = torch.randint(0, len(data) - seq_length, (batch_size,), generator=generator)
        batch = torch.stack([data[s : s + seq_length] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        bar.update(loss=round(loss.item(), 3))
    bar.close()
    model.eval()
    return {
        "steps": steps,
        "corpus_tokens": len(data),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "losses": losses,
        "seconds": round(time.monotonic() - t0, 1),
    }


def materialise_backbone(out_dir: Path, family: str, shape: TinyMoEParams, seed: int) -> Path:
    """The embedded backbone in ``out_dir``: built, pre-trained when ``shape.pretrain.steps`` > 0 (or copied from the
    cache when this exact backbone was pre-trained before), saved with ``save_pretrained``."""
    import torch

    pp = shape.pretrain
    key = cache_key(family, shape, seed) if pp.steps else None
    cached = pp.cache_dir / key if key else None
    out_dir = Path(out_dir)
    if cached is not None and (cached / BUILD_INFO).is_file():
        log.info(
            "pre-trained backbone %s from the cache (model.tiny.pretrain.cache_dir)", key
        )  # no machine path
        shutil.copytree(cached, out_dir, dirs_exist_ok=True)
        return out_dir
    model, tokenizer = build_tiny_moe(family, shape, seed)
    info: dict[str, Any] = {"family": family, "seed": seed, "shape": shape.model_dump(mode="json")}
    if pp.steps:
        state = torch.random.get_rng_state()
        try:
            info["pretrain"] = {
                "key": key,
                "corpus": [PRETRAIN_CORPUS, PRETRAIN_QUESTIONS],
                **pretrain(
                    model,
                    tokenizer,
                    pretrain_texts(),
                    pp.steps,
                    pp.learning_rate,
                    pp.batch_size,
                    pp.seq_length,
                    seed,
                ),
            }
        finally:
            torch.random.set_rng_state(state)
    save_backbone(out_dir, model, tokenizer, info)
    if cached is not None:  # written aside, then renamed: a concurrent run never sees half a backbone
        tmp = pp.cache_dir / f".{key}.{os.getpid()}.tmp"
        shutil.copytree(out_dir, tmp, dirs_exist_ok=True)
        try:
            os.replace(tmp, cached)
        except OSError:  # another run stored the same backbone first
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
