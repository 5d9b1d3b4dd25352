"""The resource planner: parameter counts on known models, memory/token/cost arithmetic, refusal, --hardware."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arabic_r1.cli import main
from arabic_r1.params_loading import load_params
from arabic_r1.plan import (
    ASSUMED_KEEP_RATE,
    ASSUMED_PROMPT_TOKENS,
    ASSUMED_TEMPLATE_TOKENS,
    ASSUMED_TRACE_TOKENS,
    GIB,
    Hardware,
    PlanError,
    make_plan,
    parse_hardware,
    pool_items,
    size_backbone,
)

PER_FAMILY = "train.lora.per_family={routed_experts: {r: 4, alpha: 8}, attention: {r: 2, alpha: 6}}"


@pytest.mark.parametrize("overrides", [[], [PER_FAMILY]], ids=["one rank", "per-family ranks"])
def test_embedded_backbone_counts_equal_the_built_model_and_peft(overrides: list[str]) -> None:
    """Exact: the meta-device count equals the real tiny model; LoRA equals PEFT's own trainable count, also with a
    rank per family; each family's adapters carry its rank and its scale alpha/r."""
    from peft import get_peft_model

    from arabic_r1.moe_lora import CoverageError, check_family_ranks, expert_patterns_quiet, lora_config
    from arabic_r1.params import FamilyLora
    from arabic_r1.peft_compat import no_v4_moe_remap
    from arabic_r1.tiny_model import build_tiny_moe

    params = load_params("smoke", overrides)
    b = size_backbone(params)
    model, _ = build_tiny_moe(params.model.family, params.model.tiny)
    assert b.total_params == sum(p.numel() for p in model.parameters())
    with no_v4_moe_remap(model), expert_patterns_quiet():
        peft_model = get_peft_model(model, lora_config(model, params.train.lora))
    assert b.lora_params == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    lora = params.train.lora
    assert check_family_ranks(peft_model, lora) == lora.scales()
    other = lora.model_copy(
        update={"per_family": {"attention": FamilyLora(r=lora.rank_of("attention") + 1, alpha=3)}}
    )
    with pytest.raises(CoverageError, match=r"attention\): r=\d+"):  # a rank PEFT did not apply is caught
        check_family_ranks(peft_model, other)
    experts = {n: p for n, p in peft_model.named_parameters() if ".mlp.experts." in n and "lora_A" in n}
    # fused expert weights: one lora_A of r x n_experts rows (PEFT's ParamWrapper), saved as such in the adapter
    n_experts = params.model.tiny.num_experts
    assert experts and {p.shape[0] for p in experts.values()} == {lora.rank_of("routed_experts") * n_experts}


@pytest.mark.parametrize(
    "profile, total_b, active_b, published",
    [
        ("paper", 671.0, 37.0, "DeepSeek-R1 model card: 671B total, 37B activated"),
        ("colab_t4", 20.9, 3.6, "gpt-oss-20b model card: 21B total, 3.6B active"),
        ("single_gpu", 30.5, 3.3, "Qwen3-30B-A3B model card: 30.5B total, 3.3B activated"),
    ],
)
def test_backbones_match_their_model_cards(profile: str, total_b: float, active_b: float, published: str):
    b = size_backbone(load_params(profile))
    assert b.total_params / 1e9 == pytest.approx(total_b, rel=0.01), published
    # active excludes the input-embedding lookup (not compute); cards differ on counting embeddings
    assert b.active_params / 1e9 == pytest.approx(active_b, rel=0.1), published


def test_memory_formula_on_the_t4_profile_agrees_with_unsloths_14gb():
    """Unsloth publishes "gpt-oss-20b LoRA training fits on a 14GB VRAM" (14 GB = 13.04 GiB), measured with the experts
    frozen; the planner must agree on that case and count the profile's own choice (expert LoRA, 8-bit AdamW)."""
    p = load_params("colab_t4")
    plan = make_plan(p, Hardware("T4", 15.0))
    b = plan.backbone
    assert plan.memory_gib["frozen weights"] == pytest.approx(b.total_params * 0.5625 / GIB, abs=1e-3)
    assert plan.memory_gib["LoRA weights+grads+adamw_8bit"] == pytest.approx(
        b.lora_params * (8 + 2) / GIB, abs=1e-3
    )
    bsh = 1 * 1024 * b.hidden * 2
    assert plan.memory_gib["activations"] == pytest.approx((bsh * b.layers + 17 * bsh) / GIB, abs=1e-3)
    assert plan.memory_gib["logits"] == pytest.approx(
        1024 * b.vocab * 2 / GIB, abs=1e-3
    )  # Unsloth's chunked CE
    frozen = make_plan(load_params("colab_t4", ["train.lora.targets=[attention]"]), Hardware("T4", 15.0))
    assert frozen.train_memory_gib == pytest.approx(14e9 / GIB, rel=0.05)
    assert frozen.train_memory_gib < plan.train_memory_gib < 15.0 * 0.95
    assert not plan.problems


def test_zero3_shards_weights_and_lora_states_over_every_gpu():
    p = load_params("paper")
    one = make_plan(p, Hardware("H100", 80.0, 8))
    many = make_plan(p, Hardware("H100", 80.0, 64))
    assert one.memory_gib["frozen weights"] == pytest.approx(8 * many.memory_gib["frozen weights"], rel=1e-3)
    assert one.memory_gib["activations"] == many.memory_gib["activations"]  # per GPU, not sharded
    assert many.memory_gib["frozen weights"] == pytest.approx(
        many.backbone.total_params * 2 / 64 / GIB, abs=1e-2
    )


def test_token_and_cost_arithmetic():
    p = load_params("paper")
    plan = make_plan(p, Hardware("H100", 80.0, 64))
    items = p.data.token_budget / ASSUMED_PROMPT_TOKENS
    t = plan.tokens
    assert t["pool items (assumed)"] == pytest.approx(items)
    assert t["teacher input tokens"] == pytest.approx(
        items * (ASSUMED_PROMPT_TOKENS + ASSUMED_TEMPLATE_TOKENS)
    )
    assert t["teacher output tokens"] == pytest.approx(items * ASSUMED_TRACE_TOKENS)
    assert t["teacher output, upper bound"] == pytest.approx(items * p.distill.max_new_tokens)
    train = items * ASSUMED_KEEP_RATE * (ASSUMED_PROMPT_TOKENS + ASSUMED_TRACE_TOKENS)
    assert t["training tokens"] == pytest.approx(train)
    assert 360e6 < train < 390e6  # paper.yaml's 26M pool tokens give the paper's ~372M supervision tokens
    want = (t["teacher input tokens"] * 1.25 + t["teacher output tokens"] * 10.0) / 1e6
    assert plan.cost_usd["expected"] == pytest.approx(want)
    # training time: 6 * N_active FLOPs per token at the assumed MFU of the H100 bf16 peak, over 64 GPUs
    hours = 6 * plan.backbone.active_params * train / (989e12 * 0.10 * 64) / 3600
    assert plan.hours["training"] == pytest.approx(hours)


def test_unpriced_teacher_has_no_invented_cost():
    p = load_params("paper", ["distill.price_per_m_input=0", "distill.price_per_m_output=0"])
    assert make_plan(p, Hardware("H100", 80.0, 64)).cost_usd == {"expected": None, "upper bound": None}


def test_pool_is_measured_from_phase_01_when_the_run_has_it(tmp_path: Path):
    stats = tmp_path / "01_data_mixture" / "mixture_stats.json"
    stats.parent.mkdir(parents=True)
    stats.write_text(json.dumps({"tokens": 5000, "cells": [{"items": 40}, {"items": 60}]}), encoding="utf-8")
    assert pool_items(load_params("smoke"), tmp_path) == (100, 50.0, "measured (phase 01)")


def test_eval_docs_are_counted_in_the_mirror_for_the_smoke_profile():
    from arabic_r1.plan import eval_docs

    ll, alrage = eval_docs(load_params("smoke"))
    assert ll > 0 and alrage > 0
    capped, _ = eval_docs(load_params("smoke", ["eval.max_samples_per_task=1"]))
    assert capped < ll


@pytest.mark.parametrize(
    "spec, want",
    [
        ("T4:15", Hardware("T4", 15.0, 1)),
        ("8xH100:80", Hardware("H100", 80.0, 8)),
        ("64xh100:80", Hardware("H100", 80.0, 64)),
        ("cpu:24", Hardware("CPU", 24.0, 1)),
        ("A100-SXM:40.5", Hardware("A100", 40.5, 1)),
    ],
)
def test_hardware_specs(spec: str, want: Hardware):
    assert parse_hardware(spec) == want


@pytest.mark.parametrize("spec", ["H100", "0xH100:80", "8xH100", ":80", "8x:80", "H100:lots"])
def test_bad_hardware_specs_say_the_expected_form(spec: str):
    with pytest.raises(PlanError, match=r"expected \[COUNTx\]NAME:GIB"):
        parse_hardware(spec)


def test_cli_refuses_a_profile_that_does_not_fit_with_the_numbers(capsys):
    assert main(["plan", "--params", "single_gpu", "--hardware", "T4:15"]) == 3
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "training needs ~69.6 GiB per device; T4 has 15.0 GiB" in out
    assert main(["plan", "--params", "single_gpu", "--hardware", "H100:80"]) == 0
    assert main(["plan", "--params", "colab_t4", "--hardware", "T4:15"]) == 0
    assert main(["plan", "--params", "paper", "--hardware", "64xH100:80"]) == 0
    assert (
        main(["plan", "--params", "paper", "--hardware", "8xH100:80"]) == 3
    )  # 1.3 TB of weights over 8 GPUs
    assert main(["plan", "--params", "smoke", "--hardware", "H100"]) == 2
    assert "expected [COUNTx]NAME:GIB" in capsys.readouterr().err


def test_cuda_profile_on_a_cpu_machine_is_refused():
    plan = make_plan(load_params("colab_t4"), Hardware("CPU", 24.0))
    assert any("no GPU" in p for p in plan.problems)


def test_plan_reports_the_launch_layout_the_ranks_check(capsys):
    """Processes, machines, per-rank and global batch: read from the same params the launch command and every
    rank's world-size check read; CPU ranks share the cores (no speed-up), GPU ranks divide the time."""
    from arabic_r1.train_launch import launch_command

    two = ["train.launcher=torchrun", "train.num_gpus=2", "train.per_device_batch_size=1",
           "train.gradient_accumulation_steps=2"]  # fmt: skip
    p = load_params("smoke", two)
    cmd = launch_command(p, Path("/r"))
    plan = make_plan(p, Hardware("CPU", 24.0))
    assert plan.layout == {"launcher": "torchrun", "processes": p.train.processes, "machines": int(cmd[cmd.index("--nnodes") + 1]),
                           "per_machine": int(cmd[cmd.index("--nproc-per-node") + 1]), "per_rank_batch": 1,
                           "accumulation": 2, "global_batch": 4}  # fmt: skip
    assert p.train.processes == 2
    one = load_params("smoke", ["train.per_device_batch_size=2", "train.gradient_accumulation_steps=2"])
    assert make_plan(one, Hardware("CPU", 24.0)).layout["global_batch"] == 4
    assert plan.hours["training"] == make_plan(one, Hardware("CPU", 24.0)).hours["training"]
    gpus = make_plan(p, Hardware("H100", 80.0, 2)).hours["training"]
    assert gpus == pytest.approx(make_plan(one, Hardware("H100", 80.0, 2)).hours["training"] / 2)
    assert any(
        "launches 2 ranks, one GPU each" in x for x in make_plan(p, Hardware("H100", 80.0, 1)).problems
    )
    assert (
        main(["plan", "--params", "smoke", *sum((["-o", o] for o in two), []), "--hardware", "cpu:24"]) == 0
    )
    out = capsys.readouterr().out
    assert (
        "phase 04 launch: torchrun, 2 process(es) = 2 per machine x 1 machine(s); per-rank batch 1 x 2 accumulation "
        "x 2 = global batch 4 sequences per step" in out
    )
    assert "phase 04 launch: accelerate_deepspeed_zero3, 64 process(es) = 8 per machine x 8 machine(s)" in (
        make_plan(load_params("paper"), Hardware("H100", 80.0, 64)).table()
    )
