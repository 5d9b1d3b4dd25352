"""The one stable hash of the package: sha256 hex digests of files, folders, text and JSON-able values.

Every cache key and freshness key is one of these, so that "same digest" means the same thing everywhere: same
bytes (files), same relative names and bytes (folders), same canonical JSON (values: keys sorted, UTF-8 kept).
This module imports nothing from the package, so that ``params`` and ``manifest`` alike can use it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FULL_HASH_LIMIT = (
    256 * 2**20
)  # bigger files are fingerprinted by size + mtime (a 60 GB merged model is not re-read)
SHORT = 16  # hex digits kept where a digest names a cache entry or is shown to a person


def text_digest(text: str, length: int = SHORT) -> str:
    """Digest of a string (its UTF-8 bytes)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def json_digest(payload: Any, length: int = SHORT) -> str:
    """Digest of a JSON-able value in canonical form (keys sorted), so dict order never changes a key."""
    return text_digest(json.dumps(payload, sort_keys=True, ensure_ascii=False), length)


def file_digest(path: Path) -> str:
    """Full sha256 of a file's bytes, or ``size:…:mtime:…`` above ``FULL_HASH_LIMIT``."""
    st = path.stat()
    if st.st_size > FULL_HASH_LIMIT:
        return f"size:{st.st_size}:mtime:{st.st_mtime_ns}"
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path_digest(path: Path) -> str:
    """Content digest of a file or a whole folder (relative names + file digests)."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        raise FileNotFoundError(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(file_digest(f).encode())
    return h.hexdigest()
