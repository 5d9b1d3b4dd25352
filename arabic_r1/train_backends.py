"""Phase 04's two backends behind one code path: the model loaded by Unsloth's ``FastLanguageModel`` or by
transformers (+ PEFT), the one LoRA config both get (:mod:`arabic_r1.moe_lora`), TRL's SFTConfig from the params, and
the SFTTrainer with the loss this project checks (next-token NLL over assistant tokens)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from arabic_r1.checkpoints import ShardLog
from arabic_r1.model_loading import (
    ModelLoadError,
    config_dict,
    load_plan,
    quantization_of,
)
from arabic_r1.moe_lora import (
    expert_patterns_quiet,
    lora_config,
    unsloth_peft_kwargs,
)
from arabic_r1.params import LAUNCHER_CONFIGS, SFT_OWNED, Params
from arabic_r1.peft_compat import no_v4_moe_remap
from arabic_r1.train_launch import Ranks, TrainSetupError

log = logging.getLogger(__name__)

CUDA_ONLY_MOE_BACKENDS = ("grouped_mm", "unsloth_triton", "sonic_moe")


# --------------------------------------------------------------------------------------------- model
def check_hardware_options(params: Params) -> None:
    """GPU-only options on a machine without one: an error, or an explicit logged fallback."""
    import importlib.util

    import torch

    if params.model.load_in_4bit and (
        not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None
    ):
        raise TrainSetupError(
            "model.load_in_4bit needs a CUDA GPU and bitsandbytes; set model.load_in_4bit=false on this machine"
        )
    backend = params.train.unsloth_moe_backend
    if (
        params.train.backend == "unsloth"
        and backend in CUDA_ONLY_MOE_BACKENDS
        and not torch.cuda.is_available()
    ):
        log.warning("train.unsloth_moe_backend=%s needs a GPU: using native_torch on this CPU", backend)
        os.environ["UNSLOTH_MOE_BACKEND"] = "native_torch"
    elif params.train.backend == "unsloth" and backend != "auto":
        os.environ["UNSLOTH_MOE_BACKEND"] = backend


def load_model_and_tokenizer(params: Params, model_path: str, precision: str):
    """The base model and tokenizer through the chosen backend (Unsloth imported only when chosen)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    if params.train.backend == "unsloth":
        import unsloth  # noqa: F401  - patches transformers/TRL; must come before the model is built
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=model_path,
            max_seq_length=params.model.max_seq_length,
            dtype=dtype,
            revision=params.model.revision,
            load_in_4bit=params.model.load_in_4bit,
            trust_remote_code=params.model.trust_remote_code,
        )
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        m = params.model
        try:
            plan = load_plan(
                "train",
                quantization_of(config_dict(model_path, m.revision)[0]),
                load_in_4bit=m.load_in_4bit,
                key="model.load_in_4bit",
                compute_dtype=str(dtype).removeprefix("torch."),
                cuda=torch.cuda.is_available(),
                local_rank=Ranks.from_env().local,
                placement="engine" if params.train.launcher in LAUNCHER_CONFIGS else "process",
            )
        except ModelLoadError as exc:
            raise TrainSetupError(str(exc)) from None
        for note in plan.notes:
            log.info("%s: %s", model_path, note)
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=dtype, trust_remote_code=m.trust_remote_code, revision=m.revision, **plan.kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(
            model_path, trust_remote_code=params.model.trust_remote_code, revision=params.model.revision
        )
    if params.train.chat_template is not None:
        tokenizer.chat_template = params.train.chat_template.read_text(encoding="utf-8")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def add_lora(params: Params, model: Any):
    """Wrap with LoRA (one config, both backends); returns the PEFT model."""
    lora = params.train.lora
    cfg = lora_config(model, lora)
    for family, v in lora.scales().items():
        log.info("LoRA %s: r=%d alpha=%g (update scale alpha/r = %g)", family, v["r"], v["alpha"], v["scale"])
    with no_v4_moe_remap(model), expert_patterns_quiet():
        if params.train.backend == "unsloth":
            from unsloth import FastLanguageModel

            checkpointing = "unsloth" if params.train.gradient_checkpointing else False
            return FastLanguageModel.get_peft_model(
                model,
                **unsloth_peft_kwargs(cfg),
                use_gradient_checkpointing=checkpointing,
                random_state=params.run.seed,
            )
        from peft import get_peft_model

        return get_peft_model(model, cfg)


def sft_config(params: Params, out_dir: Path, precision: str, max_length: int):
    import torch
    from trl import SFTConfig

    t = params.train
    owned = dict(
        output_dir=str(out_dir / "checkpoints"),
        max_steps=t.max_steps or -1,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # <1: a ratio (transformers 5)
        gradient_checkpointing=t.gradient_checkpointing and params.train.backend != "unsloth",
        gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        assistant_only_loss=True,
        packing=t.packing,
        max_length=max_length,
        logging_steps=1,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        seed=params.run.seed,
        data_seed=params.run.seed,
        report_to=list(t.report_to) or "none",
        run_name=params.run.name or params.profile,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not sys.stderr.isatty(),
    )
    assert owned.keys() == SFT_OWNED.keys(), "params.SFT_OWNED must list exactly the fields set here"
    try:
        return SFTConfig(**t.sft, **owned)
    except (TypeError, ValueError) as exc:
        raise TrainSetupError(
            f"TRL's SFTConfig rejected the training arguments ({exc}); check train.sft {t.sft}"
        ) from None


def next_token_nll(logits: Any, labels: Any, num_items: Any = None) -> Any:
    """Mean negative log-likelihood of each labelled token given the logits one position before it (labels
    -100 are masked: prompt and padding); ``num_items``: the token count to divide by (the whole accumulated
    batch's, as Trainer passes it), else this batch's labelled tokens."""
    import torch

    labels = labels[:, 1:]
    logits = logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return nll / (num_items if num_items is not None else (labels != -100).sum().clamp(min=1))


def make_trainer(shards: ShardLog | None = None, **kwargs):
    """TRL's SFTTrainer; where its Triton loss kernel cannot run (no GPU, or no triton), the same token-level NLL
    on assistant tokens is computed from the model's logits instead (TRL 1.15 has no CPU path of its own).
    With ``shards``, every micro-batch this rank trains on is recorded there."""
    import torch
    from trl import SFTTrainer
    from trl.trainer import utils as trl_utils

    base = SFTTrainer if torch.cuda.is_available() and trl_utils._ChunkedLogProbFunction is not None else None

    class PortableSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(
                **{k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
            )
            loss = next_token_nll(outputs.logits, inputs["labels"], num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                # as in Trainer.compute_loss and TRL's: num_items_in_batch counts the tokens of every rank and DDP
                # averages the ranks' gradients, so W ranks would otherwise step W times too short
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

        def _load_optimizer_and_scheduler(self, checkpoint):
            # With world_size > 1 Trainer loads the optimizer state onto args.device, which accelerate names
            # cpu:<local rank> on a CPU, and torch.load cannot map to that: on a CPU, load onto the one CPU device
            if checkpoint is None or self.args.device.type != "cpu":
                return super()._load_optimizer_and_scheduler(checkpoint)
            ckpt = Path(checkpoint)
            self.optimizer.load_state_dict(
                torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
            )
            self.lr_scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))

    base = base or PortableSFTTrainer
    if shards is None:
        return base(**kwargs)

    class RecordingTrainer(base):  # type: ignore[misc, valid-type]
        def training_step(self, model, inputs, num_items_in_batch=None):
            shards.record(self.state.global_step + 1, inputs)
            return super().training_step(model, inputs, num_items_in_batch)

    return RecordingTrainer(**kwargs)
