"""Params of phase 01: the sources, quality and dedup rules, decontamination, and the Slurm / Ray executors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from arabic_r1.benchmarks import keys as benchmark_keys
from arabic_r1.params_types import (
    BenchmarkNames,
    NonNegInt,
    PositiveFloat,
    PositiveInt,
    Section,
    Share,
    Tokens,
    resolve_path,
)

Scalar = str | int | float | bool | None
SOURCE_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


class SourceParams(Section):
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


class QualityParams(Section):
    """Gopher-style thresholds, sized for prompts (datatrove's defaults assume web pages of 50+ words)."""

    min_words: NonNegInt = 3
    max_words: PositiveInt = 20000
    min_avg_word_length: PositiveFloat = 1.5  # math prompts with options are full of one-letter tokens
    max_avg_word_length: PositiveFloat = 12.0
    min_stop_words: NonNegInt = 1
    max_non_alpha_words_ratio: Share = 0.5
    repetition: bool = True


class DedupParams(Section):
    exact: bool = True
    near: bool = True
    minhash_ngram: PositiveInt = 5
    minhash_buckets: PositiveInt = 20
    minhash_hashes_per_bucket: PositiveInt = 5


class DecontaminationParams(Section):
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


class SlurmParams(Section):
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


class RayParams(Section):
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


class DataParams(Section):
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
