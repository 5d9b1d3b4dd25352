"""Phase 04's data: the verified SFT messages tokenized with the student's chat template, the loss on the assistant's
tokens only (the template's own ``{% generation %}`` mask), and the composition of what is trained on."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arabic_r1.jsonl import JsonlError, read_jsonl
from arabic_r1.params import Params
from arabic_r1.train_launch import TrainSetupError

log = logging.getLogger(__name__)


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
