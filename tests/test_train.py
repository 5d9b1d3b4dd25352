"""Phase 04: LoRA coverage per family, loss mask, resume after kill, merge equivalence, routing counts, bad inputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_plan import PER_FAMILY

from arabic_r1.checkpoints import checkpoint_problem
from arabic_r1.moe_lora import (
    CoverageError,
    check_coverage,
    coverage_of_adapter,
    coverage_of_model,
    lora_config,
    lora_targets,
)
from arabic_r1.params import REPO_DIR, ParamsError
from arabic_r1.params_loading import load_params, validate_params
from arabic_r1.peft_compat import no_v4_moe_remap
from arabic_r1.routing import probe_texts, recount_by_router, routing_counts
from arabic_r1.tiny_model import build_tiny_moe, save_tiny_moe
from arabic_r1.train import train_sft
from arabic_r1.train_launch import TrainSetupError, launch_command

FAMILY_TARGETS = {
    "deepseek_v3": ["attention", "routed_experts", "shared_experts", "dense_mlp"],
    "qwen3_moe": ["attention", "routed_experts"],
    "mixtral": ["attention", "routed_experts"],
    "gpt_oss": ["attention", "routed_experts"],  # router named mlp.router, fused experts with biases
}


def _lora(targets, r=4, router=False):
    return validate_params(
        {
            "data": {"token_budget": 1},
            "train": {"lora": {"r": r, "alpha": 8, "targets": targets, "train_router": router}},
        }
    ).train.lora


@pytest.mark.parametrize("family", sorted(FAMILY_TARGETS))
def test_coverage_per_family_in_model_and_saved_adapter(family: str, tmp_path: Path) -> None:
    from peft import get_peft_model

    model, _ = build_tiny_moe(family)
    lora = _lora(FAMILY_TARGETS[family], router=True)
    with no_v4_moe_remap(model):
        peft_model = get_peft_model(model, lora_config(model, lora))
    cov = coverage_of_model(peft_model)
    check_coverage(cov, lora, "test")
    for f in [*FAMILY_TARGETS[family], "router"]:
        assert cov[f]["parameters"] > 0, f
    assert cov["embeddings"]["parameters"] == 0 and cov["other"]["parameters"] == 0
    assert any("mlp.experts" in n for n in cov["routed_experts"]["tensors"])
    with no_v4_moe_remap(peft_model):
        peft_model.save_pretrained(tmp_path / "adapter")
    saved = coverage_of_adapter(tmp_path / "adapter")
    for f in FAMILY_TARGETS[family]:
        assert saved[f]["parameters"] > 0, f
    if family == "deepseek_v3":
        assert any(
            "layers.0.mlp.gate_proj" in n for n in saved["dense_mlp"]["tensors"]
        )  # the dense first layer
        assert any("shared_experts" in n for n in saved["shared_experts"]["tensors"])


def test_peft_remap_would_drop_deepseek_shared_and_dense_and_is_caught() -> None:
    from peft import get_peft_model

    model, _ = build_tiny_moe("deepseek_v3")
    lora = _lora(FAMILY_TARGETS["deepseek_v3"])
    plain = get_peft_model(
        model, lora_config(model, lora)
    )  # without no_v4_moe_remap: PEFT's v4 remapping applies
    with pytest.raises(CoverageError, match="shared_experts, dense_mlp got no adapter"):
        check_coverage(coverage_of_model(plain), lora, "after get_peft_model")


def test_a_peft_release_without_the_patched_table_fails_with_a_sentence(monkeypatch) -> None:
    from peft.utils import transformers_weight_conversion as twc

    from arabic_r1.peft_compat import PeftInternalsChanged

    assert "deepseek_v3" in twc._MODEL_TO_CONVERSION_PATTERN  # what the patch removes while adapters are made
    model, _ = build_tiny_moe("deepseek_v3")
    with no_v4_moe_remap(model):
        assert "deepseek_v3" not in twc._MODEL_TO_CONVERSION_PATTERN
    assert "deepseek_v3" in twc._MODEL_TO_CONVERSION_PATTERN  # restored
    monkeypatch.delattr(twc, "_MODEL_TO_CONVERSION_PATTERN")
    with (
        pytest.raises(PeftInternalsChanged, match="must be updated for this release"),
        no_v4_moe_remap(model),
    ):
        pass


def test_requested_family_the_architecture_lacks_is_named() -> None:
    model, _ = build_tiny_moe("qwen3_moe")
    with pytest.raises(CoverageError, match="shared_experts: no nn.Linear layers"):
        lora_config(model, _lora(["attention", "shared_experts"]))
    with pytest.raises(ValueError, match=r"train.lora.r=512 is larger than the smaller dimension of .*"):
        lora_config(model, _lora(["attention"], r=512))


def test_routing_counts_equal_a_brute_force_recount_for_every_family() -> None:
    from peft import get_peft_model

    texts = probe_texts(6)["ar"] + probe_texts(6)["en"]
    for family in FAMILY_TARGETS:
        model, tok = build_tiny_moe(family)
        counts = routing_counts(model, tok, texts)
        assert counts == recount_by_router(model, tok, texts)
        n_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
        assert all(sum(v) == n_tokens * model.config.num_experts_per_tok for v in counts.values())
        with no_v4_moe_remap(model):
            wrapped = get_peft_model(model, lora_config(model, _lora(FAMILY_TARGETS[family])))
        assert (
            routing_counts(wrapped, tok, texts) == counts
        )  # LoRA B starts at zero: same routing, hooks still fire


# ------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    model_dir = save_tiny_moe(root / "base", "deepseek_v3", seed=0)
    rows = []
    for i in range(24):
        lang = "ar" if i % 5 else "en"
        q = f"سؤال رقم {i}: ما عاصمة المغرب؟" if lang == "ar" else f"Question {i}: capital of Morocco?"
        a = ("<think>\nالتحليل: سؤال جغرافي.\nالاستبعاد: لا.\nالتدقيق اللغوي: سليم.\nالخلاصة: الرباط.\n</think>\nالإجابة: الرباط"
             if lang == "ar" else "<think>\nAnalysis: geography.\nElimination: none.\nLinguistic check: fine.\nSynthesis: Rabat.\n</think>\nAnswer: Rabat")  # fmt: skip
        rows.append(
            {
                "id": f"x{i}",
                "lang": lang,
                "category": "stem_math_logic",
                "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
            }
        )
    data = root / "verified.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (root / "params").mkdir()
    params_file = root / "params" / "t.yaml"
    params_file.write_text(yaml.safe_dump({
        "run": {"seed": 3}, "model": {"max_seq_length": 256},
        "data": {"token_budget": 10, "category_shares": {"stem_math_logic": 1.0}},
        "train": {"max_steps": 12, "save_steps": 4, "per_device_batch_size": 2, "learning_rate": 5e-3, "precision": "fp32",
                  "gradient_checkpointing": False, "lora": {"r": 8, "alpha": 16}, "probe_texts": 4},
    }))  # fmt: skip
    return root, str(model_dir), data, params_file


def _train(setup, out: Path, overrides=(), resume=True):
    root, model_dir, data, params_file = setup
    torch.set_num_threads(1)
    return train_sft(load_params(params_file, list(overrides)), data, model_dir, out, resume=resume)


def test_training_outputs_mask_and_merge_equivalence(setup, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, model_dir, data, _ = setup
    r = _train(setup, tmp_path / "run")
    assert (
        r.summary["steps"] == 12 and len(r.log_rows) == 12 and r.log_rows[-1]["loss"] < r.log_rows[0]["loss"]
    )
    assert all(k in r.log_rows[0] for k in ("loss", "lr", "grad_norm", "tokens_per_s", "peak_memory_mb"))
    loss_tokens = "".join(t["text"] for t in r.mask if t["loss"])
    assert "\ufffd" not in "".join(t["text"] for t in r.mask)  # runs decoded whole: no letter split in two
    assert (
        loss_tokens.startswith("<think>")
        and loss_tokens.endswith("<|im_end|>")
        and "سؤال" not in loss_tokens
        and "Question" not in loss_tokens
    )
    assert (
        abs(r.composition["arabic_share"]["achieved"] - 0.8) < 0.1
        and r.composition["arabic_share"]["target"] == 0.8
    )
    assert set(r.routing) == {"before", "after"} and set(r.routing["after"]) == {"ar", "en"}
    experts = json.loads((tmp_path / "run" / "coverage.json").read_text())["experts"]
    # 3 MoE layers x (gate_up_proj, down_proj) x 8 experts, every one that got tokens updated
    assert experts["expert_adapters"] == 48 and experts["updated"] + len(experts["never_routed"]) == 48
    assert experts["untouched"] == []
    provenance = json.loads((r.adapter_dir / "arabic_r1_adapter.json").read_text())
    assert provenance["expert_layout"] == "fused" and provenance["backend"] == "transformers"
    # adapter save -> reload -> merge == the saved merged model
    tok = AutoTokenizer.from_pretrained(r.merged_dir)
    x = tok("ما عاصمة المغرب؟ Rabat", return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    with no_v4_moe_remap(base):
        reloaded = PeftModel.from_pretrained(base, r.adapter_dir)
    merged = AutoModelForCausalLM.from_pretrained(r.merged_dir)
    with torch.no_grad():
        a = reloaded(**x).logits
        b = reloaded.merge_and_unload()(**x).logits
        c = merged(**x).logits
        d = AutoModelForCausalLM.from_pretrained(model_dir)(**x).logits
    assert (
        torch.allclose(a, b, atol=1e-4)
        and torch.allclose(b, c, atol=1e-4)
        and not torch.allclose(c, d, atol=1e-3)
    )


def test_expert_adapters_left_out_of_the_optimizer_stop_the_phase(setup, tmp_path: Path, monkeypatch) -> None:
    """Unsloth's MoE backends have shipped with the expert LoRA never updated while the log said LoRA was on
    ("0/192 MoE LoRA tensors updated", unsloth_zoo #606; gpt-oss 4-bit experts frozen, unsloth #6936). Planted here:
    the experts' LoRA parameters left out of the optimizer (still requires_grad, so the trainable-parameter coverage
    counts them, as it did in those bugs). Before: the phase finished and reported expert LoRA."""
    from transformers import Trainer

    from arabic_r1.moe_lora import ExpertsNotUpdated

    create = Trainer.create_optimizer

    def without_experts(self):
        optimizer = create(self)
        frozen = {id(p) for n, p in self.model.named_parameters() if ".mlp.experts." in n and "lora_" in n}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in frozen]
        return optimizer

    monkeypatch.setattr(Trainer, "create_optimizer", without_experts)
    with pytest.raises(ExpertsNotUpdated, match=r"received tokens but kept lora_B = 0 .* in layers 1, 2, 3"):
        _train(setup, tmp_path / "frozen", ["train.max_steps=2"])


def test_a_merge_that_drops_the_expert_adapters_is_caught(setup) -> None:
    from peft import get_peft_model
    from peft.tuners.lora.layer import ParamWrapper
    from transformers import AutoModelForCausalLM

    from arabic_r1.moe_lora import ExpertsNotUpdated, lora_config, merge_checked

    params = load_params(setup[3])

    def adapted():
        model = AutoModelForCausalLM.from_pretrained(setup[1])
        with no_v4_moe_remap(model):
            peft_model = get_peft_model(model, lora_config(model, params.train.lora))
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.02)  # a trained adapter: lora_B is no longer zero
        return peft_model

    _, check = merge_checked(adapted())  # the real merge carries the deltas
    assert len(check["experts_checked"]) >= 2 and check["max_abs_error"] < 1e-5, check
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            ParamWrapper, "merge", lambda self, *a, **k: None
        )  # planted: the experts' merge is skipped
        with pytest.raises(ExpertsNotUpdated, match=r"mlp.experts.* not by the adapter's delta"):
            merge_checked(adapted())


def test_assistant_only_labels_in_the_trainer_collator(setup) -> None:
    from datasets import Dataset

    from arabic_r1.sft_data import assistant_mask
    from arabic_r1.train_backends import load_model_and_tokenizer, make_trainer, sft_config

    root, model_dir, data, params_file = setup
    params = load_params(params_file)
    model, tok = load_model_and_tokenizer(params, model_dir, "fp32")
    rows = [json.loads(x) for x in data.read_text(encoding="utf-8").splitlines()[:2]]
    trainer = make_trainer(model=model, args=sft_config(params, root / "collate", "fp32", 256), processing_class=tok,
                           train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in rows]))  # fmt: skip
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, mask = assistant_mask(tok, rows[0]["messages"])
    labels = batch["labels"][0].tolist()[: len(ids)]
    assert [lab != -100 for lab in labels] == [bool(m) for m in mask]


def test_killed_run_resumes_from_its_checkpoint_with_the_same_steps(setup, tmp_path: Path) -> None:
    root, model_dir, data, params_file = setup
    steps = ["train.max_steps=40", "train.save_steps=4"]
    reference = _train(setup, tmp_path / "ref", steps)
    out = tmp_path / "killed"
    code = (
        "import torch; from pathlib import Path; from arabic_r1.params_loading import load_params; from arabic_r1.train import train_sft;"
        f"torch.set_num_threads(1); train_sft(load_params({str(params_file)!r}, {steps!r}), Path({str(data)!r}), {model_dir!r}, Path({str(out)!r}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO_DIR)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while (
            time.monotonic() < deadline
            and not (out / "checkpoints" / "checkpoint-8" / "trainer_state.json").exists()
        ):
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / "checkpoints" / "checkpoint-8").is_dir() and not (out / "adapter").exists(), (
        "the run ended before the kill"
    )
    resumed = _train(setup, out, steps)
    assert resumed.summary["steps"] == 40 and Path(resumed.summary["resumed_from"]).name.startswith(
        "checkpoint-"
    )
    assert [r["step"] for r in resumed.log_rows] == list(range(1, 41))
    ref = {r["step"]: r["loss"] for r in reference.log_rows}
    start = int(Path(resumed.summary["resumed_from"]).name.split("-")[1])
    for r in resumed.log_rows[start:]:  # same data order and state after the resume: same losses
        assert r["loss"] == pytest.approx(ref[r["step"]], rel=1e-4, abs=1e-4), r["step"]


def test_bad_inputs_stop_before_training(setup, tmp_path: Path, caplog) -> None:
    root, model_dir, data, params_file = setup
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TrainSetupError, match="training set is empty"):
        train_sft(load_params(params_file), empty, model_dir, tmp_path / "a")
    with pytest.raises(TrainSetupError, match="longer than model.max_seq_length=16"):
        _train(setup, tmp_path / "b", ["model.max_seq_length=16"])
    bare = tmp_path / "bare.jinja"
    bare.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(TrainSetupError, match=r"no \{% generation %\} markers"):
        _train(setup, tmp_path / "c", [f"train.chat_template={bare}"])
    if not torch.cuda.is_available():
        with pytest.raises(TrainSetupError, match="load_in_4bit needs a CUDA GPU"):
            _train(setup, tmp_path / "d", ["model.load_in_4bit=true"])
    mixtral = save_tiny_moe(tmp_path / "m", "mixtral")
    with pytest.raises(
        CoverageError, match="shared_experts: no nn.Linear layers of this family in MixtralForCausalLM"
    ):
        train_sft(
            load_params(params_file, ["train.lora.targets=[attention, routed_experts, shared_experts]"]),
            data,
            str(mixtral),
            tmp_path / "e",
        )


def test_trackers_log_inside_the_phase_folder_and_sft_fields_reach_trl(
    setup, tmp_path: Path, monkeypatch
) -> None:
    """train.report_to: TensorBoard events with the same losses as train_log.jsonl, and an offline W&B run, both in
    the phase folder; train.sft: TRL fields the project does not map reach SFTConfig."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from arabic_r1.train_backends import sft_config

    for var in ("WANDB_MODE", "WANDB_DIR", "TENSORBOARD_LOGGING_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    extra = ["train.max_steps=3", "train.report_to=[tensorboard, wandb]", "train.sft.max_grad_norm=0.5",
             "train.sft.weight_decay=0.1"]  # fmt: skip
    out = tmp_path / "t"
    result = _train(setup, out, extra)
    events = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events, sorted(p.relative_to(out) for p in out.rglob("*") if "checkpoints" not in p.parts)
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(
        [r["loss"] for r in result.log_rows], rel=1e-5
    )
    from arabic_r1.train_views import tensorboard_command

    params = load_params(setup[3], extra)
    assert tensorboard_command(params, out).startswith("tensorboard --logdir ")
    assert "train.report_to is empty" in tensorboard_command(params, tmp_path)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), runs
    cfg = sft_config(load_params(setup[3], extra), out, "fp32", 256)
    assert (cfg.max_grad_norm, cfg.weight_decay, cfg.report_to) == (0.5, 0.1, ["tensorboard", "wandb"])
    default = sft_config(load_params(setup[3]), out, "fp32", 256)
    assert (default.max_grad_norm, default.weight_decay, default.report_to) == (1.0, 0.0, [])


def test_sft_passthrough_names_unknown_and_owned_fields(setup) -> None:
    with pytest.raises(
        ParamsError,
        match=r"train.sft: .*sft.max_grad_nrom is not a field of TRL's SFTConfig \(did you mean max_grad_norm",
    ):
        load_params(setup[3], ["train.sft.max_grad_nrom=0.5"])
    with pytest.raises(ParamsError, match=r"sft.learning_rate is set by arabic_r1 from train.learning_rate"):
        load_params(setup[3], ["train.sft.learning_rate=0.1"])
    with pytest.raises(TrainSetupError, match="TRL's SFTConfig rejected the training arguments"):
        from arabic_r1.train_backends import sft_config

        sft_config(
            load_params(setup[3], ["train.sft.lr_scheduler_kwargs=not-a-dict", "train.sft.optim=nope"]),
            Path("x"),
            "fp32",
            8,
        )


def test_unsloth_backend_trains_through_its_cpu_fallback(setup, tmp_path: Path) -> None:
    """In a subprocess: importing unsloth patches transformers and TRL for the whole process."""
    root, model_dir, data, params_file = setup
    code = (
        "import json, torch; from pathlib import Path; import unsloth; from arabic_r1.params_loading import load_params; from arabic_r1.train import train_sft;"
        f"r = train_sft(load_params({str(params_file)!r}, ['train.backend=unsloth', 'train.max_steps=3', 'train.unsloth_moe_backend=grouped_mm']),"
        f" Path({str(data)!r}), {model_dir!r}, Path({str(tmp_path / 'u')!r}));"
        "print('RESULT', json.dumps({'cov': {k: v['parameters'] for k, v in r.coverage_adapter.items()}, 'steps': r.summary['steps'], 'loss': r.summary['last_loss']}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_DIR)},
        timeout=600,
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, out.stderr[-3000:]
    res = json.loads(line.split(" ", 1)[1])
    assert (
        all(res["cov"][f] > 0 for f in FAMILY_TARGETS["deepseek_v3"])
        and res["steps"] == 3
        and res["loss"] > 0
    )
    if not torch.cuda.is_available():
        assert "grouped_mm needs a GPU: using native_torch" in out.stderr


@pytest.mark.parametrize("backend", ["unsloth", "transformers"])
def test_a_phase_that_trains_through_unsloth_imports_it_before_transformers_and_trl(
    setup, tmp_path, backend
) -> None:
    """Unsloth patches transformers/TRL/PEFT at import; imported after them it runs their unpatched code. open_phase
    (notebook 04) and ``python -m arabic_r1.train`` (every launched rank) set up output and validate params first,
    which import transformers and, with train.sft set, TRL."""
    code = (
        "import sys, json\nseen = []\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('unsloth', 'transformers', 'trl') and name not in seen: seen.append(name)\n"
        "sys.meta_path.insert(0, Spy())\n"
        "from arabic_r1.notebook import open_phase\n"
        f"try: open_phase('moe_lora_sft', {str(setup[3])!r}, ['train.backend={backend}', 'train.sft.weight_decay=0.01'],"
        f" run_dir={str(tmp_path)!r})\n"
        "except Exception as exc: print('open_phase stopped:', type(exc).__name__)\n"
        "print('ORDER', json.dumps(seen))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO_DIR)})  # fmt: skip
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("ORDER")), None)
    assert line, out.stderr[-3000:]
    order = json.loads(line.split(" ", 1)[1])
    assert "transformers" in order and "trl" in order, line  # both were imported by the set-up
    assert order[0] == "unsloth" if backend == "unsloth" else "unsloth" not in order, line


def test_launch_command_and_accelerate_configs() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    p = load_params("paper")
    cmd = launch_command(p, Path("/runs/paper"))
    assert (
        cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
        and cmd[cmd.index("--num_processes") + 1] == "64"
        and cmd[cmd.index("--num_machines") + 1] == "8"
    )
    cfg = Path(cmd[cmd.index("--config_file") + 1])
    assert cfg == REPO_DIR / "configs/accelerate/deepspeed_zero3.yaml"
    assert cmd[cmd.index("-m", 3) + 1] == "arabic_r1.train" and cmd[cmd.index("--params") + 1] == str(
        p.source_file
    )
    ds = load_config_from_file(str(cfg))
    assert (
        ds.distributed_type == "DEEPSPEED"
        and ds.deepspeed_config["zero_stage"] == 3
        and ds.mixed_precision == "bf16"
    )
    fsdp = load_config_from_file(str(REPO_DIR / "configs/accelerate/fsdp.yaml"))
    assert fsdp.distributed_type == "FSDP" and fsdp.fsdp_config["fsdp_version"] == 2
    p2 = load_params("paper", ["train.launcher=accelerate_fsdp", "train.num_gpus=4", "train.num_machines=1"])
    cmd2 = launch_command(p2, Path("/r"))
    assert (
        cmd2[cmd2.index("--config_file") + 1].endswith("fsdp.yaml")
        and cmd2[cmd2.index("--num_processes") + 1] == "4"
    )
    assert cmd2[-2:] == ["-o", "train.num_machines=1"]
    p3 = load_params("smoke", ["train.launcher=torchrun", "train.num_gpus=2"])
    cmd3 = launch_command(p3, Path("/r"))
    assert cmd3[:4] == [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    assert cmd3[cmd3.index("--nproc-per-node") + 1] == "2" and cmd3[cmd3.index("--nnodes") + 1] == "1"
    assert cmd3[cmd3.index("-m", 3) + 1] == "arabic_r1.train" and p3.train.processes == 2
    p4 = load_params("smoke", ["train.launcher=torchrun", "train.num_gpus=8", "train.num_machines=4"])
    cmd4 = launch_command(p4, Path("/r"))
    assert "--standalone" not in cmd4 and "$MASTER_ADDR:$MASTER_PORT" in cmd4
    assert cmd4[cmd4.index("--nnodes") + 1] == "4" and p4.train.processes == 32
    with pytest.raises(ValueError, match="single"):
        launch_command(load_params("smoke"), Path("/r"))


def _per_expert_model(experts: bool = True):
    """Two layers of attention + per-expert nn.Linear experts (transformers-4 / Unsloth 4-bit layouts), or none."""
    from torch import nn

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.self_attn = nn.ModuleDict({"q_proj": nn.Linear(8, 8)})
            self.mlp = nn.Module()
            if experts:
                self.mlp.experts = nn.ModuleList([nn.ModuleDict({"w1": nn.Linear(8, 16)}) for _ in range(3)])

    model = nn.Module()
    model.layers = nn.ModuleList([Layer(), Layer()])
    return model


def test_per_expert_linear_layers_are_adapted_as_modules() -> None:
    """Layouts that keep one nn.Linear per expert (transformers 4, Unsloth's 4-bit gpt-oss) get module adapters."""
    from torch import nn

    model = _per_expert_model()
    t = lora_targets(model, _lora(["attention", "routed_experts"]))
    assert t["target_parameters"] is None
    adapted = [
        n for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.match(t["target_modules"], n)
    ]
    assert len(adapted) == 2 * (1 + 3) and "layers.1.mlp.experts.2.w1" in adapted


def test_checkpoints_of_other_params_are_not_resumed(setup, tmp_path: Path) -> None:
    """Re-running phase 04 unchanged reuses the finished training (no extra step, same adapter); after a change of
    LoRA rank it starts over instead of resuming the old optimizer state."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    steps = ["train.max_steps=4", "train.save_steps=2"]
    first = _train(setup, out, steps)
    weights = load_file(str(first.adapter_dir / "adapter_model.safetensors"))
    assert first.summary["resumed_from"] is None
    same = _train(setup, out, steps)
    assert Path(same.summary["resumed_from"]).name == "checkpoint-4" and same.summary["steps"] == 4
    again = load_file(str(same.adapter_dir / "adapter_model.safetensors"))
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)
    assert same.summary["last_loss"] == first.summary["last_loss"]
    other = _train(setup, out, [*steps, "train.lora.r=4"])
    assert other.summary["resumed_from"] is None and other.summary["steps"] == 4
    assert other.summary["lora"]["r"] == 4


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


CHECKPOINT_CASES = {  # damage done to a finished 4-step run (checkpoints 2 and 4) -> (resumed from, reason logged)
    "truncated_adapter": (lambda c: _truncate(c / "checkpoint-4" / "adapter_model.safetensors"), "checkpoint-2",
                          "adapter_model.safetensors (the LoRA weights) does not read"),
    "missing_trainer_state": (lambda c: (c / "checkpoint-4" / "trainer_state.json").unlink(), "checkpoint-2",
                              "trainer_state.json (the step count and log history) is missing"),
    "missing_optimizer": (lambda c: (c / "checkpoint-4" / "optimizer.pt").unlink(), "checkpoint-2",
                          "optimizer.pt (the optimizer state"),
    "truncated_optimizer": (lambda c: _truncate(c / "checkpoint-4" / "optimizer.pt"), "checkpoint-2",
                            "optimizer.pt (the optimizer state (without it a resume diverges from the uninterrupted run)) is cut short"),
    "empty_newer_folder": (lambda c: (c / "checkpoint-6").mkdir(), "checkpoint-4",
                           "adapter_model.safetensors (the LoRA weights) is missing"),
    "torn_train_log": (lambda c: (shutil.rmtree(c / "checkpoint-4"), (c.parent / "train_log.jsonl").open("ab").write(b'{"step": 5, "lo')),
                       "checkpoint-2", "dropping a torn last line"),
    "no_complete_checkpoint": (lambda c: [(c / f"checkpoint-{n}" / "scheduler.pt").unlink() for n in (2, 4)], None,
                               "scheduler.pt (the learning-rate schedule) is missing"),
}  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(setup, tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("ckpt") / "run"
    result = _train(setup, out, ["train.max_steps=4", "train.save_steps=2", "train.save_total_limit=3"])
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    return out, [(r["step"], r["loss"]) for r in result.log_rows]


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_a_broken_checkpoint_is_skipped_with_its_reason(
    setup, finished_run, tmp_path: Path, caplog, case: str
) -> None:
    """A kill while Trainer writes a checkpoint leaves some of its files, or a file cut short: the resume takes the
    newest complete checkpoint, says which one it skipped and why, and the losses are the uninterrupted run's."""
    import logging

    reference_dir, reference = finished_run
    out = tmp_path / "run"
    shutil.copytree(reference_dir, out)
    damage, resumed_from, reason = CHECKPOINT_CASES[case]
    damage(out / "checkpoints")
    with caplog.at_level(logging.WARNING):
        result = _train(setup, out, ["train.max_steps=4", "train.save_steps=2", "train.save_total_limit=3"])
    got = Path(result.summary["resumed_from"]).name if result.summary["resumed_from"] else None
    assert got == resumed_from
    assert reason in caplog.text, caplog.text[-2000:]
    assert [(r["step"], r["loss"]) for r in result.log_rows] == reference  # loss for loss
    assert not [p for p in (out / "checkpoints").glob("checkpoint-*") if checkpoint_problem(p)]


def test_the_cpu_loss_is_next_token_cross_entropy_on_assistant_tokens() -> None:
    """Hand-computed: token t is predicted from the logits at t-1; masked (-100) tokens do not count."""
    from arabic_r1.train_backends import next_token_nll

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, 3, 4, -100, 1], [-100, -100, 6, 2, -100]])
    total, count = 0.0, 0
    for b in range(2):
        for t in range(1, 5):
            if labels[b, t] != -100:
                total -= torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]].item()
                count += 1
    assert count == 5
    assert next_token_nll(logits, labels).item() == pytest.approx(total / count, rel=1e-6)
    assert next_token_nll(logits, labels, num_items=10).item() == pytest.approx(total / 10, rel=1e-6)


def test_composition_counts_tokens_not_rows() -> None:
    """Three Arabic rows of 5 tokens and one English row of 45: a quarter Arabic by tokens, three quarters by rows."""
    from arabic_r1.sft_data import composition

    rows = [{"lang": "ar", "category": "a"}] * 3 + [{"lang": "en", "category": "b"}]
    comp = composition(rows, [5, 5, 5, 45], load_params("smoke"))
    assert comp["tokens"] == 60 and comp["examples"] == 4
    assert comp["arabic_share"]["achieved"] == 0.25
    assert comp["categories"]["a"]["tokens"] == 15 and comp["categories"]["b"]["achieved"] == 0.75


def test_a_saved_adapter_that_lost_a_family_fails_the_phase(setup, tmp_path: Path, monkeypatch) -> None:
    """PEFT can save an adapter without the expert tensors it trained: the phase reads the file back and stops."""
    import arabic_r1.train as train_module
    from arabic_r1.moe_lora import CoverageError

    family = load_params(setup[3]).train.lora.targets[0]
    real = train_module.coverage_of_adapter

    def without_family(adapter_dir):
        report = real(adapter_dir)
        return {**report, family: {**report[family], "parameters": 0, "tensors": []}}

    monkeypatch.setattr(train_module, "coverage_of_adapter", without_family)
    with pytest.raises(CoverageError, match=f"saved adapter .* {family} got no adapter"):
        _train(setup, tmp_path / "o", ["train.max_steps=2"], resume=False)


def test_save_on_time_asks_for_a_checkpoint_by_the_clock_alone(monkeypatch) -> None:
    """``train.save_minutes``: a save is due once the minutes passed since the last save, whatever save_steps says."""
    from transformers import TrainerControl

    from arabic_r1 import checkpoints

    now = [1000.0]
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: now[0])
    callback = checkpoints.save_on_time(0.5)
    asked = []
    for seconds in (10, 20, 2, 27, 1):  # 30 s passed: due; then 2 s and 29 s after that save: not; 30 s: due
        now[0] += seconds
        control = TrainerControl()
        callback.on_step_end(None, None, control)
        asked.append(control.should_save)
        if control.should_save:
            callback.on_save(None, None, control)
    assert asked == [False, True, False, False, True]


TORCHRUN_SUMMARY = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
arabic_r1.train FAILED
------------------------------------------------------------
Failures:
[0]:
  time      : 2026-12-07_19:38:22
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 26416)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 26416
------------------------------------------------------------
Root Cause (first observed failure):
[1]:
  time      : 2026-12-07_19:38:21
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 26415)  (SIGTERM)
  error_file: /tmp/torchelastic_x/attempt_0/0/error.json
  traceback : Traceback (most recent call last):
    File "accelerate/utils/operations.py", line 345, in _gpu_gather_one
  RuntimeError: [gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:9372: Connection reset by peer.
============================================================
"""


def test_a_rank_killed_from_outside_is_named_even_when_torchrun_saw_a_survivor_fail_first() -> None:
    """The summary torchrun printed on a busy machine (issue 31's xdist run): rank 1 was SIGKILLed, rank 0's
    collective failed on the reset connection a moment before torchrun noticed, so its Root Cause is rank 0."""
    from arabic_r1.train_launch import failure_message

    msg = failure_message(TORCHRUN_SUMMARY, 1, 2)
    assert msg.startswith("phase 04: rank 1 of 2 (local rank 1) was killed by SIGKILL"), msg
    # a Python error with no rank killed from outside: torchrun's Root Cause, with its traceback
    crashed = TORCHRUN_SUMMARY.replace(
        "exitcode  : -9 (pid: 26416)  (SIGKILL)", "exitcode  : -15 (pid: 26416)"
    )
    crashed = crashed.replace("exitcode  : -15 (pid: 26415)  (SIGTERM)", "exitcode  : 1 (pid: 26415)")
    msg = failure_message(crashed, 1, 2)
    assert (
        msg.startswith("phase 04: rank 0 of 2 (local rank 0) exited with code 1")
        and "Connection reset" in msg
    )
    assert "without naming a failed rank" in failure_message("no summary\n", 1, 2)


def test_unsloth_gets_the_same_lora_config_as_peft() -> None:
    """Every argument derived for FastLanguageModel.get_peft_model is one it names or forwards to LoraConfig (read from
    the pinned Unsloth source, not imported: importing Unsloth patches transformers for the whole process)."""
    import ast
    import importlib.util

    from peft import LoraConfig

    from arabic_r1.moe_lora import lora_config, unsloth_peft_kwargs
    from arabic_r1.tiny_model import build_tiny_moe

    spec = importlib.util.find_spec("unsloth")
    if spec is None:
        pytest.skip("unsloth is not installed (make install installs it --no-deps)")
    src = Path(spec.origin).parent / "models" / "llama.py"
    fn = next(n for n in ast.walk(ast.parse(src.read_text(encoding="utf-8")))
              if isinstance(n, ast.FunctionDef) and n.name == "get_peft_model")  # fmt: skip
    named = {a.arg for a in fn.args.args}
    assert fn.args.kwarg is not None  # the rest goes to LoraConfig(**arguments)
    params = load_params("smoke", [PER_FAMILY])
    model, _ = build_tiny_moe(params.model.family, params.model.tiny)
    cfg = lora_config(model, params.train.lora)
    kwargs = unsloth_peft_kwargs(cfg)
    assert set(kwargs) - named <= set(LoraConfig.__dataclass_fields__), set(kwargs) - named
    rebuilt = LoraConfig(**kwargs, task_type="CAUSAL_LM")
    for field in ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "target_parameters", "lora_dropout",
                  "bias", "modules_to_save", "target_modules"):  # fmt: skip
        assert getattr(rebuilt, field) == getattr(cfg, field), field
    assert kwargs["rank_pattern"] is not cfg.rank_pattern  # a copy: Unsloth may edit what it is given
    plain = unsloth_peft_kwargs(lora_config(model, load_params("smoke").train.lora))
    assert "rank_pattern" not in plain and "alpha_pattern" not in plain  # one rank: no patterns passed
    no_modules = unsloth_peft_kwargs(
        LoraConfig(target_parameters=["mlp.experts.down_proj"], target_modules=None)
    )
    assert no_modules["target_modules"] == []  # Unsloth iterates it: None would fail there


def test_the_coverage_table_has_every_family_in_report_order() -> None:
    from arabic_r1.moe_lora import REPORT_FAMILIES, coverage_from_names, coverage_table

    model = coverage_from_names([("a.self_attn.q_proj.lora_A", 8), ("a.self_attn.k_proj.lora_A", 4),
                                 ("a.mlp.experts.lora_B", 6), ("x.weird", 1)])  # fmt: skip
    saved = coverage_from_names([("a.self_attn.q_proj.lora_A", 8)])
    rows = coverage_table(model, saved)
    assert [r["family"] for r in rows] == list(REPORT_FAMILIES)
    by = {r["family"]: r for r in rows}
    assert by["attention"] == {"family": "attention", "trainable parameters": 12, "tensors": 2,
                               "saved adapter parameters": 8, "saved adapter tensors": 1}  # fmt: skip
    assert by["routed_experts"]["saved adapter tensors"] == 0 and by["other"]["trainable parameters"] == 1
    assert coverage_table(model)[1] == {"family": "routed_experts", "trainable parameters": 6, "tensors": 1}


def test_each_family_keeps_its_rank_and_scale_in_the_peft_model() -> None:
    """check_family_ranks on a real PEFT model with per-family ranks: it passes as built, and names the first
    adapter (and counts them all) when a family's rank or only its alpha differs from what params ask."""
    from peft import get_peft_model

    from arabic_r1.moe_lora import check_family_ranks, expert_patterns_quiet, lora_config
    from arabic_r1.params import FamilyLora

    params = load_params("smoke", [PER_FAMILY])
    lora = params.train.lora
    model, _ = build_tiny_moe(params.model.family, params.model.tiny)
    with no_v4_moe_remap(model), expert_patterns_quiet():
        peft_model = get_peft_model(model, lora_config(model, lora))
    assert check_family_ranks(peft_model, lora) == lora.scales()
    # generate() and the saved adapter's task_type
    assert type(peft_model).__name__ == "PeftModelForCausalLM"
    dropped = build_tiny_moe(params.model.family, params.model.tiny)[0]
    with no_v4_moe_remap(dropped), expert_patterns_quiet():
        # PEFT 0.21 takes no dropout on the fused experts' target_parameters (preflight says so): the other families
        no_experts = [f for f in lora.targets if f != "routed_experts"]
        modules_only = lora.model_copy(update={"dropout": 0.25, "targets": no_experts, "per_family": {
            f: v for f, v in lora.per_family.items() if f in no_experts}})  # fmt: skip
        dropped = get_peft_model(dropped, lora_config(dropped, modules_only))
    assert {m.lora_dropout["default"].p for m in dropped.modules() if hasattr(m, "lora_dropout")} == {0.25}
    attention = [n.removeprefix("base_model.model.") for n, m in peft_model.named_modules()
                 if isinstance(getattr(m, "r", None), dict) and ".self_attn." in n]  # fmt: skip
    experts = [n for n, m in peft_model.named_modules()
               if isinstance(getattr(m, "r", None), dict) and ".mlp.experts" in n]  # both fused parameters' wrappers  # fmt: skip
    assert attention and experts
    for family, changed, first, n in [
        ("attention", FamilyLora(r=3, alpha=6), f"{attention[0]} (attention): r=2, scale 3; expected r=3, scale 2",
         len(attention)),
        ("attention", FamilyLora(r=2, alpha=7), f"{attention[0]} (attention): r=2, scale 3; expected r=2, scale 3.5",
         len(attention)),
        ("routed_experts", FamilyLora(r=5, alpha=10),
         f"{experts[0].removeprefix('base_model.model.')} (routed_experts): r=4, scale 2; expected r=5, scale 2",
         len(experts)),
    ]:  # fmt: skip
        other = lora.model_copy(update={"per_family": {**lora.per_family, family: changed}})
        with pytest.raises(CoverageError) as err:
            check_family_ranks(peft_model, other)
        assert str(err.value) == f"{n} adapter(s) did not get their family's rank/alpha, e.g. {first}"
    untargeted = lora.model_copy(update={"targets": [t for t in lora.targets if t != "attention"],
                                         "per_family": {**lora.per_family, "attention": FamilyLora(r=9, alpha=1)}})  # fmt: skip
    assert "attention" not in check_family_ranks(
        peft_model, untargeted
    )  # a family not targeted is not checked
    # ... and the layers after its modules still are: the experts' wrong rank is found past the skipped attention
    wrong_experts = {**untargeted.per_family, "routed_experts": FamilyLora(r=5, alpha=10)}
    with pytest.raises(CoverageError, match=rf"^{len(experts)} adapter\(s\) .* \(routed_experts\): r=4"):
        check_family_ranks(peft_model, untargeted.model_copy(update={"per_family": wrong_experts}))


def test_a_family_without_adapters_is_named_in_the_right_number() -> None:
    from arabic_r1.moe_lora import check_coverage, coverage_from_names

    lora = load_params("smoke").train.lora
    report = coverage_from_names([("a.self_attn.q_proj.lora_A", 4), ("a.mlp.experts.lora_B", 4)])
    check_coverage(report, lora.model_copy(update={"targets": ["attention", "routed_experts"]}), "model")
    with pytest.raises(CoverageError) as one:
        check_coverage(
            report, lora.model_copy(update={"targets": ["attention", "shared_experts"]}), "the model"
        )
    assert str(one.value) == "the model: requested family shared_experts got no adapter"
    with pytest.raises(CoverageError) as two:
        check_coverage(
            report, lora.model_copy(update={"targets": ["dense_mlp", "shared_experts"]}), "saved adapter"
        )
    assert str(two.value) == "saved adapter: requested families dense_mlp, shared_experts got no adapter"
    with pytest.raises(
        CoverageError, match="requested family router got no adapter"
    ):  # train_router asks for it
        check_coverage(
            report, lora.model_copy(update={"targets": ["attention"], "train_router": True}), "model"
        )


def test_the_target_builder_names_each_family_s_layers_and_each_refusal() -> None:
    """What a user meets first on a new checkpoint: per-family module lists (the per-family rank patterns are keyed
    by them), a family asked for alone, and errors that name the params key, the layer and its shape."""
    from arabic_r1.moe_lora import full_shape
    from arabic_r1.params import FamilyLora

    t = lora_targets(_per_expert_model(), _lora(["attention", "routed_experts"]))
    assert t["by_family"] == {
        "attention": ["layers.0.self_attn.q_proj", "layers.1.self_attn.q_proj"],
        "routed_experts": [f"layers.{i}.mlp.experts.{e}.w1" for i in (0, 1) for e in range(3)],
    }
    deepseek, _ = build_tiny_moe("deepseek_v3")
    alone = lora_targets(deepseek, _lora(["dense_mlp"]))["by_family"]  # no attention before it in the list
    assert list(alone) == ["dense_mlp"] and alone["dense_mlp"]
    with pytest.raises(ValueError) as err:
        lora_targets(_per_expert_model(), _lora(["routed_experts"], r=9))
    assert str(err.value) == (
        "train.lora.r=9 is larger than the smaller dimension of layers.0.mlp.experts.0.w1 (8, 16)"
    )
    for family, layer in (("attention", "layers.0.self_attn.q_proj (8, 8)"),
                          ("routed_experts", "layers.0.mlp.experts.0.w1 (8, 16)")):  # fmt: skip
        lora = _lora(["attention", "routed_experts"], r=2)
        lora = lora.model_copy(update={"per_family": {family: FamilyLora(r=9, alpha=9)}})
        with pytest.raises(ValueError) as err:
            lora_targets(_per_expert_model(), lora)
        expected = f"train.lora.per_family.{family}.r=9 is larger than the smaller dimension of {layer}"
        assert str(err.value) == expected
    with pytest.raises(CoverageError) as missing:
        lora_targets(_per_expert_model(experts=False), _lora(["routed_experts"]))
    assert str(missing.value) == (
        "train.lora.targets asks for families this model does not have: routed_experts: no expert weights "
        "(mlp.experts.*, fused 3-D or nn.Linear) in Module"
    )
    # a rank equal to the smaller dimension fits
    assert lora_targets(_per_expert_model(), _lora(["routed_experts"], r=8))
    # fused 3-D experts, (experts, in, out): the expert axis is no dimension of the adapter
    gpt_oss, _ = build_tiny_moe("gpt_oss")
    big = {"routed_experts": FamilyLora(r=100, alpha=1)}
    lora = _lora(["routed_experts"]).model_copy(update={"per_family": big})
    with pytest.raises(ValueError) as fused:
        lora_targets(gpt_oss, lora)
    assert str(fused.value) == ("train.lora.per_family.routed_experts.r=100 is larger than the smaller dimension of "
                                "model.layers.0.mlp.experts.down_proj (64, 128)")  # fmt: skip
    two = r"does not have: shared_experts: no nn\.Linear .*; routed_experts: no "
    with pytest.raises(CoverageError, match=two):
        lora_targets(_per_expert_model(experts=False), _lora(["shared_experts", "routed_experts"]))
    # routers are trained (and saved whole) only when asked
    assert lora_targets(deepseek, _lora(["attention"]))["modules_to_save"] is None
    assert lora_targets(deepseek, _lora(["attention"], router=True))["modules_to_save"] == ["mlp.gate"]
    zero3 = torch.nn.Parameter(torch.empty(0))
    # DeepSpeed ZeRO-3 keeps the full shape in ds_shape, the local tensor empty
    zero3.ds_shape = torch.Size([4, 8, 16])
    assert full_shape(zero3) == (4, 8, 16) and full_shape(torch.nn.Parameter(torch.empty(2, 3))) == (2, 3)
