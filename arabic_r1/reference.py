"""Numbers reported in the paper (arXiv 2604.06421), shipped as CSV resources; reports label them as such."""

from __future__ import annotations

import csv
import io
from importlib import resources
from typing import Any

# The paper's category names -> the keys params use (data.category_shares).
PAPER_CATEGORY_KEYS = {
    "Literature & critical analysis": "literature_critical_analysis",
    "STEM, mathematics & logic": "stem_math_logic",
    "Creative writing & open dialogue": "creative_writing_dialogue",
    "Consumer reviews & service feedback": "consumer_reviews_feedback",
    "Legal & cultural alignment": "legal_cultural_alignment",
    "Social & dialectal content": "social_dialectal",
}
CATEGORY_LABELS = {v: k for k, v in PAPER_CATEGORY_KEYS.items()}
PAPER_CATEGORIES = tuple(PAPER_CATEGORY_KEYS.values())  # the six data categories (data.category_shares keys)


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("arabic_r1").joinpath("resources", name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def paper_composition_m() -> dict[str, float]:
    """Supervision tokens per category in millions (sums to 372.0), keyed like ``data.category_shares``."""
    return {
        PAPER_CATEGORY_KEYS[r["category"]]: float(r["tokens_millions"])
        for r in _rows("paper_composition.csv")
        if r["category"] != "Total"
    }


def paper_table1() -> dict[str, Any]:
    """The paper's Table 1 (percent): ``{"columns": [...], "rows": {benchmark title: {column: value}}}``."""
    rows = _rows("paper_table1.csv")
    columns = [c for c in rows[0] if c != "benchmark"]
    text_cols = {"OALL category leader model"}
    return {
        "columns": columns,
        "rows": {r["benchmark"]: {c: r[c] if c in text_cols else float(r[c]) for c in columns} for r in rows},
    }
