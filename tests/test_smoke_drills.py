"""The smoke pool's multiple-choice drills: reproducible from their generator, and every trace a valid four-phase one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import read_jsonl

from arabic_r1 import smoke_drills
from arabic_r1.cot import gold_index, gold_labels, named_option, parse_trace
from arabic_r1.params import REPO_DIR

RESOURCES = REPO_DIR / "arabic_r1" / "resources"


def test_committed_drills_pack_and_questions_are_the_generators_output(tmp_path: Path) -> None:
    for sub in ("smoke_data", "teacher_cache"):
        shutil.copytree(RESOURCES / sub, tmp_path / sub)
    smoke_drills.write(tmp_path)
    for rel in (
        "smoke_data/drills.ar.jsonl",
        "smoke_data/drills.en.jsonl",
        "teacher_cache/smoke_v1.jsonl",
        "pretrain_questions.jsonl",
    ):
        assert (tmp_path / rel).read_bytes() == (RESOURCES / rel).read_bytes(), (
            f"{rel}: run python -m arabic_r1.smoke_drills"
        )


def test_every_drill_trace_is_four_phases_and_answers_with_a_label_of_its_prompt() -> None:
    rows = {
        r["id"]: r
        for lang in ("ar", "en")
        for r in read_jsonl(RESOURCES / "smoke_data" / f"drills.{lang}.jsonl")
    }
    traces = {e["prompt_id"]: e["text"] for e in read_jsonl(RESOURCES / "teacher_cache" / "smoke_v1.jsonl")}
    assert len(rows) > 600 and set(rows) <= set(traces)
    schemes = set()
    for rid, r in rows.items():
        parsed = parse_trace(traces[rid])
        assert not parsed.problems, (rid, parsed.problems)
        lang = rid.rsplit("-", 2)[-2]
        labels = gold_labels(r["answer"], lang)
        assert named_option(parsed.answer, labels) == gold_index(r["answer"]), rid
        assert any(line.lstrip(" (").startswith(r["answer"]) for line in r["prompt"].splitlines()), rid
        schemes.add("digit" if r["answer"].isdigit() else "letter")
    assert schemes == {"digit", "letter"}


def test_the_pretraining_questions_carry_answers_but_no_reasoning() -> None:
    texts = [
        json.loads(line)["text"] for line in (RESOURCES / "pretrain_questions.jsonl").read_text().splitlines()
    ]
    assert len(texts) > 500
    assert all(t.splitlines()[-1].startswith(("الإجابة: ", "Answer: ")) and "<think>" not in t for t in texts)
    drills = {
        r["prompt"]
        for lang in ("ar", "en")
        for r in read_jsonl(RESOURCES / "smoke_data" / f"drills.{lang}.jsonl")
    }
    assert len({t.rsplit("\n", 1)[0] for t in texts} & drills) < len(texts) // 10  # other renderings, mostly
