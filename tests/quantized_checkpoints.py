"""Tiny checkpoints written in the real formats of pre-quantized hub models, for the loaders' tests.

- gpt-oss in MXFP4 (``openai/gpt-oss-20b``, ``unsloth/gpt-oss-20b``): routed experts stored as ``*_blocks`` (uint8,
  two E2M1 values per byte, low nibble first, 32 values per block) + ``*_scales`` (uint8, E8M0 exponent + 127) of the
  ``[experts, out, in]`` weight; ``quantization_config: {quant_method: mxfp4, modules_to_not_convert: [...]}``.
- DeepSeek-V3 in fine-grained FP8 (``deepseek-ai/DeepSeek-R1``): every linear weight of the decoder layers as
  float8_e4m3fn with a float32 ``weight_scale_inv`` per 128x128 block (weight = fp8 value x scale);
  ``quantization_config: {quant_method: fp8, fmt: e4m3, activation_scheme: dynamic, weight_block_size: [128, 128]}``.

The configs' quantization blocks are the ones those models' config.json files ship (the package keeps copies in
``arabic_r1/resources/model_configs``). Each writer returns the folder and the dequantized weights it encoded, so a
test can compare what a loader produced with what the file holds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from arabic_r1.tiny_model import save_tiny_moe

FP4_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
MXFP4_CONFIG = {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens",
                                           "lm_head"], "quant_method": "mxfp4"}  # fmt: skip
FP8_CONFIG = {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": [128, 128],
}
FP8_MAX = 448.0


def mxfp4_pack(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``w [..., rows, cols]`` -> (blocks ``[..., rows, cols/32, 16]``, scales ``[..., rows, cols/32]``, the
    dequantized weight): a power-of-two scale per 32 values so the largest fits 6, each value rounded to the grid."""
    *lead, rows, cols = w.shape
    groups = w.float().reshape(*lead, rows, cols // 32, 32)
    amax = groups.abs().amax(-1, keepdim=True).clamp(min=2.0**-100)
    exp = torch.ceil(torch.log2(amax / 6.0)).clamp(-127, 127)
    scaled = groups / torch.exp2(exp)
    idx = (scaled.abs().unsqueeze(-1) - FP4_GRID).abs().argmin(-1)
    nibble = (idx + 8 * (scaled < 0)).to(torch.uint8)
    blocks = nibble[..., 0::2] | (nibble[..., 1::2] << 4)
    value = FP4_GRID[idx] * torch.where(scaled < 0, -1.0, 1.0) * torch.exp2(exp)
    return blocks, (exp.squeeze(-1) + 127).to(torch.uint8), value.reshape(*lead, rows, cols)


def write_mxfp4_gpt_oss(folder: Path, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny gpt-oss whose experts are stored in MXFP4, as ``openai/gpt-oss-20b`` ships them."""
    src = Path(save_tiny_moe(folder.with_name(folder.name + "-bf16"), "gpt_oss", seed=seed))
    state = load_file(str(src / "model.safetensors"))
    out, expected = {}, {}
    for name, t in state.items():
        if name.endswith((".experts.gate_up_proj", ".experts.down_proj")):
            blocks, scales, value = mxfp4_pack(t.transpose(1, 2).contiguous())  # stored as [experts, out, in]
            out[f"{name}_blocks"], out[f"{name}_scales"] = blocks, scales
            expected[name] = value.transpose(1, 2).contiguous()
        else:
            out[name] = t.to(torch.bfloat16)
    return _write(folder, src, out, MXFP4_CONFIG), expected


def fp8_pack(w: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``w [out, in]`` -> (float8_e4m3fn weight, ``weight_scale_inv`` per block, the dequantized weight)."""
    rows, cols = w.shape
    br, bc = math.ceil(rows / block), math.ceil(cols / block)
    padded = torch.zeros(br * block, bc * block)
    padded[:rows, :cols] = w.float()
    tiles = padded.reshape(br, block, bc, block)
    scale = (tiles.abs().amax(dim=(1, 3)) / FP8_MAX).clamp(min=1e-12)
    q = (tiles / scale[:, None, :, None]).to(torch.float8_e4m3fn)
    value = (q.float() * scale[:, None, :, None]).reshape(br * block, bc * block)[:rows, :cols]
    return q.reshape(br * block, bc * block)[:rows, :cols].contiguous(), scale, value


def write_fp8_deepseek_v3(folder: Path, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny DeepSeek-V3 whose decoder linear weights are fine-grained FP8, as ``deepseek-ai/DeepSeek-R1`` ships."""
    src = Path(save_tiny_moe(folder.with_name(folder.name + "-bf16"), "deepseek_v3", seed=seed))
    state = load_file(str(src / "model.safetensors"))
    out, expected = {}, {}
    for name, t in state.items():
        # every linear weight of the decoder layers; norms and the router's gate stay 16-bit
        linear = (
            name.startswith("model.layers.")
            and t.dim() == 2
            and "norm" not in name
            and ".mlp.gate." not in name
        )
        if linear:
            q, scale, value = fp8_pack(t)
            out[name], out[name.removesuffix("weight") + "weight_scale_inv"] = q, scale
            expected[name] = value
        else:
            out[name] = t.to(torch.bfloat16)
    return _write(folder, src, out, FP8_CONFIG), expected


def _write(folder: Path, src: Path, tensors: dict[str, torch.Tensor], quantization: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    for f in src.iterdir():
        if f.name not in ("model.safetensors", "config.json") and f.is_file():
            (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    config |= {"quantization_config": quantization, "dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder
