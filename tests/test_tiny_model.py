from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import read_jsonl
from transformers import AutoModelForCausalLM, AutoTokenizer

from arabic_r1.params import TinyMoEParams
from arabic_r1.tiny_model import THINK_CLOSE, THINK_OPEN, build_tiny_moe, build_tokenizer, save_tiny_moe


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return save_tiny_moe(tmp_path_factory.mktemp("tiny") / "m", "deepseek_v3", seed=7)


def test_tokenizer_round_trips_real_corpora_exactly(tokenizer, shared_data: Path) -> None:
    texts = [r["text"] for r in read_jsonl(shared_data / "corpus" / "ar_pud_sentences.jsonl")]
    texts += [r["context"] for r in read_jsonl(shared_data / "corpus" / "ar_arcd_paragraphs.jsonl")]
    texts += [r["text"] for r in read_jsonl(shared_data / "corpus" / "en_pud_sentences.jsonl")]
    assert len(texts) == 1350
    bad = [t for t in texts if tokenizer.decode(tokenizer(t)["input_ids"]) != t]
    assert not bad, f"{len(bad)} texts did not round-trip, first: {bad[0][:80]!r}"


def test_tokenizer_round_trips_diacritics_and_unusual_characters(tokenizer) -> None:
    for text in [
        "كَتَبَ الطَّالِبُ الدَّرْسَ",
        "ـــالعربيةـــ",
        "٠١٢٣٤٥٦٧٨٩ ٪ ؟ ؛ ،",
        "ﷺ ﴿آية﴾",
        "emoji 🙂 and \t tabs\n\nnewlines",
        "  lead/trail  ",
    ]:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_think_markers_are_single_non_special_tokens(tokenizer) -> None:
    ids = tokenizer(f"{THINK_OPEN}x{THINK_CLOSE}")["input_ids"]
    toks = tokenizer.convert_ids_to_tokens(ids)
    assert toks[0] == THINK_OPEN and toks[-1] == THINK_CLOSE
    assert THINK_OPEN in tokenizer.decode(ids, skip_special_tokens=True)


def test_the_student_tokenizer_as_built() -> None:
    """Built here, not taken from the module's fixture (mutmut credits a shared fixture's calls to the first test
    that builds it, so the tests after it would not run against a broken builder): the token ids the model config
    is wired to, the 2048-token truncation, think markers added as tokens of their own, a vocalised Arabic word kept
    whole by the pre-tokenizer (GPT-2's own split would cut it at every haraka), no space clean-up on decode, and
    the vocabulary the shipped corpus gives (2,742 BPE tokens at min_frequency 2, under the 4,096 allowed)."""
    from arabic_r1.tiny_model import EOS, PAD, SPECIAL_TOKENS

    tok = build_tokenizer()
    assert tok.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2]
    assert (tok.eos_token, tok.pad_token) == (EOS, PAD)
    assert len(tok("ا " * 3000, truncation=True)["input_ids"]) == tok.model_max_length == 2048
    assert tok.convert_tokens_to_ids([THINK_OPEN, THINK_CLOSE]) == [2742, 2743] and len(tok) == 2744
    pieces = tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(" كِتَابٌ جميل")
    assert [span for _, span in pieces] == [(0, 8), (8, 13)]
    text = "قال : نعم , لا . don 't"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_assistant_mask_covers_only_assistant_tokens(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "أنت مساعد دقيق."},
        {"role": "user", "content": "ما عاصمة مصر؟"},
        {"role": "assistant", "content": f"{THINK_OPEN}\nالتحليل: سؤال جغرافي.\n{THINK_CLOSE}\nالقاهرة"},
        {"role": "user", "content": "And of Jordan?"},
        {"role": "assistant", "content": "Amman"},
    ]
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask) and 0 < sum(mask) < len(ids)
    masked = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert masked == f"{THINK_OPEN}\nالتحليل: سؤال جغرافي.\n{THINK_CLOSE}\nالقاهرة<|im_end|>Amman<|im_end|>"
    unmasked = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if not m])
    for text in ("أنت مساعد دقيق.", "ما عاصمة مصر؟", "And of Jordan?", "<|im_start|>assistant"):
        assert text in unmasked
    assert "القاهرة" not in unmasked and "Amman" not in unmasked


def test_generation_prompt_and_disabled_thinking(tokenizer) -> None:
    msgs = [{"role": "user", "content": "سؤال"}]
    assert tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n"
    )
    no_think = tokenizer.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert no_think.endswith(f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n")


def test_save_reload_gives_identical_logits(saved: Path) -> None:
    model, tok = build_tiny_moe("deepseek_v3", seed=7)
    reloaded = AutoModelForCausalLM.from_pretrained(saved)
    tok2 = AutoTokenizer.from_pretrained(saved)
    text = "التحليل: الخيار (ب) صحيح. Analysis: B."
    assert tok2(text)["input_ids"] == tok(text)["input_ids"]
    x = tok2(text, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**x).logits, reloaded(**x).logits)


def test_seed_determinism_and_sensitivity() -> None:
    a, _ = build_tiny_moe("qwen3_moe", seed=1)
    b, _ = build_tiny_moe("qwen3_moe", seed=1)
    c, _ = build_tiny_moe("qwen3_moe", seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("family", ["deepseek_v3", "qwen3_moe", "mixtral"])
def test_families_are_sparse_moe_with_fused_experts(family: str) -> None:
    shape = TinyMoEParams()
    model, tok = build_tiny_moe(family, shape, seed=0)
    names = dict(model.named_parameters())
    experts = [n for n in names if n.endswith("mlp.experts.gate_up_proj")]
    assert experts and names[experts[0]].shape[0] == shape.num_experts  # fused 3-D expert tensor
    if family == "deepseek_v3":
        assert any("shared_experts" in n for n in names)
        assert "model.layers.0.mlp.gate_proj.weight" in names  # dense first layer
        assert len(experts) == shape.num_layers - shape.dense_layers
    else:
        assert len(experts) == shape.num_layers
    assert model.config.vocab_size == len(tok)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    x = tok("مرحبا hello", return_tensors="pt")
    out = model(**x, labels=x["input_ids"])
    assert torch.isfinite(out.loss)
    gen = model.generate(**x, max_new_tokens=4)
    assert gen.shape[1] == x["input_ids"].shape[1] + 4 or tok.eos_token_id in gen[0]


def test_unknown_family_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown family 'llama'"):
        build_tiny_moe("llama")


def test_pretrain_texts_are_the_plain_text_then_the_answered_questions() -> None:
    import json

    from arabic_r1.tiny_model import PRETRAIN_QUESTIONS, corpus_lines, pretrain_texts, resource_text

    questions = [
        json.loads(ln)["text"] for ln in resource_text(PRETRAIN_QUESTIONS).splitlines() if ln.strip()
    ]
    texts = pretrain_texts()
    assert len(questions) >= 10 and texts == corpus_lines() + questions
    assert corpus_lines() and all(t.strip() and not t.startswith("#") for t in corpus_lines())
