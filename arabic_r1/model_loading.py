"""How phases 04 and 05 load a backbone: its config, the quantization its checkpoint already carries, what
``from_pretrained`` is given, and where the weights land. One set of rules, also read by ``arabic-r1 preflight``.

The rules, each read in the pinned transformers (5.17) source:

- A checkpoint that ships quantized (gpt-oss: MXFP4 experts; DeepSeek-R1: fine-grained FP8) is never given a second
  quantization config: ``merge_quantization_configs`` raises "The model is quantized with Mxfp4Config but you are
  passing a BitsAndBytesConfig config" (``quantizers/auto.py``).
- Training needs a quantizer transformers trains through (``hf_quantizer.is_trainable``; ``Trainer`` calls
  ``validate_quantization_for_training`` and refuses the others). Neither MXFP4 nor FP8 is trainable:
  - MXFP4 (gpt-oss) is loaded with ``Mxfp4Config(dequantize=True)``, the checkpoint's own config class (nothing is
    stacked); its dequantization is exact (a test compares it with the file's blocks and scales);
  - FP8 is never dequantized by transformers: ``Fp8Dequantize`` takes the block size from the scale grid
    (rows // scale rows) instead of the config's 128x128, so DeepSeek-R1's ``kv_a_proj_with_mqa`` (576 rows, 5 row
    blocks) raises "not divisible by scale grid" and a matrix that divides unevenly (192 rows, 2 blocks) is silently
    wrong. Phase 00 writes a bf16 copy instead (``model.bf16_copy``, :func:`write_bf16_copy`: DeepSeek's own
    128x128 block rule, one shard at a time), which phases 04-05 load. On a GPU with FP8 kernels (compute capability
    >= 8.9) scoring may load FP8 as it ships; anywhere else (a CPU, a T4 or A100) transformers would dequantize it.
- On a GPU the weights are placed at load (``device_map``), never staged whole in host RAM and then moved: one
  process uses its own GPU, scoring spreads a model over the visible GPUs (``"auto"``); under DeepSpeed ZeRO-3 / FSDP
  the engine places them (no ``device_map``).
- A LoRA adapter records how its base was loaded (:data:`ADAPTER_PROVENANCE`): Unsloth loads ``unsloth/gpt-oss-20b``
  in 4-bit as ``unsloth/gpt-oss-20b-unsloth-bnb-4bit``, whose experts are stored one module per expert, a layout
  plain transformers cannot load (its ``GptOssExperts`` holds fused 3-D parameters); phase 05 checks it first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from arabic_r1.errors import ExplainedError

SHIPPED_CONFIGS = "model_configs"
ADAPTER_PROVENANCE = "arabic_r1_adapter.json"
Purpose = Literal["train", "eval"]
Placement = Literal["process", "spread", "engine"]


class ModelLoadError(ExplainedError, ValueError):
    """A backbone that cannot be loaded as the params ask; the message names the key to change."""


# ------------------------------------------------------------------------------------------------ config
def shipped_config_path(name: str) -> Path | None:
    """The package's copy of a profile backbone's config.json (``resources/model_configs/<hub id>``), if any."""
    path = Path(str(resources.files("arabic_r1").joinpath("resources", SHIPPED_CONFIGS, name, "config.json")))
    return path if "/" in name and ".." not in name and path.is_file() else None


def shipped_models() -> list[str]:
    root = Path(str(resources.files("arabic_r1").joinpath("resources", SHIPPED_CONFIGS)))
    return sorted(str(p.parent.relative_to(root)) for p in root.glob("*/*/config.json"))


def config_dict(name_or_path: str, revision: str | None = None) -> tuple[dict[str, Any], str]:
    """(config.json as a dict, where it came from) of a local folder, the hub cache, the shipped copy, or the hub."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        cfg = folder / "config.json"
        if not cfg.is_file():
            raise ModelLoadError(f"{folder}: no config.json; is this a model folder?")
        return json.loads(cfg.read_text(encoding="utf-8")), "config.json"
    from transformers.utils import cached_file

    shipped = shipped_config_path(name_or_path)
    try:  # the hub cache first (a pinned revision may differ from the shipped copy), the hub itself last
        found = cached_file(
            name_or_path,
            "config.json",
            revision=revision,
            local_files_only=shipped is not None,
            _raise_exceptions_for_missing_entries=False,
        )
    except OSError:
        found = None
    if found:
        return json.loads(Path(found).read_text(encoding="utf-8")), "config.json (hub cache)"
    if shipped is not None:
        return json.loads(shipped.read_text(encoding="utf-8")), "shipped config.json (offline copy)"
    raise ModelLoadError(
        f"model.name_or_path {name_or_path!r}: no config.json reachable (offline?) and no shipped copy (the package "
        f"ships {', '.join(shipped_models())}); download it once or point to a local folder"
    )


def hf_config(cfg: dict[str, Any]) -> Any:
    """A transformers config object from a config dict (its class chosen by ``model_type``)."""
    from transformers import CONFIG_MAPPING

    return CONFIG_MAPPING[cfg["model_type"]].from_dict(cfg)


def quantization_of(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The quantization a checkpoint ships with (its config.json's ``quantization_config``), or None."""
    q = cfg.get("quantization_config") or (cfg.get("text_config") or {}).get("quantization_config")
    return dict(q) if q else None


def quant_method(q: dict[str, Any]) -> str:
    if q.get("load_in_4bit") or q.get("load_in_8bit"):
        return "bitsandbytes"
    return str(q.get("quant_method", "unknown"))


# ------------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class LoadPlan:
    """What ``from_pretrained`` gets besides the path and dtype, and one line saying why (logged, kept in manifests)."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


DEQUANTIZED_AT_LOAD = ("mxfp4",)  # exact in transformers 5.17 (a test checks it against the file)
NEEDS_BF16_COPY = ("fp8",)  # transformers' dequantization uses the wrong block size (module docstring)
FP8_KERNEL_GPUS = (
    "H100",
    "H200",
    "H20",
    "B200",
    "B100",
    "GB200",
    "L4",
    "L40",
    "RTX 4090",
)  # compute capability >= 8.9


def _trainable(q: dict[str, Any]) -> bool:
    from transformers.quantizers.auto import AutoHfQuantizer

    return bool(AutoHfQuantizer.from_config(q, pre_quantized=True).is_trainable)


def fp8_kernels_here() -> bool:
    """This machine's GPU runs FP8 weights as they ship (compute capability >= 8.9)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


def load_plan(
    purpose: Purpose,
    quant: dict[str, Any] | None,
    *,
    load_in_4bit: bool,
    key: str,
    compute_dtype: str,
    cuda: bool,
    fp8_kernels: bool | None = None,
    placement: Placement = "process",
    local_rank: int = 0,
) -> LoadPlan:
    """The rules of the module docstring for one load. ``key`` is the params key that asks for 4-bit (named in errors);
    ``fp8_kernels``: the GPU runs FP8 as it ships (None: ask this machine's); ``placement``: ``process`` (this
    process's GPU), ``spread`` (all visible GPUs), ``engine`` (DeepSpeed/FSDP)."""
    import torch
    from transformers import BitsAndBytesConfig
    from transformers.quantizers.auto import AutoQuantizationConfig

    kwargs: dict[str, Any] = {}
    notes: list[str] = []
    if quant is not None and quant_method(quant) != "bitsandbytes":
        method = quant_method(quant)
        if load_in_4bit:
            raise ModelLoadError(
                f"{key}: true would stack bitsandbytes 4-bit on a checkpoint that already ships {method} weights "
                f"(transformers refuses: 'The model is quantized with ... but you are passing a BitsAndBytesConfig'); "
                f"set {key}: false" + (" (its MXFP4 experts are already ~4-bit)" if method == "mxfp4" else "")
            )
        native = cuda and (fp8_kernels_here() if fp8_kernels is None else fp8_kernels)
        if method in NEEDS_BF16_COPY and (purpose == "train" or not native):
            why = "transformers cannot train FP8" if purpose == "train" else "this machine has no FP8 kernels"
            raise ModelLoadError(
                f"the checkpoint ships {method} weights and {why}; transformers' own dequantization uses a wrong block "
                "size for DeepSeek's 128x128 FP8 (ValueError on kv_a_proj_with_mqa, silently wrong weights elsewhere). "
                "Set model.bf16_copy: true: phase 00 writes a bf16 copy (DeepSeek's block rule) that phases 04-05 load"
            )
        if purpose == "train" and not _trainable(quant):
            if method not in DEQUANTIZED_AT_LOAD:
                raise ModelLoadError(
                    f"the checkpoint ships {method} weights, which transformers cannot train through; use a 16-bit "
                    "copy of the model (model.name_or_path)"
                )
            cfg = AutoQuantizationConfig.from_dict(quant)
            cfg.dequantize = True
            kwargs["quantization_config"] = cfg
            notes.append(
                f"{method} checkpoint loaded dequantized for training (transformers cannot train {method})"
            )
        elif not cuda:
            notes.append(f"{method} checkpoint dequantized by transformers on this CPU")
        else:
            notes.append(f"{method} checkpoint loaded as it ships")
    elif load_in_4bit:
        if not cuda:
            raise ModelLoadError(
                f"{key}: 4-bit NF4 (bitsandbytes) needs a CUDA GPU; set {key}: false on this machine"
            )
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=getattr(torch, compute_dtype)
        )
        notes.append("4-bit NF4 (bitsandbytes)")
    if cuda and placement != "engine":
        kwargs["device_map"] = "auto" if placement == "spread" else {"": local_rank}
        notes.append(
            f"weights placed at load on {'the visible GPUs' if placement == 'spread' else f'cuda:{local_rank}'}"
        )
    return LoadPlan(kwargs, tuple(notes))


# --------------------------------------------------------------------------------------------- bf16 copy
def fp8_dequantize(weight: Any, scale_inv: Any, block: tuple[int, int]) -> Any:
    """DeepSeek's rule (``fp8_cast_bf16.py``): block (i, j) of ``block`` rows x cols is multiplied by
    ``scale_inv[i, j]``; the last blocks of a matrix whose size is not a multiple are partial. Result in bf16."""
    import torch

    rows, cols = weight.shape
    scale = scale_inv.float().repeat_interleave(block[0], 0)[:rows].repeat_interleave(block[1], 1)[:, :cols]
    return (weight.float() * scale).to(torch.bfloat16)


def write_bf16_copy(src: Path, dst: Path, progress: Any = None) -> Path:
    """A bf16 copy of a fine-grained FP8 checkpoint folder, one safetensors shard at a time (host memory: one shard):
    every ``X.weight`` with an ``X.weight_scale_inv`` is dequantized and the scale dropped; the index, config (without
    its ``quantization_config``), tokenizer and other files follow. Returns ``dst``."""
    import shutil

    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    q = quantization_of(cfg)
    if q is None or quant_method(q) not in NEEDS_BF16_COPY:
        raise ModelLoadError(
            f"{src}: model.bf16_copy is for FP8 checkpoints; this one ships {q and quant_method(q)}"
        )
    block = tuple(q.get("weight_block_size") or (128, 128))
    dst.mkdir(parents=True, exist_ok=True)
    shards = sorted(src.glob("*.safetensors"))
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards):
        tensors = load_file(str(shard))
        out = {}
        for name, t in tensors.items():
            if name.endswith(".weight_scale_inv"):
                continue
            scale = tensors.get(name + "_scale_inv") if name.endswith(".weight") else None
            out[name] = fp8_dequantize(t, scale, block) if scale is not None else t
        save_file(out, str(dst / shard.name), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(out, shard.name)
        del tensors, out
        if progress is not None:
            progress(i + 1, len(shards))
    if (src / "model.safetensors.index.json").is_file():
        index = json.loads((src / "model.safetensors.index.json").read_text(encoding="utf-8"))
        (dst / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": index.get("metadata", {}), "weight_map": weight_map}, indent=2)
        )
    for f in src.iterdir():
        if (
            f.is_file()
            and not f.name.endswith(".safetensors")
            and f.name not in ("config.json", "model.safetensors.index.json")
        ):
            shutil.copy2(f, dst / f.name)
    cfg.pop("quantization_config", None)
    cfg["torch_dtype"] = cfg["dtype"] = "bfloat16"
    (dst / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return dst


# ---------------------------------------------------------------------------------------------- adapters
def write_adapter_provenance(adapter_dir: Path, record: dict[str, Any]) -> None:
    """How the adapter's base was loaded in phase 04 (requested id, loaded id, backend, 4-bit, expert layout)."""
    from arabic_r1.jsonl import write_json_atomic

    write_json_atomic(Path(adapter_dir) / ADAPTER_PROVENANCE, record, indent=1)


def read_adapter_provenance(adapter_dir: Path) -> dict[str, Any] | None:
    path = Path(adapter_dir) / ADAPTER_PROVENANCE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_adapter_loader(adapter_dir: Path, loader: str) -> None:
    """Refuse, before any weight is read, an adapter that ``loader`` cannot put back on its base: one trained on
    Unsloth's per-expert layout needs Unsloth to load its base the same way."""
    record = read_adapter_provenance(adapter_dir)
    if record is None or loader == "unsloth":
        return
    if record.get("expert_layout") == "per_expert" and record.get("backend") == "unsloth":
        raise ModelLoadError(
            f"{adapter_dir}: this adapter was trained through Unsloth on {record.get('base_loaded')!r}, whose experts "
            "are stored one module per expert; plain transformers + PEFT build fused experts and cannot place it "
            "(missing experts, then 'target modules not found'). Set eval.backend: unsloth (a CUDA GPU: the base is "
            "loaded as phase 04 loaded it), or train with train.merge: true and evaluate the merged model"
        )
