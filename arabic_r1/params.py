"""The schema of a run: what a params file may contain, section by section, and :class:`Params`, the whole.

Config flows one way: YAML file (+ dotted ``-o key=value`` overrides, params_loading.py) -> :class:`Params` -> the
functions that need a section. Everything is checked before any work starts, so a typo in a 6-hour GPU profile
fails in the first second, not in hour five.

Relative paths in a params file resolve against the project root: the folder that holds the ``params/`` folder
the file lives in (for a params file elsewhere, the file's own folder).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import shlex
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from arabic_r1.benchmarks import check_names as check_benchmark_names
from arabic_r1.benchmarks import keys as benchmark_keys
from arabic_r1.benchmarks import spec as benchmark_spec
from arabic_r1.digests import json_digest
from arabic_r1.errors import ExplainedError, redacted

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent

EMBEDDED_MODEL = "embedded"


class ParamsError(ExplainedError, ValueError):
    """A params file or override that cannot drive a run; the message is meant for the user as is."""


# --------------------------------------------------------------------------------------------------- paths
def project_root_for(params_file: Path) -> Path:
    """Where relative paths of ``params_file`` point: the folder above ``params/``, else the file's folder."""
    folder = params_file.resolve().parent
    return folder.parent if folder.name == "params" else folder


def resolve_path(value: Any, info: ValidationInfo, what: str, *, must_exist: bool = True) -> Path | None:
    """Validate a path value from a params file: a string, made absolute against the project root, and checked."""
    if value is None:
        return None
    if not isinstance(value, (str, Path)):
        raise ValueError(f"expected a path to a {what} (a string)")
    context = info.context or {}
    path = Path(value).expanduser()
    if not path.is_absolute() and context.get("base_dir") is not None:
        path = Path(context["base_dir"]) / path
    path = path.resolve()
    if must_exist and context.get("check_paths", True) and not path.exists():
        raise ValueError(f"{what} does not exist: {path}")
    return path


class _Section(BaseModel):
    """Strict base: unknown keys and silent type coercion (e.g. "3" -> 3) are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]

# Counts no machine could run, so that a typo (``max_steps: 1e30``) fails here and not hours into a run.
MAX_STEPS = 10**9  # 10 optimizer steps a second for three years; the paper's SFT takes a few thousand
MAX_TOKENS = 10**14  # 100T tokens: several times the largest public pre-training corpus (FineWeb, 15T)


def _at_most(limit: int, why: str) -> AfterValidator:
    def check(v: int | None) -> int | None:
        if v is not None and v > limit:
            raise ValueError(f"{v:,} is more than {limit:,}, {why}")
        return v

    return AfterValidator(check)


STEPS_BOUND = _at_most(
    MAX_STEPS, "more steps than any machine could run (params.MAX_STEPS: 10 a second for 3 years)"
)
Steps = Annotated[int, Field(gt=0), STEPS_BOUND]
Tokens = Annotated[int, Field(gt=0), _at_most(MAX_TOKENS, "more tokens than any machine could process (params.MAX_TOKENS: "
                                              "several times FineWeb's 15T, the largest public corpus)")]  # fmt: skip
Share = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
# names from the benchmark registry (arabic_r1/benchmarks.py), which may grow after this module is imported
BenchmarkNames = Annotated[list[str], AfterValidator(check_benchmark_names)]


# ----------------------------------------------------------------------------------------------- sections
class RunParams(_Section):
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
        "busy when the phase starts (a busy neighbour on a shared core slows torch's threads 4-12x); null: torch's own",
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


class TinyPretrainParams(_Section):
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


class TinyMoEParams(_Section):
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


class ModelParams(_Section):
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


Scalar = str | int | float | bool | None
SOURCE_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


class SourceParams(_Section):
    """One input of the data mixture: a local JSONL/parquet file or a streamed hub dataset."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    path: Path | None = Field(
        None, description="local .jsonl / .jsonl.gz / .parquet file, or a folder of them (shards)"
    )
    hf_dataset: str | None = Field(None, description="hub dataset id, streamed")
    hf_config: str | None = None
    split: str = "train"
    text_field: str = Field(
        "prompt", description="field with the prompt/text, or with a list of chat messages"
    )
    answer_field: str | None = Field(None, description="field with the gold answer (e.g. the option letter)")
    id_field: str | None = None
    lang: Literal["ar", "en"]
    category: str
    where: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict, description="keep rows whose field equals the value (or is in the list)"
    )
    max_items: PositiveInt | None = None

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, v: Any, info: ValidationInfo) -> Path | None:
        path = resolve_path(v, info, "source file")
        if path is None or not path.exists():
            return path
        files = (
            sorted(p.name for p in path.iterdir() if p.name.endswith(SOURCE_SUFFIXES))
            if path.is_dir()
            else [path.name]
        )
        if not files or not all(f.endswith(SOURCE_SUFFIXES) for f in files):
            raise ValueError(
                f"source must be a .jsonl, .jsonl.gz or .parquet file, or a folder of them: {path}"
            )
        if path.is_dir() and len({f.endswith(".parquet") for f in files}) > 1:
            raise ValueError(f"source folder mixes parquet and jsonl files: {path}")
        return path

    @model_validator(mode="after")
    def _one_origin(self) -> SourceParams:
        if (self.path is None) == (self.hf_dataset is None):
            raise ValueError("give exactly one of 'path' (local JSONL/parquet) or 'hf_dataset' (hub id)")
        return self


class QualityParams(_Section):
    """Gopher-style thresholds, sized for prompts (datatrove's defaults assume web pages of 50+ words)."""

    min_words: NonNegInt = 3
    max_words: PositiveInt = 20000
    min_avg_word_length: PositiveFloat = 1.5  # math prompts with options are full of one-letter tokens
    max_avg_word_length: PositiveFloat = 12.0
    min_stop_words: NonNegInt = 1
    max_non_alpha_words_ratio: Share = 0.5
    repetition: bool = True


class DedupParams(_Section):
    exact: bool = True
    near: bool = True
    minhash_ngram: PositiveInt = 5
    minhash_buckets: PositiveInt = 20
    minhash_hashes_per_bucket: PositiveInt = 5


class DecontaminationParams(_Section):
    benchmarks: BenchmarkNames = Field(default_factory=lambda: list(benchmark_keys()), min_length=1)
    ngram: PositiveInt = 13
    min_short_words: PositiveInt = Field(
        8,
        description="options and passages shorter than an n-gram are matched whole on their own from this length",
    )
    min_content_words: PositiveInt = Field(
        3,
        description="a short question matches alone with this many content words; with fewer, with its options",
    )
    max_items_per_ngram: PositiveInt = Field(
        10, description="n-grams (and short questions) shared by more items are boilerplate"
    )

    @model_validator(mode="after")
    def _short(self) -> DecontaminationParams:
        if self.min_short_words > self.ngram:
            raise ValueError(f"min_short_words ({self.min_short_words}) must be <= ngram ({self.ngram})")
        return self


# sbatch options datatrove or the keys above set; sbatch_args may not set them again
SLURM_OWNED_SBATCH = (
    "array", "output", "error", "job-name", "dependency", "partition", "time", "cpus-per-task", "mem-per-cpu",
    "qos", "account", "nodes", "export", "parsable",
)  # fmt: skip


class SlurmParams(_Section):
    """`data.executor: slurm`: each phase-01 stage is one sbatch job array (datatrove's SlurmPipelineExecutor),
    chained with afterok dependencies; the driver (the notebook) submits from a login node and waits."""

    partition: str = "cpu"
    time: str = Field(
        "12:00:00",
        pattern=r"^((\d+-)?\d+(:\d{1,2}){0,2}|UNLIMITED|INFINITE)$",
        description="sbatch --time, per job",
    )
    cpus_per_task: PositiveInt = 1
    mem_per_cpu_gb: PositiveInt = 2
    qos: str | None = Field("normal", description="sbatch --qos; null: the account's default QOS")
    account: str | None = Field(
        None, description="sbatch --account (the allocation to charge); null: your default"
    )
    sbatch_args: dict[str, str] = Field(
        default_factory=dict,
        description="more '#SBATCH --KEY=VALUE' lines, e.g. {constraint: cpu, reservation: r1, exclusive: ''}",
    )
    env_command: str | None = Field(
        None,
        description="shell line(s) each job runs before its task, e.g. 'module load python/3.11 && source "
        "/scratch/me/arabic_r1/.venv/bin/activate'; null: source the submitting Python's venv (when it is one)",
    )
    srun_args: dict[str, str] = Field(
        default_factory=dict,
        description="more 'srun --KEY=VALUE' options for the task, e.g. a pyxis container: "
        "{container-image: /scratch/me/arabic_r1.sqsh, container-mounts: /scratch:/scratch}",
    )
    max_array_size: PositiveInt = Field(1001, description="the cluster's MaxArraySize (scontrol show config)")
    poll_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0, description="how often the driver polls squeue while it waits"
    )

    @field_validator("sbatch_args", "srun_args")
    @classmethod
    def _option_names(cls, v: dict[str, str], info: Any) -> dict[str, str]:
        for key in v:
            if not re.fullmatch(r"[a-z][a-z0-9-]*", key):
                raise ValueError(f"{key!r}: write the long option name without dashes, e.g. 'constraint'")
            if info.field_name == "sbatch_args" and key in SLURM_OWNED_SBATCH:
                field = key.replace("-", "_")
                owner = f"data.slurm.{field}" if field in cls.model_fields else "datatrove"
                raise ValueError(f"{key!r} is set by {owner}, not by sbatch_args")
        return v


class RayParams(_Section):
    address: str | None = Field(
        None,
        description="null: start a local Ray cluster for the run (stopped with it); 'auto': the cluster this "
        "machine belongs to (`ray start`); 'ray://host:10001': a remote cluster through Ray Client",
    )
    num_cpus: PositiveInt | None = Field(None, description="CPUs of a local cluster (null: data.workers)")
    cpus_per_task: PositiveInt = 1
    mem_per_cpu_gb: Annotated[float, Field(gt=0)] = 1.0
    object_store_mb: PositiveInt = Field(256, description="object store of a local cluster (MB)")
    tasks_per_job: PositiveInt = Field(
        1, description="datatrove tasks per Ray actor: more saves actor start-up (~2 s) on many tiny tasks"
    )


class DataParams(_Section):
    token_budget: Tokens = Field(description="pool tokens (student tokenizer) to select; paper: 372M")
    arabic_share: Share = Field(0.8, description="Arabic share by tokens (paper: 0.8)")
    category_shares: dict[str, Share] = Field(
        default_factory=dict, description="category -> share of the token budget"
    )
    budget_tolerance: Annotated[float, Field(gt=0.0, lt=0.5)] = Field(
        0.02, description="per (lang, category) budget"
    )
    on_shortfall: Literal["error", "warn"] = "error"
    sources: list[SourceParams] = Field(
        default_factory=list,
        description="where phase 01 selects the pool from (omitted: a params file for later phases)",
    )
    quality: QualityParams = Field(default_factory=dict)  # type: ignore[arg-type]
    dedup: DedupParams = Field(default_factory=dict)  # type: ignore[arg-type]
    decontamination: DecontaminationParams = Field(default_factory=dict)  # type: ignore[arg-type]
    executor: Literal["local", "slurm", "ray"] = "local"
    tasks: PositiveInt = 1
    workers: PositiveInt = 1
    slurm: SlurmParams = Field(default_factory=dict)  # type: ignore[arg-type]
    ray: RayParams = Field(default_factory=dict)  # type: ignore[arg-type]

    @model_validator(mode="before")
    @classmethod
    def _no_empty_sources(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("sources") == []:
            raise ValueError("sources is an empty list: phase 01 selects the pool from at least one source")
        return data

    @field_validator("category_shares")
    @classmethod
    def _shares_sum(cls, v: dict[str, float]) -> dict[str, float]:
        if v and abs(sum(v.values()) - 1.0) > 1e-3:
            raise ValueError(f"category shares must sum to 1 (they sum to {sum(v.values()):.4f})")
        return v

    @model_validator(mode="after")
    def _sources(self) -> DataParams:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique (repeated: {', '.join(dupes)})")
        if self.sources and not self.category_shares:
            raise ValueError("category_shares is required when sources are given")
        unknown = sorted(
            {f"{s.name}: {s.category!r}" for s in self.sources if s.category not in self.category_shares}
        )
        if unknown:
            raise ValueError(f"source categories missing from category_shares: {'; '.join(unknown)}")
        return self


class DistillParams(_Section):
    """The teacher, its sampling, and the guard rails of a long paid run (phase 02)."""

    backend: Literal["openai", "transformers", "vllm_in_process", "replay"] = Field(
        "transformers",
        description="openai: any OpenAI-compatible server (OpenAI, vLLM, SGLang, TGI, llama.cpp; base_url); "
        "transformers / vllm_in_process: the teacher loaded in this process; replay: answers from cache_dir only",
    )
    teacher: str = Field(
        EMBEDDED_MODEL,
        description="model name at the endpoint, hub id or local folder; 'embedded' = this run's base model; "
        "for replay, the teacher id the cache was written with",
    )
    base_url: str | None = None
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="NAME of the env variable holding the key; never the key",
    )

    @field_validator("api_key_env", mode="before")
    @classmethod
    def _key_name(cls, v: Any) -> Any:
        if isinstance(v, str) and not re.fullmatch(r"[A-Z_][A-Z0-9_]*", v):
            raise ValueError(
                f"expected the NAME of an environment variable holding the key (e.g. OPENAI_API_KEY), got {redacted(v)}"
            )
        return v

    template_version: str = Field(
        "v1", pattern=r"^v\d+$", description="resources/templates/cot_<version>.<lang>.txt"
    )
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = Field(
        0.6, description="null: the endpoint's default"
    )
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    max_new_tokens: Tokens = 1024
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens",
        description="OpenAI reasoning models want max_completion_tokens; vLLM/transformers serve max_tokens",
    )
    concurrency: PositiveInt = 4
    batch_size: PositiveInt = Field(8, description="prompts per generate() call for the local backends")
    max_retries: NonNegInt = 5
    backoff_initial_s: PositiveFloat = 1.0
    backoff_max_s: PositiveFloat = 60.0
    request_timeout_s: PositiveFloat = Field(
        300.0,
        description="seconds one HTTP attempt may take before it counts as a timeout; each retry gets its own, so one "
        "item can take up to (max_retries + 1) x this, plus the backoff",
    )
    max_consecutive_connection_failures: PositiveInt = Field(
        8,
        description="stop the phase, naming the endpoint, after this many items in a row failed to connect or timed "
        "out (retries exhausted): an unreachable server; the items not sent stay unsent for the next run",
    )
    max_items: PositiveInt | None = Field(
        None, description="distil only the first N pool items (a trial run)"
    )
    max_requests: PositiveInt | None = Field(None, description="requests sent to the teacher in this run")
    max_total_tokens: Tokens | None = Field(None, description="prompt + completion tokens in this run")
    price_per_m_input: Annotated[float, Field(ge=0.0)] = 0.0
    price_per_m_output: Annotated[float, Field(ge=0.0)] = 0.0
    cache_dir: Path = Field(
        Path("runs/teacher_cache"),
        description="content-addressed responses, shared by runs; not a freshness input (entries never change)",
        json_schema_extra={"not_an_input": True},
    )

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _cache(cls, v: Any, info: ValidationInfo) -> Path:
        return resolve_path(v, info, "teacher cache folder", must_exist=False)  # type: ignore[return-value]

    @field_validator("backend", mode="before")
    @classmethod
    def _old_backend_name(cls, v: Any) -> Any:
        """``vllm`` read as a server to many users; it always meant the engine inside this process."""
        if v == "vllm":
            warnings.warn(
                "backend: vllm is deprecated, write vllm_in_process (a vLLM server is backend: openai with its "
                "base_url)",
                FutureWarning,
                stacklevel=2,
            )
            return "vllm_in_process"
        return v

    @model_validator(mode="after")
    def _endpoint(self) -> DistillParams:
        if self.backend == "openai" and not self.base_url:
            raise ValueError(
                "backend 'openai' needs base_url (e.g. https://api.openai.com/v1 or a vLLM server)"
            )
        if self.backend == "replay" and not self.cache_dir.is_dir():
            raise ValueError(
                f"backend 'replay' answers only from the cache, and cache_dir does not exist: {self.cache_dir}"
            )
        return self


class VerifyParams(_Section):
    """Phase 03: which checks run and their thresholds (defaults measured on real Arabic/English text, README)."""

    checks: list[str] = Field(
        default_factory=lambda: ["all"],
        min_length=1,
        description="'all' (every check of the registry, trace_checks.CHECKS, in its order) or a list of its names",
    )
    # language and script
    min_arabic_letter_share: Share = Field(0.7, description="Arabic traces: Arabic letters / all letters")
    max_latin_word_share: Share = Field(
        0.15, description="Arabic traces: code-switching, Latin-script words / words"
    )
    max_other_script_share: Share = Field(0.02, description="letters of scripts other than Arabic and Latin")
    max_persian_letters: NonNegInt = Field(
        0, description="Persian/Urdu letters (پ چ ژ گ ...) in an Arabic trace"
    )
    reject_farsi_yeh_keheh: bool = Field(
        False, description="count ی/ک too (real Arabic typed on Persian keyboards has them)"
    )
    min_english_letter_share: Share = Field(0.8, description="English traces: Latin letters / all letters")
    # orthography
    max_tatweel_run: PositiveInt = Field(
        3, description="longest allowed run of tatweel (ـ); 2-3 is common justification"
    )
    max_punctuation_run: PositiveInt = Field(
        3, description="longest allowed run of one mark of ! ? ؟ ، , ؛ ; : (dots are free)"
    )
    # morphology
    min_morphology_coverage: Share = Field(0.6, description="share of Arabic words qalsadi recognises")
    morphology_sample_words: PositiveInt | None = Field(
        24, description="words analysed per trace (evenly spaced); null: all"
    )
    morphology_cache: Path | None = Field(
        Path("runs/morphology_cache.json"),
        description="analyses per word type, shared by runs; not a freshness input",
        json_schema_extra={"not_an_input": True},
    )
    # degeneration
    repeated_ngram_n: PositiveInt = 4
    max_repeated_ngram_share: Share = Field(
        0.3, description="repeated word n-grams / all n-grams of the trace"
    )
    min_phase_words: NonNegInt = 3
    max_phase_words: PositiveInt = 600
    max_answer_words: PositiveInt = 400
    # regional norms
    norms_rubric: Path | None = Field(
        None, description="YAML rubric; default: the package's resources/norms_rubric.yaml"
    )
    values_categories: list[str] = Field(default_factory=lambda: ["legal_cultural_alignment"])
    llm_judge: bool = False
    judge: DistillParams | None = Field(None, description="the judge's backend/model, same fields as distill")

    @field_validator("checks", mode="before")
    @classmethod
    def _checks(cls, v: Any) -> Any:
        from arabic_r1.trace_checks import check_names  # the registry imports this module

        if v in ("all", ["all"]):
            return check_names("all")
        return check_names(v) if isinstance(v, list) else v

    @field_validator("norms_rubric", mode="before")
    @classmethod
    def _rubric(cls, v: Any, info: ValidationInfo) -> Path | None:
        return resolve_path(v, info, "norms rubric file")

    @field_validator("morphology_cache", mode="before")
    @classmethod
    def _morph_cache(cls, v: Any, info: ValidationInfo) -> Path | None:
        return resolve_path(v, info, "morphology cache file", must_exist=False)

    @model_validator(mode="after")
    def _judge(self) -> VerifyParams:
        if self.llm_judge and self.judge is None:
            raise ValueError("llm_judge: true needs a judge (backend, teacher, base_url ... as in distill)")
        return self


LORA_FAMILIES = ("attention", "routed_experts", "shared_experts", "dense_mlp")


class FamilyLora(_Section):
    """One family's own rank and alpha: both, since alpha / r is the update scale the paper reports."""

    r: PositiveInt
    alpha: PositiveFloat


class LoraParams(_Section):
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


class TrainParams(_Section):
    """Phase 04: MoE LoRA SFT on the verified traces."""

    backend: Literal["unsloth", "transformers"] = "transformers"
    lora: LoraParams = Field(default_factory=dict)  # type: ignore[arg-type]
    learning_rate: PositiveFloat = 2e-4
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    warmup_ratio: Share = 0.05
    epochs: Annotated[PositiveFloat, _at_most(10**5, "more passes than any fine-tuning takes")] = 1.0
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


class EvalParams(_Section):
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


class ReportParams(_Section):
    dir: Path = Field(
        Path("reports"), description="reports land in <dir>/<run name>/ (run name: the profile's)"
    )
    formats: list[Literal["md", "tex", "csv"]] = Field(
        default_factory=lambda: ["md", "tex", "csv"], min_length=1
    )
    figure_formats: list[Literal["png", "pdf"]] = Field(default_factory=lambda: ["png", "pdf"], min_length=1)
    dpi: PositiveInt = 150

    @field_validator("dir", mode="before")
    @classmethod
    def _dir(cls, v: Any, info: ValidationInfo) -> Path:
        return resolve_path(v, info, "folder", must_exist=False)


class Params(_Section):
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
