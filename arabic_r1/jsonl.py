"""How the package writes and reads its JSON files: one reader and one appender for every file kept as one JSON
record per line, and one atomic writer for every manifest, summary and report JSON.

The append-only logs (phase 02's ``traces.jsonl``, phase 04's ``train_log.jsonl``, phase 05's generation cache) and
the read-only packs (the shipped teacher cache) follow the same two rules, so that every phase reading a log
agrees with the phase that wrote it:

- a *torn last line* (no trailing newline: the writer was killed mid-write) is dropped with a warning; with
  ``repair=True`` it is also cut off the file, so the next append starts on a clean line;
- with ``key=...`` the *last record per key wins* (a retried prompt appends its new record after the old one).

Any other line that is not a JSON object is damage, not a kill: :class:`JsonlError` names the file and line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JsonlError(ValueError):
    """A JSONL file with a damaged line that is not a torn last line; the message names file and line."""


def read_jsonl(path: str | Path, *, key: str | None = None, repair: bool = False) -> list[dict[str, Any]]:
    """The records of ``path`` in file order (or the last per ``key``, in order of first appearance)."""
    path = Path(path)
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data) and data[end:].strip():
        log.warning("%s: dropping a torn last line (%d bytes; its writer was killed)", path, len(data) - end)
        if repair:
            with path.open("r+b") as f:
                f.truncate(end)
    records: dict[Any, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for n, raw in enumerate(data[:end].split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise JsonlError(f"{path} line {n}: not UTF-8 text (byte {exc.start} of the line)") from None
        except json.JSONDecodeError as exc:
            raise JsonlError(f"{path} line {n}: not valid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(row, dict):
            raise JsonlError(f"{path} line {n}: expected a JSON object, got a {type(row).__name__}")
        if key is None:
            rows.append(row)
        elif key not in row:
            raise JsonlError(f"{path} line {n}: the record has no {key!r} field")
        else:
            records[row[key]] = row
    return rows if key is None else list(records.values())


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]], *, fsync: bool = False) -> None:
    """Append whole lines; with ``fsync`` they are on disk before this returns (a kill loses nothing acknowledged)."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    with Path(path).open("ab") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace ``path`` atomically: a reader sees the old file or the new one, never half of either."""
    _replace_atomically(Path(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _replace_atomically(path: Path, text: str) -> None:
    """Write a temporary file of this process and thread next to ``path``, then rename it over ``path``."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, payload: Any, *, indent: int | None = 2) -> None:
    """Write one JSON document so that a killed phase never leaves half a manifest or summary behind."""
    _replace_atomically(Path(path), json.dumps(payload, indent=indent, ensure_ascii=False, default=str))
