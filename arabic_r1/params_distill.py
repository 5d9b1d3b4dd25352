"""Params of phases 02 and 03: the teacher (endpoint, sampling, guard rails of a paid run) and the checks of its
traces with their thresholds."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from arabic_r1.errors import redacted
from arabic_r1.params_types import (
    EMBEDDED_MODEL,
    NonNegInt,
    PositiveFloat,
    PositiveInt,
    Section,
    Share,
    Tokens,
    resolve_path,
)


class DistillParams(Section):
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


class VerifyParams(Section):
    """Phase 03: which checks run and their thresholds (defaults measured on real Arabic/English text, docs/phases.md)."""

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
