"""Phases 04 and 05 on checkpoints that ship quantized, written in the real formats (tests/quantized_checkpoints.py):
a tiny gpt-oss with MXFP4 experts (as ``openai/gpt-oss-20b`` / ``unsloth/gpt-oss-20b``) and a tiny DeepSeek-V3 in
fine-grained FP8 (as ``deepseek-ai/DeepSeek-R1``), loaded by transformers' own quantizers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from quantized_checkpoints import write_fp8_deepseek_v3, write_mxfp4_gpt_oss

from arabic_r1.eval_models import load_causal_lm
from arabic_r1.model_loading import (
    ModelLoadError,
    check_adapter_loader,
    config_dict,
    load_plan,
    quantization_of,
    shipped_models,
    write_adapter_provenance,
)
from arabic_r1.oall_tasks import EvalSetupError
from arabic_r1.params import EvalParams
from arabic_r1.params_loading import load_params


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    root = tmp_path_factory.mktemp("quantized")
    return {
        "mxfp4": write_mxfp4_gpt_oss(root / "gpt-oss-mxfp4"),
        "fp8": write_fp8_deepseek_v3(root / "dsv3-fp8"),
    }


def _fused(expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-expert FP8 weights as transformers 5 fuses them at load: gate_up_proj [E, 2I, H] (gate rows first) and
    down_proj [E, H, I]; other weights as they are."""
    out, layers = {}, {}
    for name, w in expected.items():
        if ".mlp.experts." in name and name.endswith("_proj.weight"):
            prefix, rest = name.split(".mlp.experts.")
            idx, proj = rest.split(".")[:2]
            layers.setdefault(prefix, {}).setdefault(int(idx), {})[proj] = w
        else:
            out[name] = w
    for prefix, experts in layers.items():
        order = sorted(experts)
        out[f"{prefix}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([experts[i]["gate_proj"], experts[i]["up_proj"]]) for i in order]
        )
        out[f"{prefix}.mlp.experts.down_proj"] = torch.stack([experts[i]["down_proj"] for i in order])
    return out


def test_the_shipped_quantization_blocks_are_the_profiles_checkpoints() -> None:
    """Preflight and the loaders read these: gpt-oss ships MXFP4, DeepSeek-R1 FP8, Qwen3 is not quantized."""
    assert {"openai/gpt-oss-20b", "unsloth/gpt-oss-20b", "deepseek-ai/DeepSeek-R1"} <= set(shipped_models())
    methods = {m: (quantization_of(config_dict(m)[0]) or {}).get("quant_method") for m in shipped_models()}
    assert methods["unsloth/gpt-oss-20b"] == methods["openai/gpt-oss-20b"] == "mxfp4"
    assert methods["deepseek-ai/DeepSeek-R1"] == "fp8" and methods["Qwen/Qwen3-30B-A3B-Thinking-2507"] is None


def test_a_second_quantization_is_never_stacked_on_a_quantized_checkpoint(quantized) -> None:
    """Before: ``eval.load_in_4bit`` always added a BitsAndBytesConfig, and transformers raised deep in
    ``from_pretrained``: "ValueError: The model is quantized with Mxfp4Config but you are passing a
    BitsAndBytesConfig config" (quantizers/auto.py, merge_quantization_configs). Now the loader refuses first and
    names the key; the library still raises on the stacked config (checked, so the rule guards something real)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    folder = quantized["mxfp4"][0]
    with pytest.raises(
        ValueError, match="quantized with Mxfp4Config but you are passing a BitsAndBytesConfig"
    ):
        AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=BitsAndBytesConfig(load_in_4bit=True)
        )
    ep = EvalParams(load_in_4bit=True)
    with pytest.raises(
        EvalSetupError, match=r"eval.load_in_4bit: true would stack bitsandbytes 4-bit .* mxfp4"
    ):
        load_causal_lm(str(folder), ep, "bfloat16")
    with pytest.raises(ModelLoadError, match=r"model.load_in_4bit: true would stack .* fp8"):
        load_plan("train", quantization_of(config_dict(str(quantized["fp8"][0]))[0]), load_in_4bit=True,
                  key="model.load_in_4bit", compute_dtype="bfloat16", cuda=True)  # fmt: skip


def test_phase_05_scores_an_mxfp4_checkpoint_dequantized_on_a_cpu(quantized) -> None:
    """The loaded experts are exactly what the file's blocks and scales encode (transformers' MXFP4 dequantization
    equals ours) and the model runs."""
    folder, expected = quantized["mxfp4"]
    model = load_causal_lm(str(folder), EvalParams(), "float32")
    got = dict(model.named_parameters())
    assert expected and all(
        torch.equal(got[n].float(), w.to(got[n].dtype).float()) for n, w in expected.items()
    )
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3, 4]])).logits).all()


def test_fp8_is_never_dequantized_by_transformers_but_copied_in_bf16_by_deepseeks_rule(
    quantized, tmp_path
) -> None:
    """transformers 5.17's Fp8Dequantize takes the block from the scale grid (rows // scale rows): the tiny model's
    kv_b_proj (192 rows, 2 blocks of 128) comes out silently wrong, and DeepSeek-R1's kv_a_proj_with_mqa (576 rows, 5
    blocks) raises "not divisible by scale grid". So FP8 is refused on a CPU and for training, naming
    ``model.bf16_copy``; phase 00's copy holds the right weights."""
    from transformers import AutoModelForCausalLM

    from arabic_r1.model_loading import write_bf16_copy

    folder, expected = quantized["fp8"]
    want = _fused(expected)
    wrong = dict(AutoModelForCausalLM.from_pretrained(folder).named_parameters())  # transformers on its own
    name = "model.layers.0.self_attn.kv_b_proj.weight"
    assert (wrong[name].float() - want[name]).abs().max() > 0.01 * want[
        name
    ].abs().max()  # the library's bug, seen
    with pytest.raises(EvalSetupError, match="Set model.bf16_copy: true"):
        load_causal_lm(str(folder), EvalParams(), "float32")
    copy = write_bf16_copy(folder, tmp_path / "bf16")
    assert "quantization_config" not in json.loads((copy / "config.json").read_text())
    got = dict(load_causal_lm(str(copy), EvalParams(), "float32").named_parameters())
    for n, w in want.items():  # the copy is bf16: our fp32 reference rounded the same way
        assert torch.equal(got[n].float(), w.to(torch.bfloat16).float()), n


def test_phase_04_trains_an_mxfp4_base_loaded_dequantized(quantized, tmp_path: Path) -> None:
    """MXFP4 is not trainable in transformers (Trainer's validate_quantization_for_training refuses it on a GPU,
    where it loads quantized): the training loader asks for the checkpoint's own config class with
    ``dequantize=True`` (never a second config), and LoRA SFT runs on the result. FP8 asks for the bf16 copy."""
    from transformers.quantizers.auto import AutoHfQuantizer
    from transformers.trainer_utils import validate_quantization_for_training

    from arabic_r1.train import train_sft

    kind = "mxfp4"
    folder = quantized[kind][0]
    q = quantization_of(config_dict(str(folder))[0])
    assert not AutoHfQuantizer.from_config(q, pre_quantized=True).is_trainable  # the library's own verdict
    plan = load_plan(
        "train", q, load_in_4bit=False, key="model.load_in_4bit", compute_dtype="bfloat16", cuda=True
    )
    cfg = plan.kwargs["quantization_config"]
    assert cfg.quant_method == kind and cfg.dequantize is True and plan.kwargs["device_map"] == {"": 0}
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "ما عاصمة المغرب؟"},
                                             {"role": "assistant", "content": "<think>\nالتحليل: سؤال.\n</think>\nالرباط"}]},
                               ensure_ascii=False) + "\n", encoding="utf-8")  # fmt: skip
    (tmp_path / "params").mkdir()
    family, targets = "gpt_oss", ["attention", "routed_experts"]
    pf = tmp_path / "params" / "q.yaml"
    pf.write_text(yaml.safe_dump({"model": {"family": family, "max_seq_length": 128},
                                  "data": {"token_budget": 10}, "train": {"max_steps": 2, "precision": "fp32", "probe_texts": 2,
                                  "gradient_checkpointing": False, "merge": False, "lora": {"r": 4, "alpha": 8, "targets": targets}}}))  # fmt: skip
    result = train_sft(load_params(pf), data, str(folder), tmp_path / "out")
    assert result.summary["steps"] == 2 and all(result.coverage_adapter[f]["parameters"] > 0 for f in targets)
    validate_quantization_for_training(
        load_causal_lm(str(folder), EvalParams(), "float32")
    )  # a plain model now
    fp8 = quantization_of(config_dict(str(quantized["fp8"][0]))[0])
    with pytest.raises(ModelLoadError, match="transformers cannot train FP8.*model.bf16_copy: true"):
        load_plan("train", fp8, load_in_4bit=False, key="model.load_in_4bit", compute_dtype="bfloat16", cuda=True,
                  fp8_kernels=True)  # fmt: skip


def test_weights_are_placed_on_the_gpus_at_load() -> None:
    """Before: both loaders built the whole model in host RAM and then called ``.to("cuda")`` (61 GB of bf16 weights
    for Qwen3-30B-A3B on a host with ~32 GB). Now ``device_map`` places them while loading; under DeepSpeed / FSDP the
    engine does."""
    plan = lambda **kw: load_plan(**{"purpose": "eval", "quant": None, "load_in_4bit": False, "key": "k",  # noqa: E731
                                     "compute_dtype": "bfloat16", "cuda": True, **kw}).kwargs  # fmt: skip
    assert plan(placement="spread")["device_map"] == "auto"
    assert plan(purpose="train", placement="process", local_rank=3)["device_map"] == {"": 3}
    assert "device_map" not in plan(purpose="train", placement="engine")
    assert plan(cuda=False, placement="spread") == {}
    with pytest.raises(ModelLoadError, match="k: 4-bit NF4 .* needs a CUDA GPU"):
        plan(cuda=False, load_in_4bit=True)


def test_an_adapter_trained_on_unsloths_per_expert_layout_is_refused_before_loading(tmp_path: Path) -> None:
    """Before: phase 05 loaded the adapter's recorded base (``unsloth/gpt-oss-20b-unsloth-bnb-4bit``, one module per
    expert) with plain transformers: missing experts, then PEFT's "target modules not found"."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "unsloth/gpt-oss-20b-unsloth-bnb-4bit"})
    )
    write_adapter_provenance(adapter, {"base_requested": "unsloth/gpt-oss-20b", "backend": "unsloth", "load_in_4bit": True,
                                       "base_loaded": "unsloth/gpt-oss-20b-unsloth-bnb-4bit", "expert_layout": "per_expert"})  # fmt: skip
    with pytest.raises(EvalSetupError, match="trained through Unsloth .* Set eval.backend: unsloth"):
        load_causal_lm(str(adapter), EvalParams(), "float16")
    check_adapter_loader(adapter, "unsloth")  # the loader that can place it
    with pytest.raises(EvalSetupError, match="eval.backend: unsloth needs a CUDA GPU"):
        load_causal_lm(str(adapter), EvalParams(backend="unsloth"), "float16")


def test_phase_00_writes_the_bf16_copy_that_phases_04_and_05_load(quantized, tmp_path: Path) -> None:
    from arabic_r1.environment import run_environment
    from arabic_r1.manifest import base_model_path, start_phase

    folder, expected = quantized["fp8"]
    (tmp_path / "params").mkdir()
    pf = tmp_path / "params" / "fp8.yaml"
    pf.write_text(yaml.safe_dump({"model": {"name_or_path": str(folder), "family": "deepseek_v3", "bf16_copy": True},
                                  "data": {"token_budget": 10}}))  # fmt: skip
    params = load_params(pf)
    run_dir = tmp_path / "runs" / "fp8"
    run_environment(params, start_phase("environment", params, run_dir))
    for reader in ("moe_lora_sft", "oall_evaluation"):
        copy = Path(base_model_path(params, run_dir, reader))
        assert copy.parent.parent == run_dir and quantization_of(config_dict(str(copy))[0]) is None
    got = load_file_tensors(copy)
    assert all(torch.equal(got[n].float(), w.to(torch.bfloat16).float()) for n, w in expected.items())


def load_file_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
