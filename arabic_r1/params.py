"""The schema of a run: what a params file may contain, section by section, and :class:`Params`, the whole.

Config flows one way: YAML file (+ dotted ``-o key=value`` overrides, params_loading.py) -> :class:`Params` -> the
functions that need a section. Everything is checked before any work starts, so a typo in a 6-hour GPU profile
fails in the first second, not in hour five.

Relative paths in a params file resolve against the project root: the folder that holds the ``params/`` folder
the file lives in (for a params file elsewhere, the file's own folder).
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from arabic_r1.benchmarks import keys as benchmark_keys
from arabic_r1.benchmarks import spec as benchmark_spec
from arabic_r1.digests import json_digest
from arabic_r1.params_data import DataParams, DecontaminationParams, SourceParams
from arabic_r1.params_distill import DistillParams, VerifyParams
from arabic_r1.params_train import (
    CONFIGS_DIR,
    LAUNCHER_CONFIGS,
    SFT_OWNED,
    FamilyLora,
    LoraParams,
    TrainParams,
)
from arabic_r1.params_types import (
    EMBEDDED_MODEL,
    MAX_STEPS,
    MAX_TOKENS,
    PACKAGE_DIR,
    REPO_DIR,
    STEPS_BOUND,
    BenchmarkNames,
    NonNegInt,
    ParamsError,
    PositiveFloat,
    PositiveInt,
    Section,
    Tokens,
    project_root_for,
    resolve_path,
)

# defined in the section modules; importable from here, the schema's front
__all__ = [
    "CONFIGS_DIR",
    "DataParams",
    "DecontaminationParams",
    "DistillParams",
    "EMBEDDED_MODEL",
    "FamilyLora",
    "LAUNCHER_CONFIGS",
    "LoraParams",
    "MAX_STEPS",
    "MAX_TOKENS",
    "PACKAGE_DIR",
    "ParamsError",
    "REPO_DIR",
    "SFT_OWNED",
    "SourceParams",
    "VerifyParams",
    "project_root_for",
    "Params",
    "RunParams",
    "ModelParams",
    "TinyMoEParams",
    "TinyPretrainParams",
    "EvalParams",
    "ReportParams",
]


class RunParams(Section):
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="run folder name; default: the profile name",
    )
    root: Path = Field(Path("runs"), description="where run folders live")
    seed: NonNegInt = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    hardware: str | None = Field(
        None,
        pattern=r"^(\d+x)?[A-Za-z][A-Za-z0-9_-]*:\d+(\.\d+)?$",
        description="the machine the profile is written for, [COUNTx]GPU:GIB per GPU (T4:15, H100:80, 64xH100:80); what "
        "`arabic-r1 plan` and `preflight` judge it against. null: the machine it runs on",
    )
    torch_threads: PositiveInt | Literal["auto"] | None = Field(
        None,
        description="torch.set_num_threads; auto: the cores this process may use that other work is not keeping "
        "busy when the phase starts (a busy neighbour on a shared core slows torch's threads 4-12x), at most "
        "$OMP_NUM_THREADS when that is set; null: torch's own",
    )
    stall_timeout_s: PositiveInt = Field(
        1800,
        description="stop a notebook after this long with no new output and no CPU work in its processes (a hang); "
        "a slow or busy machine keeps working and is not stopped",
    )
    notebook_timeout_s: PositiveInt | None = Field(
        None, description="optional wall-clock cap per notebook; null: none (the stall limit still applies)"
    )
    kernel_startup_timeout_s: PositiveInt = 120

    @field_validator("root", mode="before")
    @classmethod
    def _root(cls, v: Any, info: ValidationInfo) -> Path:
        return resolve_path(v, info, "folder", must_exist=False)


class TinyPretrainParams(Section):
    """Phase 00's causal-LM pre-training of the embedded MoE on the package's plain text (0 steps: left random)."""

    steps: Annotated[NonNegInt, STEPS_BOUND] = 0
    learning_rate: PositiveFloat = 3e-3
    batch_size: PositiveInt = 16
    seq_length: Tokens = 128
    cache_dir: Path = Field(
        Path("runs/backbone_cache"),
        description="pre-trained backbones keyed by shape, seed, these params, corpus, code and versions",
        json_schema_extra={"not_an_input": True},
    )

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _cache(cls, v: Any, info: ValidationInfo) -> Path:
        return resolve_path(v, info, "backbone cache folder", must_exist=False)  # type: ignore[return-value]


class TinyMoEParams(Section):
    """Shape of the embedded MoE (used when ``model.name_or_path: embedded``) and its short pre-training."""

    num_layers: PositiveInt = 4
    hidden_size: PositiveInt = 128
    num_heads: PositiveInt = 4
    num_experts: PositiveInt = 8
    experts_per_token: PositiveInt = 2
    expert_intermediate_size: PositiveInt = 64
    dense_intermediate_size: PositiveInt = 256
    shared_experts: NonNegInt = Field(1, description="deepseek_v3 only")
    dense_layers: NonNegInt = Field(1, description="deepseek_v3 only: first_k_dense_replace")
    vocab_size: PositiveInt = 4096
    max_position_embeddings: Tokens = 2048
    pretrain: TinyPretrainParams = Field(default_factory=dict)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _shape(self) -> TinyMoEParams:
        if self.experts_per_token > self.num_experts:
            raise ValueError(
                f"experts_per_token ({self.experts_per_token}) must be <= num_experts ({self.num_experts})"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.dense_layers >= self.num_layers:
            raise ValueError(
                f"dense_layers ({self.dense_layers}) must be < num_layers ({self.num_layers}), or no layer is MoE"
            )
        if self.vocab_size < 512:
            raise ValueError("vocab_size must be >= 512 (256 byte symbols + special tokens + merges)")
        return self


class ModelParams(Section):
    name_or_path: str = Field(
        EMBEDDED_MODEL, description="'embedded', a hub id, or a local folder (starting with ./ ../ / or ~)"
    )
    family: Literal["deepseek_v3", "qwen3_moe", "mixtral", "gpt_oss"] = Field(
        "deepseek_v3", description="architecture family (the embedded tiny model is built in it)"
    )
    reasoning_format: Literal["think_tags", "harmony"] = Field(
        "think_tags",
        description="where the student keeps its reasoning: <think> block, or gpt-oss harmony channels",
    )
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_seq_length: Tokens = 1024
    load_in_4bit: bool = False
    bf16_copy: bool = Field(
        False,
        description="phase 00 writes a bf16 copy of an FP8 checkpoint (DeepSeek-R1) that phases 04-05 load: "
        "transformers can neither train FP8 nor dequantize DeepSeek's 128x128 blocks correctly (model_loading.py)",
    )
    trust_remote_code: bool = False
    tiny: TinyMoEParams = Field(default_factory=dict)  # type: ignore[arg-type]

    @field_validator("name_or_path")
    @classmethod
    def _local_must_exist(cls, v: str, info: ValidationInfo) -> str:
        if v.startswith(("./", "../", "/", "~")):
            return str(resolve_path(v, info, "local model folder"))
        return v

    @property
    def is_embedded(self) -> bool:
        return self.name_or_path == EMBEDDED_MODEL


class EvalParams(Section):
    """Phase 05: which models, which OALL v2 benchmarks (and where they are read from), which scorings."""

    models: list[str] = Field(
        default_factory=lambda: ["base", "finetuned"],
        min_length=1,
        description="'base' (phase 00's backbone), 'finetuned' (phase 04's merged model), or hub ids / local folders",
    )
    benchmarks: BenchmarkNames = Field(default_factory=lambda: list(benchmark_keys()), min_length=1)
    subsets: dict[str, list[str]] = Field(default_factory=dict, description="benchmark -> only these subsets")
    source: Literal["hub", "mirror"] = "hub"
    mirror_dir: Path | None = None
    scoring: list[Literal["loglikelihood", "reasoning"]] = Field(
        default_factory=lambda: ["loglikelihood"], min_length=1
    )
    max_samples_per_task: PositiveInt | None = Field(
        None, description="a partial run: not comparable with the leaderboard"
    )
    backend: Literal["transformers", "unsloth", "vllm"] = Field(
        "transformers",
        description="how models are loaded and generate: transformers (+ PEFT for adapters; CPU or GPUs), unsloth "
        "(FastLanguageModel on a GPU: an adapter on its base loaded as phase 04 loaded it), vllm (generation through "
        "vLLM, GPU; log-likelihoods still through lighteval's transformers model, whose vLLM model needs vllm<0.10.2)",
    )
    loglikelihood_chat_template: Literal["leaderboard", "on", "off"] = Field(
        "leaderboard",
        description="chat template around log-likelihood prompts: leaderboard (OALL v2: the tokenizer's template when "
        "it has one), on, off. A template that opens <think> itself scores the option right after it",
    )
    tensor_parallel_size: PositiveInt = Field(1, description="vLLM: GPUs per model")
    quantization: Literal["fp8"] | None = Field(
        None, description="vLLM: quantize weights on load (fp8 halves bf16)"
    )
    gpu_memory_utilization: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.9, description="vLLM: GPU memory share"
    )
    load_in_4bit: bool = Field(
        False, description="transformers: load models in 4-bit NF4 (bitsandbytes, CUDA) to fit a small GPU"
    )
    batch_size: PositiveInt = 8
    reasoning_max_new_tokens: Tokens = Field(
        1024, description="generation budget per item for reasoning scoring"
    )
    alrage_max_new_tokens: Tokens = 200
    judge: DistillParams | None = Field(
        None, description="ALRAGE judge (backend, teacher=model, base_url, ...); 'embedded' = the base model"
    )

    @field_validator("mirror_dir", mode="before")
    @classmethod
    def _mirror(cls, v: Any, info: ValidationInfo) -> Path | None:
        return resolve_path(v, info, "benchmark mirror folder")

    @model_validator(mode="after")
    def _mirror_needed(self) -> EvalParams:
        if self.source == "mirror" and self.mirror_dir is None:
            raise ValueError("source 'mirror' needs mirror_dir (a local folder in the hub layout)")
        unknown = sorted(set(self.subsets) - set(self.benchmarks))
        if unknown:
            raise ValueError(f"subsets given for benchmarks not in eval.benchmarks: {', '.join(unknown)}")
        if self.load_in_4bit and self.backend == "vllm":
            raise ValueError(
                "load_in_4bit is for the transformers and unsloth backends; vLLM quantizes with `quantization`"
            )
        judged = [b for b in self.benchmarks if benchmark_spec(b).scoring == "judged"]
        if judged and self.judge is None and "benchmarks" in self.model_fields_set:
            raise ValueError(
                f"{judged[0]} is judged by an LLM: set eval.judge (e.g. backend: transformers, teacher: embedded)"
            )
        return self


class ReportParams(Section):
    dir: Path = Field(
        Path("reports"), description="reports land in <dir>/<run name>/ (run name: the profile's)"
    )
    formats: list[Literal["md", "tex", "csv"]] = Field(
        default_factory=lambda: ["md", "tex", "csv"], min_length=1
    )
    figure_formats: list[Literal["png", "pdf"]] = Field(default_factory=lambda: ["png", "pdf"], min_length=1)
    dpi: PositiveInt = 150
    bootstrap_resamples: int = Field(
        2000, ge=200, description="resamples behind each 95% interval and paired test (seeded with run.seed)"
    )

    @field_validator("dir", mode="before")
    @classmethod
    def _dir(cls, v: Any, info: ValidationInfo) -> Path:
        return resolve_path(v, info, "folder", must_exist=False)


class Params(Section):
    """A whole run. Sections are read by the phases that need them (see :mod:`arabic_r1.phases`)."""

    run: RunParams = Field(default_factory=dict)  # type: ignore[arg-type]
    model: ModelParams = Field(default_factory=dict)  # type: ignore[arg-type]
    data: DataParams
    distill: DistillParams = Field(default_factory=dict)  # type: ignore[arg-type]
    verify: VerifyParams = Field(default_factory=dict)  # type: ignore[arg-type]
    train: TrainParams = Field(default_factory=dict)  # type: ignore[arg-type]
    eval: EvalParams = Field(default_factory=dict)  # type: ignore[arg-type]
    report: ReportParams = Field(default_factory=dict)  # type: ignore[arg-type]

    # Where the values came from; not part of any hash.
    source_file: Path | None = Field(None, exclude=True)
    overrides: tuple[str, ...] = Field((), exclude=True)

    @property
    def profile(self) -> str:
        return self.source_file.stem if self.source_file else "inline"

    @property
    def run_dir(self) -> Path:
        return self.run.root / (self.run.name or self.profile)

    def command(self, verb: str) -> str:
        """The CLI line that does ``verb`` (e.g. ``run 00``) with these params: what an error tells a user to run."""
        src = self.source_file
        where = (
            self.profile
            if src is not None and src.parent == REPO_DIR / "params"
            else (self.shown(src) if src else "...")
        )
        return " ".join(
            ["arabic-r1", verb, "--params", str(where), *(f"-o {shlex.quote(o)}" for o in self.overrides)]
        )

    @property
    def base_dir(self) -> Path:
        return project_root_for(self.source_file) if self.source_file else Path.cwd()

    def shown(self, path: str | Path) -> str:
        """``path`` as a reader should see it: relative to the project (``runs/smoke/...``) or to the checkout that
        holds the package (its own data), or ``~/...`` under the home folder; a notebook or report never prints
        where this machine keeps the checkout."""
        text = os.path.abspath(path)
        for base in dict.fromkeys([self.base_dir, REPO_DIR]):  # REPO_DIR is resolved already
            rel = _portable(text, str(base))
            if rel != text:
                return rel
        home = str(Path.home())
        return "~" + text[len(home) :] if text.startswith(home + "/") else text

    def section_hash(self, *sections: str) -> str:
        """Hash of the named sections or dotted keys (``model``, ``run.seed``) as written, for freshness.

        Paths are hashed relative to the project, so moving the checkout does not make every phase stale.
        """
        payload = {s: _portable(_dump(self.get(s)), str(self.base_dir)) for s in sorted(sections)}
        return json_digest(payload)

    def get(self, dotted: str) -> Any:
        """``params.get("train.lora.r")``; raises KeyError naming the missing part."""
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, BaseModel) or part not in type(node).model_fields:
                raise KeyError(f"params has no key {dotted!r} (stopped at {part!r})")
            node = getattr(node, part)
        return node

    def files(self, *sections: str) -> list[Path]:
        """Existing files and folders that the named sections point to (their content is a phase input too)."""
        found: list[Path] = []

        def walk(node: Any) -> None:
            if isinstance(node, Path):
                if node.exists():
                    found.append(node)
            elif isinstance(node, BaseModel):
                for name, spec in type(node).model_fields.items():
                    if not (spec.json_schema_extra or {}).get("not_an_input"):
                        walk(getattr(node, name))
            elif isinstance(node, (list, tuple)):
                for v in node:
                    walk(v)
            elif isinstance(node, dict):
                for v in node.values():
                    walk(v)

        for s in sections:
            if s != "run" and not s.startswith("run."):  # run.root holds the outputs, not inputs
                walk(self.get(s))
        return sorted(set(found))


def _dump(value: Any) -> Any:
    return (
        value.model_dump(mode="json")
        if isinstance(value, BaseModel)
        else json.loads(json.dumps(value, default=str))
    )


def _portable(obj: Any, base: str) -> Any:
    """Make absolute paths under the project relative, so moving the checkout does not invalidate every phase."""
    if isinstance(obj, dict):
        return {k: _portable(v, base) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_portable(v, base) for v in obj]
    if isinstance(obj, str) and obj.startswith(base + "/"):
        return obj[len(base) + 1 :]
    return obj
