"""Params of phase 04: LoRA by parameter family (rank and alpha per family), TRL's SFTConfig pass-through and the
keys phase 04 owns, the launcher."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from arabic_r1.params_types import (
    REPO_DIR,
    PositiveFloat,
    PositiveInt,
    Section,
    Share,
    Steps,
    at_most,
    resolve_path,
)

LORA_FAMILIES = ("attention", "routed_experts", "shared_experts", "dense_mlp")


class FamilyLora(Section):
    """One family's own rank and alpha: both, since alpha / r is the update scale the paper reports."""

    r: PositiveInt
    alpha: PositiveFloat


class LoraParams(Section):
    """LoRA by parameter family. The paper reports "rank 64, scaling 8"; this project reads scaling as
    alpha / r (the factor LoRA multiplies its update by), so the paper profile sets r=64, alpha=512."""

    r: PositiveInt = 16
    alpha: PositiveFloat = 32.0
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    targets: list[Literal[LORA_FAMILIES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(LORA_FAMILIES),
        min_length=1,
        description="families that must get adapters; one the architecture lacks is an error (e.g. Mixtral: no shared experts)",
    )
    per_family: dict[Literal[LORA_FAMILIES], FamilyLora] = Field(  # type: ignore[valid-type]
        default_factory=dict,
        description="a family's own rank and alpha (PEFT rank_pattern / alpha_pattern), e.g. routed_experts: "
        "{r: 8, alpha: 16}; the others take r and alpha",
    )
    train_router: bool = Field(
        False, description="train the routers in full (PEFT modules_to_save); frozen by default"
    )

    def rank_of(self, family: str) -> int:
        return self.per_family[family].r if family in self.per_family else self.r

    def alpha_of(self, family: str) -> float:
        return self.per_family[family].alpha if family in self.per_family else self.alpha

    def scales(self) -> dict[str, dict[str, float]]:
        """Rank, alpha and update scale alpha / r of every targeted family: what phase 04 prints and records."""
        return {
            f: {"r": self.rank_of(f), "alpha": self.alpha_of(f), "scale": self.alpha_of(f) / self.rank_of(f)}
            for f in self.targets
        }

    @model_validator(mode="after")
    def _families_targeted(self) -> LoraParams:
        untargeted = sorted(set(self.per_family) - set(self.targets))
        if untargeted:
            raise ValueError(f"per_family names families not in targets: {', '.join(untargeted)}")
        return self


# The SFTConfig fields phase 04 sets itself, and where their value comes from: ``train.sft`` may not set them, so
# that one key means one thing (train.sft.learning_rate beside train.learning_rate would be ambiguous).
SFT_OWNED = {
    "output_dir": "the phase folder (checkpoints/)", "max_steps": "train.max_steps", "num_train_epochs": "train.epochs",
    "per_device_train_batch_size": "train.per_device_batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps", "learning_rate": "train.learning_rate",
    "lr_scheduler_type": "train.lr_scheduler", "warmup_steps": "train.warmup_ratio",
    "gradient_checkpointing": "train.gradient_checkpointing", "gradient_checkpointing_kwargs": "arabic_r1 (non-reentrant)",
    "bf16": "train.precision", "fp16": "train.precision", "assistant_only_loss": "arabic_r1 (loss on the answer only)",
    "packing": "train.packing", "max_length": "model.max_seq_length", "logging_steps": "arabic_r1 (every step: train_log.jsonl)",
    "save_steps": "train.save_steps", "save_total_limit": "train.save_total_limit", "seed": "run.seed",
    "data_seed": "run.seed", "report_to": "train.report_to", "run_name": "run.name",
    "dataloader_num_workers": "arabic_r1 (0: the data is tokenized already)",
    "include_num_input_tokens_seen": "arabic_r1 (tokens/s in train_log.jsonl)", "use_cpu": "the machine (no CUDA: CPU)",
    "disable_tqdm": "arabic_r1 (bars only on a terminal)",
}  # fmt: skip


CONFIGS_DIR = (
    REPO_DIR / "configs" / "accelerate"
)  # the accelerate configs of the train.launcher values that use one
LAUNCHER_CONFIGS = {"accelerate_deepspeed_zero3": "deepspeed_zero3.yaml", "accelerate_fsdp": "fsdp.yaml"}


class TrainParams(Section):
    """Phase 04: MoE LoRA SFT on the verified traces."""

    backend: Literal["unsloth", "transformers"] = "transformers"
    lora: LoraParams = Field(default_factory=dict)  # type: ignore[arg-type]
    learning_rate: PositiveFloat = 2e-4
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    warmup_ratio: Share = 0.05
    epochs: Annotated[PositiveFloat, at_most(10**5, "more passes than any fine-tuning takes")] = 1.0
    max_steps: Steps | None = Field(None, description="overrides epochs")
    per_device_batch_size: PositiveInt = 2
    gradient_accumulation_steps: PositiveInt = 1
    gradient_checkpointing: bool = True
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 where supported, else fp32"
    )
    packing: bool = False
    save_steps: Steps = Field(
        50, description="checkpoint every N optimizer steps (a killed run resumes from the last)"
    )
    save_minutes: PositiveFloat | None = Field(
        None,
        description="also checkpoint after this many minutes of training since the last checkpoint, so a killed, "
        "timed-out or disconnected run loses at most that much on any machine speed",
    )
    save_total_limit: PositiveInt = 2
    chat_template: Path | None = Field(
        None, description="a Jinja chat template with {% generation %} markers, if the model's has none"
    )
    unsloth_moe_backend: Literal["auto", "grouped_mm", "unsloth_triton", "native_torch", "sonic_moe"] = "auto"
    merge: bool = Field(True, description="also save the merged model (what phase 05 evaluates)")
    probe_texts: PositiveInt = Field(
        32, description="Arabic and English probe texts for the expert-routing statistics"
    )
    launcher: Literal["single", "torchrun", "accelerate_deepspeed_zero3", "accelerate_fsdp"] = Field(
        "single",
        description="single: train in the notebook's process; torchrun: DDP, one full model copy per process (gloo on "
        "a CPU, nccl on GPUs); accelerate_*: ZeRO-3 / FSDP with configs/accelerate/. Phase 04 starts the launch itself",
    )
    num_gpus: PositiveInt = Field(
        1, description="processes per machine: one per GPU (torchrun on a CPU: CPU processes)"
    )
    num_machines: PositiveInt = 1
    report_to: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list,
        description="experiment trackers, through transformers' own callbacks: TensorBoard event files in the phase "
        "folder's tensorboard/; W&B offline in the phase folder unless WANDB_MODE=online is exported",
    )
    sft: dict[str, Any] = Field(
        default_factory=dict,
        description="any other field of TRL's SFTConfig (e.g. weight_decay, max_grad_norm, optim), passed through as is; "
        "fields this section already sets are rejected with the key to use instead",
    )

    @field_validator("sft")
    @classmethod
    def _sft_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            return v
        from trl import SFTConfig  # only when train.sft is set: TRL takes seconds to import

        known = {f.name for f in dataclasses.fields(SFTConfig)}
        problems = []
        for key in v:
            if key in SFT_OWNED:
                problems.append(f"sft.{key} is set by arabic_r1 from {SFT_OWNED[key]}")
            elif key not in known:
                close = difflib.get_close_matches(key, known, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                problems.append(f"sft.{key} is not a field of TRL's SFTConfig{hint}")
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @property
    def processes(self) -> int:
        """The world size the launch starts (1 for single), what every rank checks WORLD_SIZE against."""
        return 1 if self.launcher == "single" else self.num_gpus * self.num_machines

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step: per-device batch x processes x accumulation (what the loss is averaged over)."""
        return self.per_device_batch_size * self.processes * self.gradient_accumulation_steps

    @field_validator("chat_template", mode="before")
    @classmethod
    def _template(cls, v: Any, info: ValidationInfo) -> Path | None:
        return resolve_path(v, info, "chat template file")
