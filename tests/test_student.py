"""The smoke student learns the four-phase reasoning, and phase 05's audit measures it with phase 03's own code.

The thresholds are the issue's: on the six multiple-choice benchmarks' fixtures (at least 10 reasoning prompts each),
the fine-tuned student names an option after its reasoning in >= 90% of its outputs (>= 75% on each benchmark) and
writes the four phases in order with a parseable answer in >= 80%; the unadapted base does the latter in <= 10%.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import read_jsonl

from arabic_r1.audit import BAR_FOUR_PHASE, MC, Output, audit, audit_models, shortfalls
from arabic_r1.eval_generation import read_outputs
from arabic_r1.evaluate import evaluate_model
from arabic_r1.oall_tasks import Warts


def test_the_fine_tuned_student_writes_the_four_phases(smoke_run) -> None:
    _, params, _ = smoke_run
    phase = params.run_dir / "05_oall_evaluation"
    result = json.loads((phase / "student_audit.json").read_text(encoding="utf-8"))
    missed = shortfalls(result)
    assert not missed, "\n".join(missed)
    for label in (
        "base",
        "finetuned",
    ):  # the audit's parse rate is the scoring's: recount it from the details
        rows = read_jsonl(phase / f"reasoning_{label}.jsonl")
        assert result["models"][label]["overall"]["parsed"] == round(
            sum(r["failure"] is None for r in rows) / len(rows), 4
        )
    losses = [r["loss"] for r in read_jsonl(params.run_dir / "04_moe_lora_sft" / "train_log.jsonl")]
    tail = sorted(losses[-len(losses) // 10 :])
    summary = json.loads(
        (params.run_dir / "04_moe_lora_sft" / "train_summary.json").read_text(encoding="utf-8")
    )
    assert summary["final_loss_median"] == tail[len(tail) // 2] < 1.0, (
        f"the SFT loss ends at {tail[len(tail) // 2]:.2f}"
    )


def test_the_audit_is_phase_03_on_phase_03s_own_traces(smoke_run) -> None:
    """Fed the teacher traces phase 03 judged, the audit returns phase 03's verdicts, check by check."""
    _, params, _ = smoke_run
    run = params.run_dir
    records = [r for r in read_jsonl(run / "02_cot_distillation" / "traces.jsonl") if r["status"] == "ok"]
    outputs = [
        Output(r["prompt_id"], r["category"], r["raw_text"], r.get("gold"), (), r["lang"]) for r in records
    ]
    mine = {
        (row["id"], v.check): (v.passed, v.reason)
        for row in audit(outputs, params.verify)
        for v in row["verdicts"]
    }
    theirs = {(v["prompt_id"], v["check"]): (v["passed"], v["reason"])
              for v in read_jsonl(run / "03_trace_verification" / "verdicts.jsonl")}  # fmt: skip
    assert len(mine) == len(theirs) > 0
    assert mine == theirs, [k for k in theirs if mine.get(k) != theirs[k]][:5]


def test_training_and_generation_build_the_same_prompt_tokens(smoke_run) -> None:
    """A verified SFT example's tokens before its loss-bearing part are exactly the tokens phase 05 generates after."""
    from transformers import AutoTokenizer

    from arabic_r1.sft_data import assistant_mask

    _, params, _ = smoke_run
    run = params.run_dir
    train_tok = AutoTokenizer.from_pretrained(run / "04_moe_lora_sft" / "adapter")
    gen_tok = AutoTokenizer.from_pretrained(run / "04_moe_lora_sft" / "merged")
    for ex in read_jsonl(run / "03_trace_verification" / "verified.jsonl")[:20]:
        ids, mask = assistant_mask(train_tok, ex["messages"])
        prompt = gen_tok.apply_chat_template(
            ex["messages"][:1], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        assert ids[: mask.index(1)] == list(prompt["input_ids"]), ex["id"]


@pytest.mark.parametrize(
    "defect, reason",
    [
        ("template_drops_the_newline", "no opening <think>"),
        ("think_prefix_added_twice", "more than one think block"),
    ],
)
def test_a_planted_break_between_training_and_generation_is_caught(smoke_run, tmp_path: Path, monkeypatch, defect: str,
                                                                    reason: str) -> None:  # fmt: skip
    """Planted defects of the kind this audit exists for: the generation template writes the assistant header without
    the newline the training template had; or the scorer prepends a think opener the template never wrote (a think
    prefix added twice). The four-phase rate must collapse below the threshold, and the audit must say why."""
    import arabic_r1.eval_generation as eval_generation

    _, params, _ = smoke_run
    model = tmp_path / "model"
    shutil.copytree(params.run_dir / "04_moe_lora_sft" / "merged", model)
    if defect == "template_drops_the_newline":
        template = (model / "chat_template.jinja").read_text(encoding="utf-8")
        header = "{{- '<|im_start|>assistant\\n' -}}\n{%- if enable_thinking"
        assert header in template
        (model / "chat_template.jinja").write_text(
            template.replace(header, "{{- '<|im_start|>assistant' -}}\n{%- if enable_thinking"),
            encoding="utf-8",
        )
    else:
        monkeypatch.setattr(eval_generation, "think_prefix", lambda tokenizer: "<think>\n")
    ep = params.eval.model_copy(update={"benchmarks": list(MC), "scoring": ["reasoning"]})
    evaluate_model(defect, str(model), ep, tmp_path, Warts(), None)
    result = audit_models(
        {defect: read_outputs(tmp_path / f"reasoning_{defect}.jsonl")}, params.verify, "think_tags"
    )
    overall = result["models"][defect]["overall"]
    assert overall["four_phase"] < BAR_FOUR_PHASE, overall
    top = overall["top_failures"]["structure"]
    assert any(k.startswith(reason) for k in top), top
