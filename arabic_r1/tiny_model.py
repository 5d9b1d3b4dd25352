"""The embedded backbone: a tiny random-initialised sparse MoE and a byte-level BPE tokenizer, built offline.

Why it exists: every phase must run for real on a CPU with no hub access. A ~2M-parameter MoE of the same
family as the paper's backbone exercises the same code paths (fused 3-D experts, router, shared experts, dense
first layers, chat template with a think block) in seconds. Its scores are at chance by construction.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from arabic_r1.jsonl import write_json_atomic
from arabic_r1.params import TinyMoEParams

if TYPE_CHECKING:  # heavy imports stay inside the functions
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

PAD, EOS, IM_START = "<|endoftext|>", "<|im_end|>", "<|im_start|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SPECIAL_TOKENS = [PAD, IM_START, EOS]
# Words keep their diacritics (\p{M}) attached; GPT-2's default split would cut Arabic words at every haraka.
PRETOKENIZE_PATTERN = r" ?[\p{L}\p{M}]+| ?\p{N}+| ?[^\s\p{L}\p{M}\p{N}]+|\s+(?!\S)|\s+"
FAMILIES = ("deepseek_v3", "qwen3_moe", "mixtral", "gpt_oss")
BUILD_INFO = "arabic_r1_tiny.json"


def resource_text(name: str) -> str:
    return resources.files("arabic_r1").joinpath("resources", name).read_text(encoding="utf-8")


TOKENIZER_CORPUS, PRETRAIN_CORPUS = "tokenizer_corpus.txt", "pretrain_corpus.txt"
PRETRAIN_QUESTIONS = (
    "pretrain_questions.jsonl"  # answered multiple-choice questions (arabic_r1/smoke_drills.py)
)


def corpus_lines(name: str = PRETRAIN_CORPUS) -> list[str]:
    """One shipped text file as lines, comment lines dropped: the plain text (default) or the format lines."""
    return [ln for ln in resource_text(name).splitlines() if ln.strip() and not ln.startswith("#")]


def pretrain_texts() -> list[str]:
    """What phase 00 pre-trains on: the plain text, one sample per line, then the answered questions."""
    questions = [
        json.loads(ln)["text"] for ln in resource_text(PRETRAIN_QUESTIONS).splitlines() if ln.strip()
    ]
    return corpus_lines(PRETRAIN_CORPUS) + questions


def build_tokenizer(vocab_size: int = 4096) -> PreTrainedTokenizerBase:
    """Train a byte-level BPE on the shipped text (format lines + plain text): any UTF-8 text round-trips exactly,
    Arabic included, and the phase headings, think tags and common words are single tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(TOKENIZER_CORPUS) + corpus_lines(PRETRAIN_CORPUS), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,
        chat_template=resource_text("chat_template.jinja"),
        model_max_length=2048,
    )
    # Think markers are single tokens but not "special": decode(skip_special_tokens=True) must keep them.
    hf_tok.add_tokens([THINK_OPEN, THINK_CLOSE])
    return hf_tok


# pragma: no mutate block - `make mutation` covers the student tokenizer above; the model builders below are
# checked by what they build (tests/test_tiny_model.py: families, shapes, save/reload logits)
def build_config(family: str, shape: TinyMoEParams, tokenizer: PreTrainedTokenizerBase):
    """A transformers config of ``family`` with the tiny shape; ids wired to the tokenizer."""
    from transformers import DeepseekV3Config, GptOssConfig, MixtralConfig, Qwen3MoeConfig

    s = shape
    head_dim = s.hidden_size // s.num_heads
    ids = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        max_position_embeddings=s.max_position_embeddings,
        tie_word_embeddings=False,
        # std 0.1 instead of 0.02: with 0.02 the random LM head caps the logits so low that LoRA SFT barely moves the
        # loss (7.36 -> 7.15 in 80 steps); with 0.1 it falls clearly (7.9 -> 6.6), so the smoke run shows learning
        initializer_range=0.1,
    )
    if family == "deepseek_v3":
        # Shared experts, dense first layers and sigmoid group-limited routing: the paper's backbone shape.
        n_group = 2 if s.num_experts % 2 == 0 and s.num_experts >= 4 else 1
        return DeepseekV3Config(
            hidden_size=s.hidden_size,
            intermediate_size=s.dense_intermediate_size,
            moe_intermediate_size=s.expert_intermediate_size,
            num_hidden_layers=s.num_layers,
            num_attention_heads=s.num_heads,
            num_key_value_heads=s.num_heads,
            n_shared_experts=s.shared_experts,
            n_routed_experts=s.num_experts,
            num_experts_per_tok=s.experts_per_token,
            n_group=n_group,
            topk_group=1 if n_group > 1 and s.experts_per_token <= s.num_experts // n_group else n_group,
            first_k_dense_replace=s.dense_layers,
            routed_scaling_factor=1.0,
            kv_lora_rank=max(16, s.hidden_size // 4),
            q_lora_rank=max(16, s.hidden_size // 2),
            qk_rope_head_dim=max(8, head_dim // 2),
            qk_nope_head_dim=max(8, head_dim // 2),
            v_head_dim=head_dim,
            **ids,
        )
    if family == "qwen3_moe":
        return Qwen3MoeConfig(
            hidden_size=s.hidden_size,
            intermediate_size=s.dense_intermediate_size,
            moe_intermediate_size=s.expert_intermediate_size,
            num_hidden_layers=s.num_layers,
            num_attention_heads=s.num_heads,
            num_key_value_heads=max(1, s.num_heads // 2),
            head_dim=head_dim,
            num_experts=s.num_experts,
            num_experts_per_tok=s.experts_per_token,
            decoder_sparse_step=1,
            **ids,
        )
    # Mixtral and gpt-oss: every layer an MoE of experts_per_token of num_local_experts, grouped-query attention
    experts = dict(
        hidden_size=s.hidden_size,
        intermediate_size=s.expert_intermediate_size,
        num_hidden_layers=s.num_layers,
        num_attention_heads=s.num_heads,
        num_key_value_heads=max(1, s.num_heads // 2),
        head_dim=head_dim,
        num_local_experts=s.num_experts,
        num_experts_per_tok=s.experts_per_token,
        **ids,
    )
    if family == "mixtral":
        return MixtralConfig(**experts)
    if family == "gpt_oss":  # + a router module, fused experts with biases, attention sinks, sliding layers
        return GptOssConfig(
            sliding_window=64,
            rope_parameters={"rope_type": "default", "rope_theta": 150000.0},
            layer_types=[
                "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(s.num_layers)
            ],
            **experts,
        )
    raise ValueError(f"model.family: unknown family {family!r}; expected one of {', '.join(FAMILIES)}")


def build_tiny_moe(
    family: str = "deepseek_v3", shape: TinyMoEParams | None = None, seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Tokenizer + random MoE of ``family``; the same seed gives bit-identical weights."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    shape = shape or TinyMoEParams()
    tokenizer = build_tokenizer(shape.vocab_size)
    config = build_config(family, shape, tokenizer)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    finally:
        torch.random.set_rng_state(generator_state)  # do not disturb the caller's random stream
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=256,
        do_sample=False,
    )
    return model, tokenizer


def save_tiny_moe(
    out_dir: Path, family: str = "deepseek_v3", shape: TinyMoEParams | None = None, seed: int = 0
) -> Path:
    """Build and ``save_pretrained`` a random model + tokenizer into ``out_dir`` (reload with ``from_pretrained``)."""
    shape = shape or TinyMoEParams()
    model, tokenizer = build_tiny_moe(family, shape, seed)
    return save_backbone(
        out_dir, model, tokenizer, {"family": family, "seed": seed, "shape": shape.model_dump(mode="json")}
    )


def save_backbone(
    out_dir: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, info: dict
) -> Path:
    """Model, tokenizer and their build record (``arabic_r1_tiny.json``: family, seed, shape, size, pre-training)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    info = {**info, "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer)}
    write_json_atomic(out_dir / BUILD_INFO, info, indent=1)
    log.info(
        "tiny %s MoE (%.2fM parameters) saved to %s",
        info["family"],
        info["parameters"] / 1e6,
        Path(*out_dir.parts[-2:]),
    )  # the phase folder and the model folder, not the machine's path
    return out_dir
