"""Phase 01: the token-budgeted, deduplicated, decontaminated 80/20 Arabic/English prompt pool, on datatrove.

Stages (each a datatrove executor; local by default, Slurm or Ray from params):
1. read every source -> reject unusable rows -> declared-language check -> Gopher quality -> Gopher repetition
   -> OALL decontamination -> write survivors + exact-dedup signatures;
2. find exact duplicates (Arabic-normalised text);            3. drop them, write MinHash signatures;
4. MinHash buckets;   5. MinHash clusters;   6. drop near duplicates, count tokens with the student tokenizer.
Then the driver selects items per (language, category) cell to hit the token budget and writes the pool and the
reports. Every row read ends up either in the candidates or in ``removed/<step>/`` with its reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.dedup.exact_dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
)
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate
from datatrove.pipeline.readers import HuggingFaceDatasetReader, JsonlReader, ParquetReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import TextNormConfig

from arabic_r1.arabic_text import (
    STOP_WORDS,
    ArabicWordTokenizer,
    detect_language,
    normalized_text,
    normalized_words,
)
from arabic_r1.benchmarks import iter_benchmark_rows, mirror_digests
from arabic_r1.budget import Cell, cell_targets, select_to_budget
from arabic_r1.decontam import DecontaminationFilter, DecontaminationIndex, build_index, contamination_report
from arabic_r1.jsonl import read_jsonl, write_json_atomic
from arabic_r1.params import DataParams, Params, SourceParams
from arabic_r1.ray_cluster import collect_task_logs, ray_cluster
from arabic_r1.slurm import SlurmJobRecorder, run_slurm

log = logging.getLogger(__name__)

POOL_FILE = "pool.jsonl"
STATS_FILE = "mixture_stats.json"
DEDUP_REPORT = "dedup_report.json"
DECONT_REPORT = "decontamination_report.json"
FILTER_REPORT = "filter_report.json"
REMOVED_DIR = "removed"
# Removal steps, in pipeline order; each writes the removed documents (with the reason) to removed/<step>/.
STEPS = ("source_rows", "language", "quality", "repetition", "decontamination", "exact_dedup", "near_dedup")


# ------------------------------------------------------------------------------------------- readers
class _SourceRowsMixin:
    """Turn each raw row into a Document; rows that cannot be one carry ``metadata['reject']`` instead of vanishing."""

    source: dict[str, Any]

    def get_document_from_dict(self, data: dict, source_file: str, id_in_file: int | str) -> Document:
        src = self.source
        self.stat_update(f"rows_{src['name']}")
        row_id = str(data.get(src["id_field"], id_in_file)) if src.get("id_field") else str(id_in_file)
        meta: dict[str, Any] = {
            "source": src["name"],
            "lang": src["lang"],
            "category": src["category"],
            "row": row_id,
        }
        doc_id = f"{src['name']}/{row_id}"
        for key, wanted in src.get("where", {}).items():
            value = data.get(key)
            if value not in (wanted if isinstance(wanted, list) else [wanted]):
                return Document(
                    "", doc_id, metadata={**meta, "reject": "excluded_by_where", "detail": f"{key}={value!r}"}
                )
        if src["text_field"] not in data:
            return Document(
                "",
                doc_id,
                metadata={
                    **meta,
                    "reject": "missing_field",
                    "detail": f"no field {src['text_field']!r}; has {sorted(data)[:8]}",
                },
            )
        value = data[src["text_field"]]
        text, messages = _text_of(value)
        if text is None:
            return Document(
                "",
                doc_id,
                metadata={
                    **meta,
                    "reject": "bad_type",
                    "detail": f"{src['text_field']!r} is {type(value).__name__}, expected text or chat messages",
                },
            )
        if not text.strip():
            return Document("", doc_id, metadata={**meta, "reject": "empty_text"})
        if messages is not None:
            meta["messages"] = messages
        answer_field = src.get("answer_field")
        if answer_field:
            answer = data.get(answer_field)
            meta["answer"] = None if answer is None else str(answer).strip()
        return Document(text, doc_id, metadata=meta)


def _text_of(value: Any) -> tuple[str | None, list[dict] | None]:
    """A prompt string, or the user turns of a chat-messages list (kept whole in metadata)."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        user = [str(m["content"]) for m in value if m.get("role", "user") == "user"]
        return "\n\n".join(user), [
            {"role": m.get("role", "user"), "content": str(m["content"])} for m in value
        ]
    return None, None


def _folder_and_glob(path: Path, suffix: str) -> tuple[str, str]:
    """A single file, or every shard of a folder (datatrove spreads the files over the tasks)."""
    return (str(path), f"*{suffix}") if path.is_dir() else (str(path.parent), path.name)


class SourceJsonlReader(_SourceRowsMixin, JsonlReader):
    name = "📥 source (jsonl)"

    def __init__(self, source: dict[str, Any], path: Path):
        folder, pattern = _folder_and_glob(path, ".jsonl*")
        super().__init__(folder, glob_pattern=pattern, recursive=False, limit=source.get("max_items") or -1)
        self.source = source

    def read_file(self, filepath: str) -> DocumentsPipeline:
        """Like JsonlReader.read_file, but a malformed line becomes a counted rejection, not a log warning; the file
        is read as bytes, so that a line that is not UTF-8 is one counted rejection and the rest of the file is kept."""
        import orjson

        with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
            for li, raw in enumerate(f):
                if not raw.strip():
                    continue
                with self.track_time():
                    line = raw.decode("utf-8", errors="replace")
                    try:
                        row = orjson.loads(raw.decode("utf-8"))
                        if not isinstance(row, dict):
                            raise ValueError(f"a JSON {type(row).__name__}, not an object")
                        reject = None
                    except UnicodeDecodeError as exc:  # before ValueError: it is one
                        reject, problem = "not_utf8", f"not UTF-8 text (byte {exc.start} of the line)"
                    except ValueError as exc:  # orjson's JSONDecodeError included
                        reject, problem = "malformed_json", str(exc)
                    if reject:
                        self.stat_update(f"rows_{self.source['name']}")
                        meta = {
                            "source": self.source["name"],
                            "lang": self.source["lang"],
                            "category": self.source["category"],
                        }
                        yield Document(
                            "",
                            f"{self.source['name']}/{li}",
                            metadata={
                                **meta,
                                "row": str(li),
                                "reject": reject,
                                "detail": f"{filepath} line {li + 1}: {problem}",
                                "raw": line[:300],
                            },
                        )
                        continue
                    yield self.get_document_from_dict(row, filepath, li)


class SourceParquetReader(_SourceRowsMixin, ParquetReader):
    name = "📥 source (parquet)"

    def __init__(self, source: dict[str, Any], path: Path):
        folder, pattern = _folder_and_glob(path, ".parquet")
        super().__init__(folder, glob_pattern=pattern, recursive=False, limit=source.get("max_items") or -1)
        self.source = source


class SourceHubReader(_SourceRowsMixin, HuggingFaceDatasetReader):
    name = "📥 source (hub, streamed)"

    def __init__(self, source: dict[str, Any]):
        options = {
            "split": source["split"],
            **({"name": source["hf_config"]} if source.get("hf_config") else {}),
        }
        super().__init__(
            source["hf_dataset"], dataset_options=options, streaming=True, limit=source.get("max_items") or -1
        )
        self.source = source


def source_reader(src: SourceParams) -> PipelineStep:
    spec = src.model_dump(mode="json")
    if src.hf_dataset:
        return SourceHubReader(spec)
    assert src.path is not None
    parquet = any(src.path.glob("*.parquet")) if src.path.is_dir() else src.path.suffix == ".parquet"
    return SourceParquetReader(spec, src.path) if parquet else SourceJsonlReader(spec, src.path)


class RankFileJsonlReader(JsonlReader):
    """Reads exactly ``<rank>.jsonl`` of a folder, so document indices line up with the signatures of that rank."""

    name = "📄 stage input"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        name = f"{rank:05d}.jsonl"
        if self.data_folder.exists(name):
            for doc in self.read_file(name):
                self.stat_update("documents")
                yield doc


# ------------------------------------------------------------------------------------------- filters
class RejectFilter(BaseFilter):
    name = "🚫 unusable rows"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        reason = doc.metadata.pop("reject", None)
        return True if reason is None else (False, reason)


class DeclaredLanguageFilter(BaseFilter):
    """Keep a document only if its detected language is the one its source declares (offline, no download)."""

    name = "🌍 declared language"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        guess = detect_language(doc.text)
        if guess.lang == doc.metadata["lang"]:
            return True
        doc.metadata["language_check"] = {"detected": guess.lang, "reason": guess.reason}
        return False, f"detected_{guess.lang}"


class ArabicQualityFilter(GopherQualityFilter):
    """Gopher's quality rules on Arabic-folded words, with Arabic+English stop words.

    Same thresholds and reasons as datatrove's ``GopherQualityFilter``; computed on the cached normalised words
    instead of re-tokenising and scanning every character in Python (about 3x faster on Arabic text).
    """

    name = "🥇 quality (Gopher rules, Arabic-aware)"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        words = normalized_words(text)
        n = len(words)
        if self.min_doc_words and n < self.min_doc_words:
            return False, "gopher_short_doc"
        if self.max_doc_words and n > self.max_doc_words:
            return False, "gopher_long_doc"
        if n == 0:
            return False, "gopher_short_doc"
        avg = sum(map(len, words)) / n
        if self.min_avg_word_length and avg < self.min_avg_word_length:
            return False, "gopher_below_avg_threshold"
        if self.max_avg_word_length and avg > self.max_avg_word_length:
            return False, "gopher_above_avg_threshold"
        if self.max_symbol_word_ratio and text.count("#") / n > self.max_symbol_word_ratio:
            return False, "gopher_too_many_hashes"
        if (
            self.max_symbol_word_ratio
            and (text.count("...") + text.count("…")) / n > self.max_symbol_word_ratio
        ):
            return False, "gopher_too_many_ellipsis"
        lines = text.splitlines() or [text]
        if (
            self.max_bullet_lines_ratio
            and sum(ln.lstrip().startswith(("•", "-")) for ln in lines) / len(lines)
            > self.max_bullet_lines_ratio
        ):
            return False, "gopher_too_many_bullets"
        if (
            self.max_ellipsis_lines_ratio
            and sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines)
            > self.max_ellipsis_lines_ratio
        ):
            return False, "gopher_too_many_end_ellipsis"
        if (
            self.max_non_alpha_words_ratio
            and sum(not w.isdigit() for w in words) / n < self.max_non_alpha_words_ratio
        ):
            return False, "gopher_below_alpha_threshold"
        if self.min_stop_words and len(self.stop_words.intersection(words)) < self.min_stop_words:
            return False, "gopher_enough_stop_words"
        return True


class PromptRepetitionFilter(GopherRepetitionFilter):
    """Gopher's repetition rules, prompt-safe and fast.

    datatrove scores a text's most frequent n-gram even when it occurs once, which fails every text shorter than
    a few n-gram lengths - i.e. nearly every prompt (on real UD sentences it removed 3 in 4): here a top n-gram
    must occur twice. The n-gram scans stop early when no shorter n-gram repeats (a repeated 6-gram contains a
    repeated 5-gram), which skips most of the work on ordinary text.
    """

    name = "👯 repetition (Gopher, short-text safe)"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.top_checks, self.top_n_grams = tuple(self.top_n_grams), ()
        self.dup_checks, self.dup_n_grams = tuple(self.dup_n_grams), ()

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        verdict = super().filter(doc)  # duplicated paragraphs and lines
        if verdict is not True:
            return verdict
        words = normalized_words(doc.text)
        chars = len(doc.text)
        for n, frac in self.top_checks:
            grams = Counter(zip(*(words[i:] for i in range(n)), strict=False))
            if not grams:
                break
            gram, count = grams.most_common(1)[0]
            if count < 2:
                break  # nothing repeats at this length, so nothing longer does
            if (sum(map(len, gram)) + n - 1) * count / chars > frac:
                return False, f"top_{n}_gram"
        if self.dup_checks:
            shortest = min(n for n, _ in self.dup_checks)
            grams = list(zip(*(words[i:] for i in range(shortest)), strict=False))
            if len(set(grams)) < len(grams):
                for n, frac in self.dup_checks:
                    if find_all_duplicate(list(words), n) / chars > frac:
                        return False, f"duplicated_{n}_n_grams"
        return True


def normalized_content(doc: Document) -> str:
    """Exact-dedup key: Arabic-folded words, so tashkeel or alef/ya/ta-marbuta variants count as the same text."""
    return normalized_text(doc.text)


class StudentTokenCounter(PipelineStep):
    """Token counts with the student model's tokenizer (what the budget is expressed in)."""

    name = "🔢 student-tokenizer tokens"

    def __init__(self, tokenizer_path: str, batch_size: int = 256):
        super().__init__()
        self.tokenizer_path = tokenizer_path
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        encode = load_token_counter(self.tokenizer_path)
        batch: list[Document] = []
        for doc in data:
            batch.append(doc)
            if len(batch) >= self.batch_size:
                yield from self._count(encode, batch)
                batch = []
        yield from self._count(encode, batch)

    def _count(self, encode, batch: list[Document]) -> Iterator[Document]:
        if not batch:
            return
        for doc, n in zip(batch, encode([d.text for d in batch]), strict=True):
            doc.metadata["n_tokens"] = n
            self.stat_update("tokens", value=n)
            yield doc


def load_token_counter(tokenizer_path: str):
    """texts -> token counts, without special tokens. A local ``tokenizer.json`` is read with ``tokenizers``
    directly (no transformers import in every worker: 6 s each); anything else goes through AutoTokenizer."""
    local = Path(tokenizer_path) / "tokenizer.json"
    if local.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(local))
        return lambda texts: [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tokenizer_path)
    return lambda texts: [len(ids) for ids in hf(texts, add_special_tokens=False)["input_ids"]]


# ------------------------------------------------------------------------------------------ executors
def make_executor(
    data: DataParams, pipeline: list, tasks: int, logging_dir: Path, depends=None, name: str = "stage"
):
    """The datatrove executor chosen in params (Slurm and Ray are imported only when chosen)."""
    if data.executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(
            pipeline,
            tasks=tasks,
            workers=min(data.workers, tasks),
            logging_dir=str(logging_dir),
            depends=depends,
            skip_completed=False,
        )
    if data.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = data.slurm
        sbatch_args = {**({"account": s.account} if s.account else {}), **s.sbatch_args}
        return SlurmPipelineExecutor(
            pipeline, tasks=tasks, time=s.time, partition=s.partition, cpus_per_task=s.cpus_per_task,
            mem_per_cpu_gb=s.mem_per_cpu_gb, qos=s.qos or None, workers=min(data.workers, tasks),
            job_name=f"arabic_r1_{name}", logging_dir=str(logging_dir), depends=depends, skip_completed=False,
            env_command=s.env_command, venv_path=None if s.env_command else _venv_activate(),
            sbatch_args=sbatch_args, srun_args=s.srun_args or None, max_array_size=s.max_array_size,
            job_id_retriever=SlurmJobRecorder(),
        )  # fmt: skip
    from datatrove.executor import RayPipelineExecutor  # ray itself is imported when the stage runs

    return RayPipelineExecutor(
        pipeline,
        tasks=tasks,
        workers=min(data.workers, tasks),
        logging_dir=str(logging_dir),
        depends=depends,
        skip_completed=False,
        cpus_per_task=data.ray.cpus_per_task,
        mem_per_cpu_gb=data.ray.mem_per_cpu_gb,
        tasks_per_job=data.ray.tasks_per_job,
    )


def _venv_activate() -> str | None:
    activate = Path(sys.prefix) / "bin" / "activate"
    return str(activate) if activate.is_file() else None


@contextlib.contextmanager
def _datatrove_logs_to(path: Path):
    """datatrove logs every task to stderr at INFO; send that to a file so notebooks stay readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        saved = sys.stderr
        sys.stderr = f  # loguru binds the stream when each task adds its handler
        try:
            yield
        finally:
            sys.stderr = saved
            # datatrove's handlers still point at the file: leave only warnings, on stderr
            from loguru import logger

            logger.remove()
            logger.add(sys.stderr, level="WARNING")


# --------------------------------------------------------------------------------------------- driver
@dataclass
class MixtureResult:
    pool_path: Path
    stats: dict[str, Any]
    decontamination: dict[str, Any]
    dedup: dict[str, Any]
    filters: dict[str, Any]
    outputs: dict[str, Path] = field(default_factory=dict)


def build_decontamination_index(params: Params, out: Path) -> DecontaminationIndex:
    """Index every benchmark the params name, from the mirror (or hub) the evaluation phase reads too."""
    d = params.data.decontamination

    def rows():
        for key in d.benchmarks:
            yield from iter_benchmark_rows(key, params.eval.source, params.eval.mirror_dir)

    index = build_index(
        rows(),
        n=d.ngram,
        min_short_words=d.min_short_words,
        max_items_per_ngram=d.max_items_per_ngram,
        min_content_words=d.min_content_words,
    )
    missing = [b for b in d.benchmarks if b not in index.stats]
    if missing:
        raise RuntimeError(
            f"decontamination: no items found for {', '.join(missing)} in {params.eval.mirror_dir or 'the hub'}"
        )
    index.save(out)
    return index


def stage_pipelines(
    params: Params, work: Path, index_path: Path, tokenizer_path: str
) -> list[tuple[str, list, int]]:
    """(name, pipeline, tasks) for the six datatrove stages."""
    data = params.data
    q = data.quality
    tokenizer = ArabicWordTokenizer()
    removed = work / REMOVED_DIR

    def excl(step: str) -> JsonlWriter:
        return JsonlWriter(str(removed / step), output_filename="${rank}.jsonl", compression=None)

    exact_cfg = ExactDedupConfig(content_getter=normalized_content, hash_config=HashConfig(precision=64))
    mh_cfg = MinhashConfig(
        n_grams=data.dedup.minhash_ngram,
        num_buckets=data.dedup.minhash_buckets,
        hashes_per_bucket=data.dedup.minhash_hashes_per_bucket,
        # the Arabic tokenizer already folds, lower-cases and drops punctuation; keep only number folding
        norm_config=TextNormConfig(
            lowercase=False, norm_whitespace=False, remove_punctuation=False, norm_unicode_diacritics=False
        ),
    )
    filtering: list = [source_reader(s) for s in data.sources]
    filtering += [
        RejectFilter(exclusion_writer=excl("source_rows")),
        DeclaredLanguageFilter(exclusion_writer=excl("language")),
        ArabicQualityFilter(
            min_doc_words=q.min_words, max_doc_words=q.max_words, min_avg_word_length=q.min_avg_word_length,
            max_avg_word_length=q.max_avg_word_length, min_stop_words=q.min_stop_words, stop_words=sorted(STOP_WORDS),
            max_non_alpha_words_ratio=q.max_non_alpha_words_ratio, language=tokenizer, exclusion_writer=excl("quality"),
        ),
    ]  # fmt: skip
    if q.repetition:
        filtering.append(PromptRepetitionFilter(language=tokenizer, exclusion_writer=excl("repetition")))
    filtering += [
        DecontaminationFilter(index_path, exclusion_writer=excl("decontamination")),
        JsonlWriter(str(work / "filtered"), output_filename="${rank}.jsonl", compression=None),
    ]
    if data.dedup.exact:
        filtering.append(ExactDedupSignature(str(work / "exact_sigs"), config=exact_cfg))
    tasks = data.tasks
    stages: list[tuple[str, list, int]] = [("filter", filtering, tasks)]
    after_exact: list = [RankFileJsonlReader(str(work / "filtered"), compression=None)]
    if data.dedup.exact:
        stages.append(
            (
                "exact_find",
                [ExactFindDedups(str(work / "exact_sigs"), str(work / "exact_dups"), config=exact_cfg)],
                1,
            )
        )
        after_exact.append(
            ExactDedupFilter(str(work / "exact_dups"), config=exact_cfg, exclusion_writer=excl("exact_dedup"))
        )
    final_input = "deduped_exact"
    after_exact.append(
        JsonlWriter(str(work / final_input), output_filename="${rank}.jsonl", compression=None)
    )
    last: list = [RankFileJsonlReader(str(work / final_input), compression=None)]
    if data.dedup.near:
        after_exact.append(MinhashDedupSignature(str(work / "mh_sigs"), config=mh_cfg, language=tokenizer))
        stages.append(("exact_filter+minhash_sigs", after_exact, tasks))
        stages.append(
            (
                "minhash_buckets",
                [MinhashDedupBuckets(str(work / "mh_sigs"), str(work / "mh_buckets"), config=mh_cfg)],
                mh_cfg.num_buckets,
            )
        )
        stages.append(
            (
                "minhash_clusters",
                [
                    MinhashDedupCluster(
                        str(work / "mh_buckets"),
                        str(work / "mh_clusters"),
                        config=mh_cfg,
                        save_cluster_id=True,
                    )
                ],
                1,
            )
        )
        last.append(
            MinhashDedupFilter(
                str(work / "mh_clusters"), exclusion_writer=excl("near_dedup"), load_cluster_ids=True
            )
        )
    else:
        stages.append(("exact_filter", after_exact, tasks))
    last += [
        StudentTokenCounter(tokenizer_path),
        JsonlWriter(str(work / "candidates"), output_filename="${rank}.jsonl", compression=None),
    ]
    stages.append(("near_filter+tokens", last, tasks))
    return stages


def run_stages(params: Params, stages: list[tuple[str, list, int]], work: Path) -> dict[str, float]:
    """Run the stages in order on the chosen executor; returns seconds per stage (local/ray)."""
    timings: dict[str, float] = {}
    previous = None
    executors = []
    for i, (name, pipeline, tasks) in enumerate(stages):
        ex = make_executor(
            params.data, pipeline, tasks, work / "logs" / f"{i + 1}_{name}", depends=previous, name=name
        )
        executors.append((name, ex))
        previous = ex
    if params.data.executor == "slurm":  # submits the whole chain with afterok dependencies
        return run_slurm(executors, work, params.data.slurm.poll_s)
    cluster = ray_cluster(params.data, work) if params.data.executor == "ray" else contextlib.nullcontext()
    with _datatrove_logs_to(work / "logs" / "datatrove.log"), cluster:
        for i, (name, ex) in enumerate(executors):
            ex.depends = None  # already run, in order, below
            t0 = time.monotonic()
            ex.run()
            timings[name] = round(time.monotonic() - t0, 2)
            if incomplete := ex.get_incomplete_ranks(skip_completed=True):
                raise RuntimeError(
                    f"phase 01 stage {name!r}: tasks {incomplete} of {ex.world_size} did not complete on the "
                    f"{params.data.executor} executor; their logs: {ex.logging_dir.path}/logs/"
                )
            log.info("stage %d/%d %s: %.1fs", i + 1, len(executors), name, timings[name])
    if params.data.executor == "ray":
        collect_task_logs([Path(ex.logging_dir.path) for _, ex in executors], work / "logs" / "datatrove.log")
    return timings


def read_jsonl_dir(folder: Path) -> list[dict[str, Any]]:
    return [row for f in sorted(folder.glob("*.jsonl")) for row in read_jsonl(f)]


def rows_read(work: Path) -> Counter:
    """Raw rows per source as the readers counted them (datatrove stats of stage 1)."""
    counts: Counter = Counter()
    for f in (work / "logs").glob("1_*/stats/*.json"):
        for step in json.loads(f.read_text()):
            for key, value in step.get("stats", {}).items():
                if key.startswith("rows_"):
                    counts[key.removeprefix("rows_")] += value["total"] if isinstance(value, dict) else value
    return counts


def run_mixture(params: Params, phase_dir: Path, tokenizer_path: str) -> MixtureResult:
    """The whole phase: index, stages, budget, pool and reports under ``phase_dir``."""
    data = params.data
    if not data.sources:
        raise ValueError(f"{params.source_file}: data.sources is empty - nothing to build a pool from")
    work = phase_dir / "work"
    shutil.rmtree(work, ignore_errors=True)  # datatrove skips "completed" tasks; a phase run starts clean
    work.mkdir(parents=True)
    t0 = time.monotonic()
    index_path = work / "decontamination_index.pkl"
    index = build_decontamination_index(params, index_path)
    log.info(
        "decontamination index: %d items, %d n-grams (%s)",
        len(index.items),
        len(index.ngrams),
        ", ".join(f"{b} {s['items']}" for b, s in index.stats.items()),
    )
    timings = {"index": round(time.monotonic() - t0, 2)}
    timings |= run_stages(params, stage_pipelines(params, work, index_path, tokenizer_path), work)

    removed = {step: read_jsonl_dir(work / REMOVED_DIR / step) for step in STEPS}
    candidates = read_jsonl_dir(work / "candidates")
    read_counts = rows_read(work)

    targets = cell_targets(data.token_budget, data.arabic_share, data.category_shares)
    by_cell: dict[Cell, list[dict[str, Any]]] = defaultdict(list)
    for doc in sorted(candidates, key=lambda d: d["id"]):
        by_cell[Cell(doc["metadata"]["lang"], doc["metadata"]["category"])].append(doc)
    pool: list[dict[str, Any]] = []
    cells = []
    for cell, target in targets.items():
        docs = by_cell.get(cell, [])
        sel = select_to_budget(
            [d["metadata"]["n_tokens"] for d in docs], target, data.budget_tolerance, seed=params.run.seed
        )
        chosen = [docs[i] for i in sorted(sel.chosen)]
        pool.extend(chosen)
        sources = sorted(
            {s.name for s in data.sources if s.lang == cell.lang and s.category == cell.category}
        )
        cells.append(
            {"lang": cell.lang, "category": cell.category, "target": target, "lo": sel.lo, "hi": sel.hi, "tokens": sel.tokens,
             "items": len(chosen), "available_tokens": sel.available, "available_items": len(docs), "status": sel.status, "sources": sources}
        )  # fmt: skip
    selected_ids = {d["id"] for d in pool}
    stats = _mixture_stats(params, targets, cells, candidates, removed, read_counts, selected_ids, timings)
    decont = contamination_report(index, [
        {"id": d["id"], "source": d["metadata"]["source"], **d["metadata"]["contamination"]} for d in removed["decontamination"]
    ])  # fmt: skip
    dedup = _dedup_report(removed, candidates)
    filters = {step: _reasons(step, removed[step]) for step in STEPS}

    pool_path = phase_dir / POOL_FILE
    _write_pool(pool_path, pool)
    outputs = {"pool": pool_path}
    for name, payload in (
        (STATS_FILE, stats),
        (DEDUP_REPORT, dedup),
        (DECONT_REPORT, decont),
        (FILTER_REPORT, filters),
    ):
        write_json_atomic(phase_dir / name, payload)
        outputs[name.removesuffix(".json")] = phase_dir / name
    removed_out = phase_dir / REMOVED_DIR
    shutil.rmtree(removed_out, ignore_errors=True)
    if (work / REMOVED_DIR).exists():
        shutil.copytree(work / REMOVED_DIR, removed_out)
    else:
        removed_out.mkdir()
    outputs["removed"] = removed_out
    short = [c for c in cells if c["status"] != "ok"]
    if short:
        msg = "; ".join(
            f"{c['lang']}/{c['category']}: target {c['target']} tokens (+-{data.budget_tolerance:.0%}), "
            + (f"only {c['available_tokens']} available after filtering from {', '.join(c['sources']) or 'no source'} - source ran dry"
               if c["status"] == "dry" else f"got {c['tokens']} (items too coarse to land in [{c['lo']}, {c['hi']}])")
            for c in short
        )  # fmt: skip
        if data.on_shortfall == "error":
            raise RuntimeError(
                f"token budget not met ({len(short)} of {len(cells)} cells): {msg}. Reports in {phase_dir}"
            )
        log.warning("token budget not met: %s", msg)
    return MixtureResult(pool_path, stats, decont, dedup, filters, outputs)


def _write_pool(path: Path, pool: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for d in pool:
            m = d["metadata"]
            row = {"id": d["id"], "text": d["text"], "lang": m["lang"], "category": m["category"], "source": m["source"],
                   "n_tokens": m["n_tokens"], "answer": m.get("answer")}  # fmt: skip
            if "messages" in m:
                row["messages"] = m["messages"]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _reasons(step: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    by_source: dict[str, Counter] = defaultdict(Counter)
    for d in docs:
        by_source[d["metadata"]["source"]][d["metadata"].get("filter_reason", step)] += 1
    return {"total": len(docs), "by_source": {s: dict(c) for s, c in sorted(by_source.items())}}


def _dedup_report(
    removed: dict[str, list[dict[str, Any]]], candidates: list[dict[str, Any]]
) -> dict[str, Any]:
    kept_by_cluster = {
        d["metadata"]["minhash_cluster_id"]: d["id"]
        for d in candidates
        if "minhash_cluster_id" in d["metadata"]
    }
    near = [
        {"id": d["id"], "source": d["metadata"]["source"], "cluster": d["metadata"].get("minhash_cluster_id"),
         "kept": kept_by_cluster.get(d["metadata"].get("minhash_cluster_id")), "text": d.get("text", "")[:200]}
        for d in removed["near_dedup"]
    ]  # fmt: skip
    survivors = {normalized_text(d["text"]): d["id"] for d in [*removed["near_dedup"], *candidates]}
    exact = [
        {
            "id": d["id"],
            "source": d["metadata"]["source"],
            "kept": survivors.get(normalized_text(d["text"])),
            "text": d.get("text", "")[:200],
        }
        for d in removed["exact_dedup"]
    ]
    return {"exact": {"removed": len(exact), "items": exact}, "near": {"removed": len(near), "items": near}}


def _mixture_stats(
    params, targets, cells, candidates, removed, read_counts, selected_ids, timings
) -> dict[str, Any]:
    data = params.data
    per_source: dict[str, dict[str, Any]] = {}
    for s in data.sources:
        per_source[s.name] = {
            "lang": s.lang,
            "category": s.category,
            "rows_read": read_counts.get(s.name, 0),
            "removed": {},
            "candidates": 0,
            "selected": 0,
            "selected_tokens": 0,
        }
    for step, docs in removed.items():
        for d in docs:
            entry = per_source[d["metadata"]["source"]]
            entry["removed"][step] = entry["removed"].get(step, 0) + 1
    for d in candidates:
        entry = per_source[d["metadata"]["source"]]
        entry["candidates"] += 1
        if d["id"] in selected_ids:
            entry["selected"] += 1
            entry["selected_tokens"] += d["metadata"]["n_tokens"]
    for entry in per_source.values():
        entry["accounted"] = sum(entry["removed"].values()) + entry["candidates"]
        entry["all_rows_accounted"] = entry["accounted"] == entry["rows_read"]
    tokens = {lang: sum(c["tokens"] for c in cells if c["lang"] == lang) for lang in ("ar", "en")}
    total = sum(tokens.values())
    return {
        "token_budget": data.token_budget,
        "tolerance": data.budget_tolerance,
        "tokens": total,
        "arabic_share": {
            "target": data.arabic_share,
            "achieved": round(tokens["ar"] / total, 4) if total else None,
        },
        "cells": cells,
        "steps": list(STEPS),  # the order rows are removed in: how readers of this file lay out the funnel
        "sources": per_source,
        "all_rows_accounted": all(e["all_rows_accounted"] for e in per_source.values()),
        "timings_s": timings,
    }


def run_data_mixture(params: Params, run) -> MixtureResult:
    """Phase 01 entry point for the notebook: builds the pool with the run's student tokenizer, finishes the phase."""
    from arabic_r1.manifest import base_model_path

    result = run_mixture(params, run.dir, base_model_path(params, run.run_dir, "data_mixture"))
    s = result.stats
    metrics = {
        "pool_items": sum(c["items"] for c in s["cells"]),
        "pool_tokens": s["tokens"],
        "arabic_share": s["arabic_share"]["achieved"],
        "cells_ok": sum(c["status"] == "ok" for c in s["cells"]),
        "cells": len(s["cells"]),
        "removed": {step: f["total"] for step, f in result.filters.items()},
        "all_rows_accounted": s["all_rows_accounted"],
        "benchmark_digests": mirror_digests(params.eval.mirror_dir, params.data.decontamination.benchmarks)
        if params.eval.source == "mirror"
        else {},
    }
    run.finish(result.outputs, metrics)
    return result
