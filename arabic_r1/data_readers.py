"""Phase 01's datatrove readers: every source (JSONL, Parquet, a hub dataset) read into Documents with the same
fields, and every row that cannot be used kept as a rejected Document with its reason (nothing is dropped silently).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import HuggingFaceDatasetReader, JsonlReader, ParquetReader

from arabic_r1.params import SourceParams

log = logging.getLogger(__name__)


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


class _SourceFilesMixin(_SourceRowsMixin):
    """A source read from a file or a folder of shards (``suffix``: which files of a folder)."""

    suffix: str

    def __init__(self, source: dict[str, Any], path: Path):
        folder, pattern = _folder_and_glob(path, self.suffix)
        super().__init__(folder, glob_pattern=pattern, recursive=False, limit=source.get("max_items") or -1)
        self.source = source


class SourceJsonlReader(_SourceFilesMixin, JsonlReader):
    name = "📥 source (jsonl)"
    suffix = ".jsonl*"

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


class SourceParquetReader(_SourceFilesMixin, ParquetReader):
    name = "📥 source (parquet)"
    suffix = ".parquet"


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
