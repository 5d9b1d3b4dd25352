"""Phase 04 as several processes: 2 torchrun ranks on the CPU (gloo) against 1 process with the same global batch.

Tolerances (float32 on a CPU; the ranks' smaller per-device batches pad differently, which changes the matmul
shapes and so the rounding, nothing else): per-step losses within 1e-5 relative, adapter tensors within 1e-5
absolute (measured: see docs/scale_out.md). The launch is :func:`arabic_r1.train_launch.launch`, what notebook 04 runs.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from arabic_r1.checkpoints import SHARDS_DIR, example_digest
from arabic_r1.digests import json_digest, path_digest
from arabic_r1.jsonl import write_json_atomic
from arabic_r1.params_loading import load_params
from arabic_r1.phases import find_phase
from arabic_r1.sft_data import assistant_mask
from arabic_r1.tiny_model import save_tiny_moe
from arabic_r1.train import main, train_sft
from arabic_r1.train_launch import LaunchFailed, TrainSetupError, launch

LOSS_REL = 1e-5
ADAPTER_ABS = 1e-4
STEPS, SAVE = 12, 2  # 24 examples, global batch 4: two epochs of 6 steps
ONE = ["train.per_device_batch_size=2", "train.gradient_accumulation_steps=2"]
TWO = ["train.launcher=torchrun", "train.num_gpus=2", "train.per_device_batch_size=1",
       "train.gradient_accumulation_steps=2"]  # fmt: skip


def _upstream(run_dir: Path, phase: str, name: str, path: Path) -> None:
    """A completed upstream phase whose manifest lists one output (what phase 04 reads)."""
    out = {name: {"path": path.relative_to(run_dir).as_posix(), "digest": path_digest(path)}}
    (run_dir / find_phase(phase).slug).mkdir()
    write_json_atomic(run_dir / find_phase(phase).slug / "manifest.json",
                      {"phase": find_phase(phase).slug, "status": "complete", "outputs": out,
                       "outputs_digest": json_digest({name: out[name]["digest"]})})  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A params file, the tiny DeepSeek-V3 and 24 chat examples; ``new_run()`` makes a run folder with phases 00
    and 03 complete."""
    root = tmp_path_factory.mktemp("ddp")
    model_dir = save_tiny_moe(root / "base", "deepseek_v3", seed=0)
    rows = [{"id": f"x{i}", "lang": "ar" if i % 5 else "en", "category": "stem_math_logic",
             "messages": [{"role": "user", "content": f"سؤال رقم {i}: ما عاصمة المغرب؟"},
                          {"role": "assistant", "content": f"<think>\nالتحليل: {i}.\nالخلاصة: الرباط.\n</think>\nالإجابة: الرباط"}]}
            for i in range(24)]  # fmt: skip
    data = root / "verified.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (root / "params").mkdir()
    params_file = root / "params" / "t.yaml"
    params_file.write_text(yaml.safe_dump({
        "run": {"seed": 3, "torch_threads": 1}, "model": {"max_seq_length": 256},
        "data": {"token_budget": 10, "category_shares": {"stem_math_logic": 1.0}},
        "train": {"max_steps": STEPS, "save_steps": SAVE, "learning_rate": 5e-3, "precision": "fp32",
                  "gradient_checkpointing": False, "merge": False, "lora": {"r": 8, "alpha": 16}, "probe_texts": 2},
    }))  # fmt: skip

    def new_run(name: str) -> Path:
        run_dir = root / "runs" / name
        (run_dir / "inputs").mkdir(parents=True)
        (run_dir / "inputs" / "verified.jsonl").write_bytes(data.read_bytes())
        os.symlink(model_dir, run_dir / "inputs" / "base")
        _upstream(run_dir, "environment", "base_model", run_dir / "inputs" / "base")
        _upstream(run_dir, "trace_verification", "verified", run_dir / "inputs" / "verified.jsonl")
        return run_dir

    return params_file, str(model_dir), data, new_run


@pytest.fixture(scope="module")
def one_process(project):
    """The reference: 1 process, per-device batch 2 x accumulation 2 = global batch 4."""
    params_file, model_dir, data, _ = project
    torch.set_num_threads(1)
    out = params_file.parent.parent / "one"
    return train_sft(load_params(params_file, ONE), data, model_dir, out), out


def _phase_dir(run_dir: Path) -> Path:
    return run_dir / find_phase("moe_lora_sft").slug


def _shards(out: Path) -> dict[int, list[dict]]:
    return {int(f.stem.removeprefix("rank")): [json.loads(x) for x in f.read_text().splitlines()]
            for f in sorted((out / SHARDS_DIR).glob("rank*.jsonl"))}  # fmt: skip


def _by_step(rows: list[dict]) -> dict[int, Counter]:
    steps: dict[int, Counter] = {}
    for r in rows:
        steps.setdefault(r["step"], Counter()).update(r["examples"])
    return steps


def _adapter_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert x.keys() == y.keys()
    return max((x[k] - y[k]).abs().max().item() for k in x)


def _check_like_one_process(one, out: Path, steps: range) -> None:
    ref = {r["step"]: r["loss"] for r in one.log_rows}
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(steps), "one train-log row per step: rank 0 writes it"
    worst = max(abs(r["loss"] - ref[r["step"]]) / abs(ref[r["step"]]) for r in rows)
    print(f"max relative loss difference 2 ranks vs 1 process: {worst:.2e}")
    assert worst <= LOSS_REL, f"losses differ from the 1-process run by {worst:.2e} relative"
    diff = _adapter_diff(one.adapter_dir, out / "adapter")
    print(f"max abs adapter difference: {diff:.2e}")
    assert diff <= ADAPTER_ABS, f"adapter differs from the 1-process run by {diff:.2e}"


def test_two_ranks_train_like_one_process_on_disjoint_shards(project, one_process, capfd) -> None:
    params_file, model_dir, data, new_run = project
    one, one_out = one_process
    run_dir = new_run("two")
    t0 = time.monotonic()
    launch(load_params(params_file, TWO), run_dir)
    wall = time.monotonic() - t0
    out = _phase_dir(run_dir)
    logged = capfd.readouterr().out
    summary = json.loads((out / "train_summary.json").read_text())
    print(f"2 ranks: {wall:.1f} s launch wall, {summary['train_seconds']} s training; 1 process: "
          f"{one.summary['train_seconds']} s training")  # fmt: skip
    assert summary["processes"] == 2 and summary["global_batch"] == one.summary["global_batch"] == 4
    _check_like_one_process(one, out, range(1, STEPS + 1))
    # one manifest, finished by rank 0; one checkpoint series holding each rank's random state
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["metrics"]["processes"] == 2
    finished = [
        ln for ln in logged.splitlines() if "arabic_r1.manifest: phase 04_moe_lora_sft complete" in ln
    ]
    assert len(finished) == 1 and " rank0 " in finished[0], finished
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir())
    assert ckpts == [f"checkpoint-{n}" for n in (STEPS - SAVE, STEPS)]  # save_total_limit 2
    for c in ckpts:
        assert sorted(p.name for p in (out / "checkpoints" / c).glob("rng_state*")) == [
            "rng_state_0.pth", "rng_state_1.pth"]  # fmt: skip
    # every step: the ranks' examples are disjoint and together the 1-process step's batch; every epoch: the dataset
    tok_ids = {
        example_digest(assistant_mask(_tokenizer(model_dir), r["messages"])[0]) for r in one_rows(data)
    }
    ranks, ref = _shards(out), _by_step(_shards(one_out)[0])
    assert set(ranks) == {0, 1}
    r0, r1 = _by_step(ranks[0]), _by_step(ranks[1])
    for step in range(1, STEPS + 1):
        assert not set(r0[step]) & set(r1[step]), f"step {step}: both ranks trained on the same example"
        assert r0[step] + r1[step] == ref[step], f"step {step}: not the 1-process batch"
    for epoch in (range(1, 7), range(7, 13)):
        seen = sum((r0[s] + r1[s] for s in epoch), Counter())
        assert set(seen) == tok_ids and set(seen.values()) == {1}, "an epoch is not the dataset once"


def one_rows(data: Path) -> list[dict]:
    return [json.loads(x) for x in data.read_text(encoding="utf-8").splitlines()]


def _tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _ranks_of(pid: int) -> dict[int, psutil.Process]:
    found = {}
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if "arabic_r1.train" in p.cmdline() and "RANK" in p.environ():
                found[int(p.environ()["RANK"])] = p
        except psutil.Error:
            continue
    return found


def test_a_killed_rank_fails_naming_it_and_the_resume_continues_with_both_ranks(project, one_process) -> None:
    params_file, model_dir, data, new_run = project
    one, _ = one_process
    run_dir, params = new_run("killed"), load_params(params_file, TWO)
    out = _phase_dir(run_dir)
    failure: list[BaseException] = []

    def first() -> None:
        try:
            launch(params, run_dir)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            failure.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    deadline = time.monotonic() + 240
    while (
        time.monotonic() < deadline
        and not (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()
    ):
        time.sleep(0.02)
    victim = _ranks_of(os.getpid()).get(1)
    assert victim is not None, "rank 1 not found"
    victim.send_signal(signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive()
    assert failure and isinstance(failure[0], LaunchFailed), failure
    print(failure[0])
    assert "rank 1 of 2 (local rank 1) was killed by SIGKILL" in str(failure[0]), str(failure[0])
    assert not (out / "adapter").exists(), "the run ended before the kill"
    assert not _ranks_of(os.getpid()), "orphaned ranks"
    assert not [p for p in psutil.Process().children(recursive=True) if "arabic_r1.run_owner" in p.cmdline()]

    launch(params, run_dir)
    summary = json.loads((out / "train_summary.json").read_text())
    resumed = int(Path(summary["resumed_from"]).name.split("-")[1])
    assert summary["steps"] == STEPS and summary["processes"] == 2 and resumed >= 4, summary
    _check_like_one_process(one, out, range(1, STEPS + 1))
    r0, r1 = (_by_step(rows) for rows in _shards(out).values())
    assert sorted(r0) == sorted(r1) == list(range(1, STEPS + 1)), "each step recorded once per rank"


def test_every_rank_checks_the_world_size(project, monkeypatch) -> None:
    """A 1-process start of a 2-process launch (``python -m arabic_r1.train`` alone, ``accelerate launch --cpu``,
    a MULTI_CPU config) stops before loading anything instead of training with half the global batch."""
    params_file, model_dir, data, new_run = project
    run_dir = new_run("alone")
    argv = ["--params", str(params_file), "--run-dir", str(run_dir), *sum((["-o", o] for o in TWO), [])]
    with pytest.raises(
        TrainSetupError, match=r"asks for 2 processes .* WORLD_SIZE=1: start it through the phase"
    ):
        main(argv)
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(TrainSetupError, match="WORLD_SIZE=3"):
        main(argv)


def test_the_runner_launches_the_ranks_and_streams_their_log(project, one_process) -> None:
    """``arabic-r1 run 04`` with ``train.launcher: torchrun``: notebook 04 starts the ranks itself."""
    from arabic_r1.params import REPO_DIR
    from arabic_r1.pipeline import run_phase

    params_file, model_dir, data, new_run = project
    run_dir = new_run("runner")
    summary = run_phase(
        load_params(params_file, TWO), "04", run_dir=run_dir, notebooks_dir=REPO_DIR / "notebooks"
    )
    assert [r.action for r in summary.results] == ["ran"]
    executed = (run_dir / "notebooks" / "04_moe_lora_sft.ipynb").read_text(encoding="utf-8")
    assert (
        "rank1 INFO" in executed
        and "rank0 INFO arabic_r1.manifest: phase 04_moe_lora_sft complete" in executed
    )
    _check_like_one_process(one_process[0], _phase_dir(run_dir), range(1, STEPS + 1))


def test_a_checkpoint_of_two_ranks_needs_each_ranks_random_state(one_process, tmp_path: Path) -> None:
    """Each rank writes its own rng_state_R.pth, so rank 0's trainer_state.json can be on disk while a killed
    rank's file is not: such a checkpoint is incomplete for 2 ranks and moved aside."""
    import shutil

    from arabic_r1.checkpoints import checkpoint_problem, newest_complete_checkpoint

    _, one_out = one_process
    ckpts = tmp_path / "checkpoints"
    for n in (2, 4):
        c = ckpts / f"checkpoint-{n}"
        shutil.copytree(one_out / "checkpoints" / f"checkpoint-{STEPS}", c)
        (c / "rng_state.pth").rename(c / "rng_state_0.pth")
        if n == 2:
            shutil.copy(c / "rng_state_0.pth", c / "rng_state_1.pth")
    assert checkpoint_problem(ckpts / "checkpoint-2", 2) is None
    assert checkpoint_problem(ckpts / "checkpoint-2", 1).startswith("rng_state.pth (the random state")
    assert checkpoint_problem(ckpts / "checkpoint-4", 2).startswith("rng_state_1.pth (the random state")
    assert Path(newest_complete_checkpoint(ckpts, 2)).name == "checkpoint-2"
    assert (ckpts / "broken-checkpoint-4").is_dir()


ZERO3 = ["train.launcher=accelerate_deepspeed_zero3", "train.num_gpus=2", "train.per_device_batch_size=1",
         "train.gradient_accumulation_steps=2", "train.merge=true"]  # fmt: skip


def test_zero3_on_two_cpu_ranks_saves_the_whole_adapter_and_merges_it(
    project, one_process, monkeypatch
) -> None:
    """DeepSpeed ZeRO-3 (the paper profile's launcher) runs on 2 CPU processes here: DeepSpeed's CPU accelerator,
    gloo. Every parameter is partitioned, the LoRA weights too: before, rank 0 alone called save_pretrained (an
    adapter of empty slices), the expert check read partitioned lora_B, and the accelerate config's bf16 clashed with
    the Trainer's precision. Now every rank takes part in saving (Trainer.save_model consolidates the trainable
    weights), the check gathers each lora_B, rank 0 merges the saved adapter into the base reloaded from disk - and
    the adapter and losses are the 1-process run's, the merged model the adapter's."""
    pytest.importorskip("deepspeed", reason="the dev extra installs deepspeed (pip install '.[dev]')")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arabic_r1.peft_compat import no_v4_moe_remap

    params_file, model_dir, data, new_run = project
    one, _ = one_process
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    run_dir = new_run("zero3")
    launch(load_params(params_file, ZERO3), run_dir)
    out = _phase_dir(run_dir)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["launcher"] == "accelerate_deepspeed_zero3"
    _check_like_one_process(one, out, range(1, STEPS + 1))
    experts = json.loads((out / "coverage.json").read_text())["experts"]
    assert experts["expert_adapters"] == 48 and experts["untouched"] == []
    tok = AutoTokenizer.from_pretrained(out / "merged")
    x = tok("ما عاصمة المغرب؟", return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    with no_v4_moe_remap(base):
        adapted = PeftModel.from_pretrained(base, out / "adapter")
    with torch.no_grad():
        gap = (
            (adapted(**x).logits - AutoModelForCausalLM.from_pretrained(out / "merged")(**x).logits)
            .abs()
            .max()
        )
    assert gap < 1e-4
