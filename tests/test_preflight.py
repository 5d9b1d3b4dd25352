"""``arabic-r1 preflight``: the shipped profiles pass on their declared hardware, and each defect found by reading the
pinned libraries against the profiles (issue 29) is reported, with its key, when planted into a copy of a profile."""

from __future__ import annotations

import re
import time

import pytest

from arabic_r1 import needs
from arabic_r1.doctor import run_doctor
from arabic_r1.params import REPO_DIR
from arabic_r1.params_loading import load_params
from arabic_r1.plan import Hardware, make_plan
from arabic_r1.preflight import PreflightFailed, preflight, require_preflight

PROFILES = ("smoke", "colab_t4", "single_gpu", "paper")


def _failures(profile: str, overrides: list[str]) -> list[str]:
    return [f.line() for f in preflight(load_params(profile, overrides)) if f.status == "fail"]


def test_every_shipped_profile_passes_on_its_hardware_within_a_minute() -> None:
    t0 = time.monotonic()
    for profile in PROFILES:
        assert _failures(profile, []) == [], profile
    assert time.monotonic() - t0 < 60


PLANTED = {
    # 1. bitsandbytes stacked on gpt-oss's MXFP4 checkpoint (transformers raises in merge_quantization_configs)
    "mxfp4 + bitsandbytes": ("colab_t4", ["eval.backend=transformers"], r"quantization: phase 05: eval.load_in_4bit: true "
                             r"would stack bitsandbytes .* mxfp4.*-> eval.load_in_4bit"),
    # 2. Unsloth's per-expert 4-bit gpt-oss adapter, scored by plain transformers + PEFT
    "per-expert adapter": ("colab_t4", ["eval.backend=transformers", "eval.load_in_4bit=false"],
                           r"adapter: .*per-expert 4-bit gpt-oss.*-> eval.backend: unsloth"),
    # 5. a thinking model's budget below its card's: truncation counted as inability
    "thinking budget": ("single_gpu", ["eval.reasoning_max_new_tokens=2048"],
                        r"reasoning: eval.reasoning_max_new_tokens 2,048 vs model card.*-> eval.reasoning_max_new_tokens: 32768"),
    # 6. PEFT 0.21: lora.ParamWrapper (routed-expert target_parameters) refuses dropout
    "expert lora dropout": ("paper", ["train.lora.dropout=0.05"],
                            r"lora: PEFT refuses the adapter: ValueError: lora.ParamWrapper does not work with lora_dropout"
                            r".*-> train.lora.dropout: 0.0"),
    # 6. DeepSeek-R1 ships FP8: not trainable, and transformers' dequantization uses the wrong block size
    "fp8 base for training": ("paper", ["model.bf16_copy=false"], r"quantization: phase 04: .*fp8.*-> model.bf16_copy"),
    # 6. the whole 671B model on one 8-GPU machine for lighteval's transformers model
    "671B log-likelihoods": ("paper", ["eval.scoring=[loglikelihood, reasoning]"],
                             r"memory: phase 05 log-likelihoods .* ~1250 GiB .*8 x 80 GiB.*-> eval.scoring"),
    # 8. the T4 profile on a smaller card
    "T4 memory": ("colab_t4", ["run.hardware=T4:12"], r"memory: training needs ~13.4 GiB per device; T4 has 12.0"),
    # LoRA asked for a family the architecture lacks
    "missing family": ("single_gpu", ["train.lora.targets=[attention, shared_experts]"], r"lora: .*shared_experts.*-> train.lora.targets"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_each_planted_defect_is_reported_with_its_key(case: str) -> None:
    profile, overrides, expected = PLANTED[case]
    failures = _failures(profile, overrides)
    assert any(re.search(expected, line) for line in failures), (case, failures)


def test_a_needed_package_that_no_set_up_installs_is_reported(monkeypatch) -> None:
    """The paper profile launches DeepSpeed ZeRO-3: with deepspeed in no extra (as before this issue), say so."""
    real = needs.extra_requirements()
    without = {k: {d: r for d, r in v.items() if d != "deepspeed"} for k, v in real.items()}
    monkeypatch.setattr(needs, "extra_requirements", lambda: without)
    assert any("packages: train.launcher: accelerate_deepspeed_zero3 needs deepspeed, which no extra" in line
               for line in _failures("paper", []))  # fmt: skip


def test_doctor_fails_a_profile_whose_packages_are_missing_here(monkeypatch) -> None:
    """Before: ``vllm: ok, not installed (optional)`` for a profile that generates with it. This machine has no vLLM
    (a GPU build); DeepSpeed is installed by the dev extra, and an out-of-range version fails too."""
    from importlib import metadata

    import arabic_r1.doctor as doctor

    rows = {r.name: r for r in run_doctor(load_params("single_gpu"))}
    assert rows["vllm"].status == "fail" and "not installed (pip install '.[vllm]')" in rows["vllm"].value
    assert "needed by eval.backend: vllm" in rows["vllm"].hint
    paper = {r.name: r for r in doctor.check_profile_packages(load_params("paper"))}
    assert paper["deepspeed"].status == "ok"
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda d: "0.9.0" if d == "deepspeed" else real(d))
    paper = {r.name: r for r in doctor.check_profile_packages(load_params("paper"))}
    assert paper["deepspeed"].status == "fail"
    assert "0.9.0 installed, the 'deepspeed' extra asks for" in paper["deepspeed"].value
    smoke = {r.name: r for r in run_doctor(load_params("smoke"))}
    assert smoke["profile packages"].status == "ok"


def test_require_preflight_stops_with_every_problem_and_the_command() -> None:
    with pytest.raises(PreflightFailed) as exc:
        require_preflight(load_params("paper", ["train.lora.dropout=0.05", "model.bf16_copy=false"]))
    text = str(exc.value)
    assert (
        "train.lora.dropout: 0.0" in text
        and "model.bf16_copy" in text
        and "arabic-r1 preflight --params paper" in text
    )


def test_the_planner_counts_the_optimizer_state_of_the_expert_lora() -> None:
    """Before: 16 bytes per LoRA parameter whatever the optimizer. colab_t4 adapts all 768 expert tensors and uses
    8-bit AdamW (2 bytes of state instead of 8)."""
    fp32 = make_plan(load_params("colab_t4", ["train.sft.optim=adamw_torch"]), Hardware("T4", 15.0))
    eight = make_plan(load_params("colab_t4"), Hardware("T4", 15.0))
    lora = eight.backbone.lora_params
    assert fp32.train_memory_gib - eight.train_memory_gib == pytest.approx(lora * 6 / 2**30, abs=2e-3)


def test_the_makefile_installs_the_gpu_set_up_extras() -> None:
    text = (REPO_DIR / "Makefile").read_text(encoding="utf-8")
    assert f"GPU_EXTRAS ?= {','.join(needs.GPU_SETUP_EXTRAS)}" in text
    assert set(needs.GPU_SETUP_EXTRAS) <= set(needs.extra_requirements())
