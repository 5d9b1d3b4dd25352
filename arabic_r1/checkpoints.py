"""Phase 04's checkpoints and resume: what a complete checkpoint holds, the newest complete one, the key a resume
must match (params, data, base model), checkpoints on time as well as on steps, and which examples each rank saw."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arabic_r1.digests import file_digest, text_digest
from arabic_r1.jsonl import append_jsonl, read_jsonl, write_json_atomic, write_jsonl
from arabic_r1.params import Params
from arabic_r1.peft_compat import no_v4_moe_remap
from arabic_r1.train_launch import from_rank0

log = logging.getLogger(__name__)

RESUME_KEY_FILE = "resume_key.json"


def resume_key(params: Params, examples_path: Path, model_path: str) -> dict[str, str]:
    """What a checkpoint is valid for: a notebook re-run after a change of LoRA rank, data or base model must not
    resume the old optimizer state (the runner would re-run the phase; an interactive re-run reaches here too)."""

    return {
        "params": params.section_hash("model", "train", "run.seed"),
        "examples": file_digest(examples_path),
        "model": str(model_path),
    }


RNG_STATE = "the random state (dropout, data order)"
CHECKPOINT_FILES = {  # what Trainer writes into checkpoint-N (adapter first, trainer_state.json last); any one
    # pattern of a row will do: DeepSpeed keeps the optimizer in global_step*/, FSDP in optimizer_0/. The random
    # state is per rank: W > 1 ranks each write rng_state_R.pth, and every one is needed (rng_files)
    "the LoRA weights": ("adapter_model.safetensors",),
    "the LoRA config": ("adapter_config.json",),
    "the optimizer state (without it a resume diverges from the uninterrupted run)": (
        "optimizer.pt", "optimizer.bin", "global_step*", "optimizer_0"),
    "the learning-rate schedule": ("scheduler.pt",),
    RNG_STATE: ("rng_state.pth",),
    "the step count and log history": ("trainer_state.json",),
}  # fmt: skip


def _torn(f: Path) -> str | None:
    """Why a checkpoint file is cut short, read from its own index (safetensors header, torch's zip directory,
    JSON) without loading a tensor; None when it reads."""
    import zipfile

    from safetensors import safe_open

    if f.is_dir():
        return None if any(f.iterdir()) else "is an empty folder"
    if f.stat().st_size == 0:
        return "is empty"
    try:
        if f.suffix == ".safetensors":
            with safe_open(str(f), "pt") as st:
                st.keys()
        elif f.suffix in (".pt", ".pth", ".bin"):
            if not zipfile.is_zipfile(f):
                return "is cut short (no complete torch archive)"
        elif f.name == "trainer_state.json":
            if not isinstance(json.loads(f.read_text(encoding="utf-8")).get("global_step"), int):
                return "has no global_step"
        elif f.suffix == ".json":
            json.loads(f.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - whatever the reader says, the file does not read
        return f"does not read ({str(exc)[:100]})"
    return None


def rng_files(world_size: int) -> list[str]:
    """The random-state files a checkpoint of ``world_size`` ranks holds: Trainer writes one per rank, each rank its
    own, so rank 0's trainer_state.json can be on disk while a killed rank's file is not."""
    return ["rng_state.pth"] if world_size == 1 else [f"rng_state_{r}.pth" for r in range(world_size)]


def _required_files(world_size: int) -> list[tuple[str, tuple[str, ...]]]:
    """(what, patterns) a complete checkpoint has, one file of each; the random state once per rank."""
    rows = []
    for what, patterns in CHECKPOINT_FILES.items():
        rows += [(what, (f,)) for f in rng_files(world_size)] if what == RNG_STATE else [(what, patterns)]
    return rows


def checkpoint_problem(checkpoint: Path, world_size: int = 1) -> str | None:
    """Why ``checkpoint`` cannot be resumed exactly by ``world_size`` ranks (a part missing or torn: a kill while
    Trainer wrote it), or None when it is complete."""
    for what, patterns in _required_files(world_size):
        found = [f for pattern in patterns for f in sorted(checkpoint.glob(pattern))]
        if not found:
            return f"{patterns[0]} ({what}) is missing"
        torn = _torn(found[0])
        if torn:
            return f"{found[0].name} ({what}) {torn}"
    return None


def checkpoint_step(checkpoint: str | Path | None) -> int:
    """The step of ``checkpoint-N`` (0 for none: training from the start)."""
    return int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0


def newest_complete_checkpoint(ckpt_dir: Path, world_size: int = 1) -> str | None:
    """The newest ``checkpoint-N`` that ``world_size`` ranks resume exactly. Newer incomplete ones are moved aside to
    ``broken-checkpoint-N`` (kept for inspection, never picked by a resume or by Trainer's rotation), saying why.
    Under a launch, rank 0 alone calls this (it renames folders)."""
    found = sorted(
        (p for p in Path(ckpt_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=checkpoint_step,
        reverse=True,
    )
    for ckpt in found:
        problem = checkpoint_problem(ckpt, world_size)
        if problem is None:
            return str(ckpt)
        aside = ckpt.with_name(f"broken-{ckpt.name}")
        shutil.rmtree(aside, ignore_errors=True)
        ckpt.rename(aside)
        log.warning("checkpoint %s skipped (moved to %s): %s", ckpt.name, aside.name, problem)
    return None


def finished(checkpoint: str | Path) -> bool:
    """The checkpoint is the last step of its schedule (Trainer would take one more step if resumed from it)."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    return state["global_step"] >= state["max_steps"] > 0


def load_finished(trainer: Any, model: Any, checkpoint: str | Path) -> None:
    """Adapter weights and trainer state of a finished checkpoint, without training."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState

    with no_v4_moe_remap(model):
        set_peft_model_state_dict(model, load_file(str(Path(checkpoint) / "adapter_model.safetensors")))
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    log.info("training already finished at %s: reusing it", Path(checkpoint).name)


def save_on_time(minutes: float):
    """A TrainerCallback asking for a checkpoint once ``minutes`` of training passed since the last one, on top of
    ``save_steps``: on a slow or busy machine, or a Colab session that disconnects, steps-based saving alone can
    leave hours unsaved. Rank 0's clock decides for every rank (a save is collective under a launch)."""
    from transformers import TrainerCallback

    class _SaveOnTime(TrainerCallback):
        def __init__(self):
            self.last = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            due = time.monotonic() - self.last >= minutes * 60
            if from_rank0(due):
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            self.last = time.monotonic()

    return _SaveOnTime()


SHARDS_DIR = "data_shards"


def example_digest(input_ids: Sequence[int]) -> str:
    """One example as the model saw it (its token ids, padding stripped), comparable across ranks and runs."""
    return text_digest(",".join(map(str, input_ids)))


class ShardLog:
    """Which examples this rank trained on: one JSON line per micro-batch, ``{"step", "examples": [digest]}``, in
    ``data_shards/rank<R>.jsonl``; the proof that the ranks' shards are disjoint and together the dataset."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def keep_until(self, step: int) -> None:
        """Forget the micro-batches after ``step`` (a resume from checkpoint-``step`` trains them again)."""
        rows = read_jsonl(self.path, repair=True) if self.path.exists() else []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(self.path, [r for r in rows if r["step"] <= step])

    def record(self, step: int, inputs: dict[str, Any]) -> None:
        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
        rows = ids if mask is None else [row[m.bool()] for row, m in zip(ids, mask, strict=True)]
        append_jsonl(self.path, [{"step": step, "examples": [example_digest(r.tolist()) for r in rows]}])


def resume_point(out_dir: Path, key: dict[str, str], world_size: int, resume: bool = True) -> str | None:
    """The checkpoint to resume (rank 0 decides; it moves broken ones aside): the newest complete one made with the
    same params, data and model, or None. The train log and shard records keep their rows up to the checkpoint:
    the resumed steps append after them."""
    ckpt_dir = out_dir / "checkpoints"
    last = newest_complete_checkpoint(ckpt_dir, world_size) if resume and ckpt_dir.is_dir() else None
    stamp = ckpt_dir / RESUME_KEY_FILE
    if last is not None and (not stamp.is_file() or json.loads(stamp.read_text(encoding="utf-8")) != key):
        log.warning("checkpoints in %s were made with other params or data: starting over", ckpt_dir)
        shutil.rmtree(ckpt_dir)
        last = None
    if last is None:
        shutil.rmtree(out_dir / SHARDS_DIR, ignore_errors=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stamp, key, indent=None)
    train_log = out_dir / "train_log.jsonl"
    step = checkpoint_step(last)
    rows = read_jsonl(train_log, repair=True) if train_log.exists() else []
    write_jsonl(train_log, [r for r in rows if r["step"] <= step])
    return last
