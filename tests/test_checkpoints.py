"""Checkpoint completeness and resume on checkpoint folders written by hand in Trainer's formats (safetensors, torch
archives, JSON): every missing or torn part named, the newest complete one chosen, a changed key starting over.
tests/test_train.py checks the same against checkpoints a real training wrote (and kills)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from arabic_r1 import checkpoints as ck
from arabic_r1.jsonl import read_jsonl, write_jsonl
from arabic_r1.params_loading import load_params


def _checkpoint(root: Path, step: int, world_size: int = 1, optimizer: str = "optimizer.pt") -> Path:
    c = root / f"checkpoint-{step}"
    c.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(c / "adapter_model.safetensors"))
    (c / "adapter_config.json").write_text('{"r": 2}')
    if optimizer.endswith(".pt") or optimizer.endswith(".bin"):
        torch.save({"state": 1}, c / optimizer)
    else:  # DeepSpeed's global_step*/ or FSDP's optimizer_0/: a folder
        (c / optimizer).mkdir()
        (c / optimizer / "shard").write_text("x")
    torch.save({"lr": 1}, c / "scheduler.pt")
    for f in ck.rng_files(world_size):
        torch.save({"rng": 1}, c / f)
    (c / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 4}))
    return c


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {  # what a kill while Trainer writes can leave -> the reason given
    "adapter missing": (lambda c: (c / "adapter_model.safetensors").unlink(),
                        "adapter_model.safetensors (the LoRA weights) is missing"),
    "adapter torn": (lambda c: _truncate(c / "adapter_model.safetensors"),
                     "adapter_model.safetensors (the LoRA weights) does not read ("),
    "config torn": (lambda c: (c / "adapter_config.json").write_text('{"r": '),
                    "adapter_config.json (the LoRA config) does not read ("),
    "optimizer missing": (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt (the optimizer state (without it a "
                          "resume diverges from the uninterrupted run)) is missing"),
    "optimizer torn": (lambda c: _truncate(c / "optimizer.pt"), "optimizer.pt (the optimizer state (without it a "
                       "resume diverges from the uninterrupted run)) is cut short (no complete torch archive)"),
    "optimizer empty": (lambda c: (c / "optimizer.pt").write_bytes(b""), "optimizer.pt (the optimizer state (without "
                        "it a resume diverges from the uninterrupted run)) is empty"),
    "scheduler missing": (lambda c: (c / "scheduler.pt").unlink(), "scheduler.pt (the learning-rate schedule) is missing"),
    "rng torn": (lambda c: _truncate(c / "rng_state.pth"),
                 "rng_state.pth (the random state (dropout, data order)) is cut short (no complete torch archive)"),
    "state missing": (lambda c: (c / "trainer_state.json").unlink(),
                      "trainer_state.json (the step count and log history) is missing"),
    "state without step": (lambda c: (c / "trainer_state.json").write_text('{"max_steps": 4}'),
                           "trainer_state.json (the step count and log history) has no global_step"),
    "state torn": (lambda c: (c / "trainer_state.json").write_text('{"global_st'),
                   "trainer_state.json (the step count and log history) does not read ("),
}  # fmt: skip


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_each_missing_or_torn_part_is_named(tmp_path: Path, damage: str) -> None:
    c = _checkpoint(tmp_path, 2)
    assert ck.checkpoint_problem(c) is None
    do, reason = DAMAGE[damage]
    do(c)
    assert ck.checkpoint_problem(c).startswith(reason), ck.checkpoint_problem(c)


def test_optimizer_layouts_and_per_rank_random_state(tmp_path: Path) -> None:
    for optimizer in ("optimizer.bin", "global_step4", "optimizer_0"):
        assert ck.checkpoint_problem(_checkpoint(tmp_path / optimizer, 4, optimizer=optimizer)) is None
    empty = _checkpoint(tmp_path / "empty", 4, optimizer="optimizer_0")
    (empty / "optimizer_0" / "shard").unlink()
    assert ck.checkpoint_problem(empty) == ("optimizer_0 (the optimizer state (without it a resume diverges from the "
                                            "uninterrupted run)) is an empty folder")  # fmt: skip
    assert ck.rng_files(1) == ["rng_state.pth"] and ck.rng_files(3) == [
        f"rng_state_{r}.pth" for r in range(3)
    ]
    two = _checkpoint(tmp_path / "two", 2, world_size=2)
    assert ck.checkpoint_problem(two, world_size=2) is None
    assert (
        ck.checkpoint_problem(two, world_size=3)
        == "rng_state_2.pth (the random state (dropout, data order)) is missing"
    )
    assert ck.checkpoint_problem(two) == "rng_state.pth (the random state (dropout, data order)) is missing"


def test_the_newest_complete_checkpoint_wins_and_broken_ones_are_moved_aside(tmp_path: Path, caplog) -> None:
    root = tmp_path / "checkpoints"
    for step in (2, 4, 10, 12):
        _checkpoint(root, step)
    (root / "checkpoint-12" / "scheduler.pt").unlink()
    _truncate(root / "checkpoint-10" / "optimizer.pt")
    (root / "checkpoint-tmp").mkdir()  # not a step: never considered
    (root / "checkpoint-20").write_text("a file, not a checkpoint")
    (root / "broken-checkpoint-12").mkdir()  # an earlier broken copy is replaced
    (root / "broken-checkpoint-12" / "stale").write_text("from an earlier resume")
    with caplog.at_level(logging.WARNING, logger="arabic_r1.checkpoints"):
        assert ck.newest_complete_checkpoint(root) == str(
            root / "checkpoint-4"
        )  # 10 < 12 numerically, not "10" < "4"
    assert sorted(p.name for p in root.iterdir()) == [
        "broken-checkpoint-10", "broken-checkpoint-12", "checkpoint-2", "checkpoint-20", "checkpoint-4", "checkpoint-tmp"
    ]  # fmt: skip
    aside = root / "broken-checkpoint-12"
    assert not (aside / "scheduler.pt").exists() and (aside / "trainer_state.json").exists()
    assert not (aside / "stale").exists()
    assert caplog.messages == [
        "checkpoint checkpoint-12 skipped (moved to broken-checkpoint-12): scheduler.pt (the learning-rate schedule) "
        "is missing",
        "checkpoint checkpoint-10 skipped (moved to broken-checkpoint-10): optimizer.pt (the optimizer state (without "
        "it a resume diverges from the uninterrupted run)) is cut short (no complete torch archive)",
    ]
    two = tmp_path / "two"
    _checkpoint(two, 8, world_size=2)
    assert ck.newest_complete_checkpoint(two, world_size=2) == str(
        two / "checkpoint-8"
    )  # every rank's random state
    assert ck.newest_complete_checkpoint(tmp_path / "none") is None
    assert (
        ck.checkpoint_step(root / "checkpoint-4") == 4
        and ck.checkpoint_step(None) == 0
        and ck.checkpoint_step("") == 0
    )


def test_finished_is_the_last_step_of_the_schedule(tmp_path: Path) -> None:
    c = _checkpoint(tmp_path, 4)
    assert ck.finished(c) and ck.finished(str(c))
    for state, done in [({"global_step": 3, "max_steps": 4}, False), ({"global_step": 5, "max_steps": 4}, True),
                        ({"global_step": 1, "max_steps": 1}, True), ({"global_step": 0, "max_steps": 0}, False)]:  # fmt: skip
        (c / "trainer_state.json").write_text(json.dumps(state))
        assert ck.finished(c) is done, state


def test_resume_point_resumes_the_same_key_and_starts_over_on_another(tmp_path: Path, caplog) -> None:
    out = tmp_path / "04_moe_lora_sft"
    key = {"params": "p", "examples": "e", "model": "m"}
    assert ck.resume_point(out, key, 1) is None  # nothing yet: the folder and stamp are made
    assert json.loads((out / "checkpoints" / ck.RESUME_KEY_FILE).read_text()) == key
    for step in (2, 4):
        _checkpoint(out / "checkpoints", step)
    write_jsonl(out / "train_log.jsonl", [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3, 4, 5)])
    (out / ck.SHARDS_DIR).mkdir()
    shards = ck.ShardLog(out / ck.SHARDS_DIR / "rank0.jsonl")
    for s in (1, 2, 3):
        shards.record(s, {"input_ids": torch.tensor([[s, 7]])})
    (out / "checkpoints" / "checkpoint-4" / "optimizer.pt").unlink()
    assert ck.resume_point(out, key, 1) == str(out / "checkpoints" / "checkpoint-2")
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [
        1,
        2,
    ]  # the resumed steps append after 2
    assert (out / ck.SHARDS_DIR).is_dir()  # kept on a resume; ShardLog.keep_until trims it
    assert ck.resume_point(out, key, 1, resume=False) is None  # asked not to resume: nothing picked
    assert not (out / ck.SHARDS_DIR).exists() and read_jsonl(out / "train_log.jsonl") == []
    _checkpoint(out / "checkpoints", 6)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="arabic_r1.checkpoints"):
        assert ck.resume_point(out, key | {"params": "q"}, 1) is None
    assert caplog.messages == [
        f"checkpoints in {out / 'checkpoints'} were made with other params or data: starting over"
    ]
    assert list((out / "checkpoints").iterdir()) == [out / "checkpoints" / ck.RESUME_KEY_FILE]
    assert json.loads((out / "checkpoints" / ck.RESUME_KEY_FILE).read_text()) == key | {"params": "q"}
    _checkpoint(out / "checkpoints", 8, world_size=2)
    assert ck.resume_point(out, key | {"params": "q"}, 2) == str(
        out / "checkpoints" / "checkpoint-8"
    )  # two ranks
    _checkpoint(out / "checkpoints", 2)
    (
        out / "checkpoints" / ck.RESUME_KEY_FILE
    ).unlink()  # checkpoints without a stamp: unknown origin, start over
    assert ck.resume_point(out, key, 1) is None and not (out / "checkpoints" / "checkpoint-2").exists()


def test_the_resume_key_and_the_examples_each_rank_saw(tmp_path: Path, project: Path) -> None:
    f = project / "params" / "p.yaml"
    f.write_text("data: {token_budget: 1}\n")
    params = load_params(f)
    examples = tmp_path / "ex.jsonl"
    examples.write_text('{"a": 1}\n')
    key = ck.resume_key(params, examples, "org/model")
    assert key == {"params": params.section_hash("model", "train", "run.seed"),
                   "examples": ck.file_digest(examples), "model": "org/model"}  # fmt: skip
    assert ck.resume_key(load_params(f, ["train.lora.r=4"]), examples, "org/model")["params"] != key["params"]
    assert ck.resume_key(load_params(f, ["run.seed=7"]), examples, "org/model")["params"] != key["params"]
    log = ck.ShardLog(tmp_path / "run" / "shards" / "rank1.jsonl")
    log.keep_until(0)  # no file yet: creates the folder and an empty log
    ids = torch.tensor([[5, 6, 0], [7, 0, 0]])
    log.record(1, {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0]])})
    log.record(2, {"input_ids": torch.tensor([[9, 9]])})
    rows = read_jsonl(log.path)
    assert rows == [{"step": 1, "examples": [ck.example_digest([5, 6]), ck.example_digest([7])]},
                    {"step": 2, "examples": [ck.example_digest([9, 9])]}]  # fmt: skip
    assert ck.example_digest([5, 6]) != ck.example_digest([56]) != ck.example_digest([5, 6, 0])
    log.keep_until(1)
    assert [r["step"] for r in read_jsonl(log.path)] == [1]


def test_a_checkpoint_is_asked_for_once_the_minutes_pass(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    cb = ck.save_on_time(2)
    control = SimpleNamespace(should_save=False)
    now[0] += 119
    cb.on_step_end(None, None, control)
    assert control.should_save is False
    now[0] += 1
    cb.on_step_end(None, None, control)
    assert control.should_save is True
    cb.on_save(None, None, control)
    control.should_save = False
    now[0] += 60
    cb.on_step_end(None, None, control)
    assert control.should_save is False  # the clock restarted at the save


def test_a_finished_checkpoint_is_loaded_without_training(tmp_path: Path, caplog) -> None:
    """The adapter weights of a finished checkpoint land in the PEFT model (every family, DeepSeek's shared experts
    and dense MLP included) and its trainer state replaces the trainer's."""
    from peft import get_peft_model, get_peft_model_state_dict

    from arabic_r1.moe_lora import expert_patterns_quiet, lora_config
    from arabic_r1.peft_compat import no_v4_moe_remap
    from arabic_r1.tiny_model import build_tiny_moe

    params = load_params(
        "smoke",
        [
            "model.family=deepseek_v3",
            "train.lora.targets=[attention, routed_experts, shared_experts, dense_mlp]",
        ],
    )
    model, _ = build_tiny_moe(params.model.family, params.model.tiny)
    with no_v4_moe_remap(model), expert_patterns_quiet():
        peft_model = get_peft_model(model, lora_config(model, params.train.lora))
    with no_v4_moe_remap(peft_model):
        state = get_peft_model_state_dict(peft_model)
    trained = {k: torch.full_like(v, 0.5) for k, v in state.items()}
    assert any("shared_experts" in k for k in trained)
    c = _checkpoint(tmp_path, 4)
    save_file(trained, str(c / "adapter_model.safetensors"))
    (c / "trainer_state.json").write_text(
        json.dumps({"global_step": 4, "max_steps": 4, "log_history": [{"loss": 1.5}]})
    )
    trainer = SimpleNamespace(state=None)
    with caplog.at_level(logging.INFO, logger="arabic_r1.checkpoints"):
        ck.load_finished(trainer, peft_model, c)
    with no_v4_moe_remap(peft_model):
        loaded = get_peft_model_state_dict(peft_model)
    assert loaded.keys() == trained.keys() and all(torch.equal(loaded[k], trained[k]) for k in trained)
    assert trainer.state.global_step == 4 and trainer.state.log_history == [{"loss": 1.5}]
    assert caplog.messages == ["training already finished at checkpoint-4: reusing it"]


def test_a_torn_file_says_what_its_reader_said(tmp_path: Path) -> None:
    """The reason quotes the reader's own error (at most 100 characters of it); a torn optimizer.bin (another
    layout's name) is caught like optimizer.pt."""
    c = _checkpoint(tmp_path / "bin", 2, optimizer="optimizer.bin")
    _truncate(c / "optimizer.bin")
    assert ck.checkpoint_problem(c).endswith("optimizer.bin (the optimizer state (without it a resume diverges from "
                                             "the uninterrupted run)) is cut short (no complete torch archive)")  # fmt: skip
    c = _checkpoint(tmp_path / "json", 2)
    (c / "adapter_config.json").write_text('{"r": ')
    try:
        json.loads('{"r": ')
    except json.JSONDecodeError as exc:
        said = str(exc)
    assert ck.checkpoint_problem(c) == f"adapter_config.json (the LoRA config) does not read ({said})"
    (c / "adapter_config.json").write_text('{"r": 2}')
    # a header whose JSON the reader rejects with a long message (a tensor entry that is no tensor)
    header = b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "' + b"x" * 150 + b'": 1}'
    (c / "adapter_model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    reason = ck.checkpoint_problem(c)
    inner = reason.split("does not read (", 1)[1][:-1]
    from safetensors import safe_open

    try:
        with safe_open(str(c / "adapter_model.safetensors"), "pt") as st:
            st.keys()
    except Exception as exc:  # noqa: BLE001 - the reader's own message, whatever its type
        assert inner == str(exc)[:100] and len(str(exc)) > 100
