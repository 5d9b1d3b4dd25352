"""Local mirrors of the benchmarks' hub repos: the rows phase 01 decontaminates against and phase 05 scores.

A *mirror* is a folder per hub repo, ``<mirror_dir>/<org>/<name>/<subset>/<split>.jsonl`` plus a ``README.md``
whose ``configs:`` block keeps the subset and split names, so ``datasets.load_dataset(<folder>, <subset>)`` and
lighteval (with ``hf_repo`` pointed at the folder) read it exactly as they read the hub. The package ships a small
synthetic mirror of every registered benchmark (``resources/oall_mirror``) that the tests and the smoke profile use.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from arabic_r1.benchmarks import BENCHMARKS, oall_subsets, spec
from arabic_r1.digests import path_digest

log = logging.getLogger(__name__)

FIXTURE_MIRROR = "oall_mirror"  # the package's own small synthetic mirror (resources/oall_mirror)


def fixture_mirror_dir() -> Path:
    return Path(str(resources.files("arabic_r1").joinpath("resources", FIXTURE_MIRROR)))


@dataclass(frozen=True)
class BenchmarkRow:
    benchmark: str
    subset: str
    split: str
    index: int
    row: dict[str, Any]

    @property
    def item_id(self) -> str:
        """Stable id of the item: the native id where the dataset has one, else subset/split/row index."""
        id_field = spec(self.benchmark).id_field
        native = self.row.get(id_field) if id_field else None
        return f"{self.benchmark}:{self.subset}:{self.split}:{native if native is not None else self.index}"

    def question(self) -> str:
        """The question (the first text field): matched whole when short, unlike options."""
        value = self.row.get(spec(self.benchmark).text_fields[0])
        return "" if value in (None, "") else str(value)

    def options(self) -> list[str]:
        """The answer options (or gold answer): every text field after the question but a reading passage."""
        return self.segments(skip=("Context",))[1 if self.question() else 0 :]

    def segments(self, skip: tuple[str, ...] = ()) -> list[str]:
        """The texts of the item a model reads (question, context, options), one string each."""
        out: list[str] = []
        for field in spec(self.benchmark).text_fields:
            if field in skip:
                continue
            value = self.row.get(field)
            if isinstance(value, list):
                out.extend(str(v) for v in value if v)
            elif value not in (None, ""):
                out.append(str(value))
        return out


def repo_dir(mirror_dir: Path, key: str) -> Path:
    return Path(mirror_dir) / spec(key).hf_repo


def write_mirror_readme(repo: Path) -> Path:
    """(Re)write the README from the ``<subset>/<split>.jsonl`` files present: ``configs`` keeps the subset and
    split names, ``dataset_info`` declares column types (a column that is null in one split must not make
    ``datasets`` guess a different schema per file)."""
    configs: dict[str, list[dict[str, str]]] = defaultdict(list)
    columns: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for f in sorted(repo.glob("*/*.jsonl")):
        configs[f.parent.name].append({"split": f.stem, "path": f"{f.parent.name}/{f.name}"})
        with f.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    for key, value in json.loads(line).items():
                        columns[f.parent.name][key].add(_dtype(value))
    meta = {
        "configs": [{"config_name": name, "data_files": files} for name, files in sorted(configs.items())],
        "dataset_info": [
            {"config_name": name, "features": [_feature(col, kinds) for col, kinds in columns[name].items()]}
            for name in sorted(configs)
        ],
    }
    header = yaml.safe_dump(meta, allow_unicode=True, sort_keys=False)
    readme = repo / "README.md"
    readme.write_text(
        f"---\n{header}---\n\nLocal mirror of `{repo.relative_to(repo.parent.parent)}` for arabic_r1.\n",
        encoding="utf-8",
    )
    return readme


def _dtype(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, list):
        return "list"
    return "string"


def _feature(name: str, kinds: set[str]) -> dict[str, str]:
    kinds = kinds - {"null"}
    if kinds == {"list"}:
        return {"name": name, "sequence": "string"}
    if kinds == {"int64"} or kinds == {"bool"}:
        return {"name": name, "dtype": kinds.pop()}
    if kinds <= {"int64", "float64"} and kinds:
        return {"name": name, "dtype": "float64"}
    return {"name": name, "dtype": "string"}


def check_subset_name(key: str, subset: str, n_rows: int) -> None:
    """A subset is one folder of the mirror: an empty, padded or path-like name would put its rows where neither
    the README nor lighteval looks (they would be silently lost), so it is refused naming the rows."""
    if not subset or subset != subset.strip() or "/" in subset or "\\" in subset or subset in (".", ".."):
        raise ValueError(
            f"{key}: {n_rows} row(s) have the subset name {subset!r}; expected a non-empty folder name without "
            f"slashes or surrounding spaces (for a flat export, check the field subset_of reads)"
        )


def write_mirror(mirror_dir: Path, key: str, rows: dict[tuple[str, str], list[dict[str, Any]]]) -> Path:
    """Write ``{(subset, split): rows}`` of one benchmark as a mirror repo folder."""
    repo = repo_dir(mirror_dir, key)
    for (subset, split), items in rows.items():
        check_subset_name(key, subset, len(items))
        folder = repo / subset
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
    write_mirror_readme(repo)
    return repo


def mirror_configs(repo: Path) -> dict[str, dict[str, str]]:
    """``{subset: {split: relative path}}`` from a mirror README."""
    readme = repo / "README.md"
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        raise ValueError(f"{readme}: no YAML header with 'configs:'")
    meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    out: dict[str, dict[str, str]] = {}
    for cfg in meta.get("configs", []):
        files = cfg.get("data_files", [])
        out[cfg["config_name"]] = {f["split"]: f["path"] for f in files} if isinstance(files, list) else {}
    return out


def check_mirror(mirror_dir: Path, keys: Iterable[str] | None = None) -> list[str]:
    """Problems that would stop decontamination or evaluation; subsets missing vs OALL v2 are listed too."""
    problems = []
    for key in keys or BENCHMARKS:
        eval_split, repo = spec(key).eval_split, repo_dir(mirror_dir, key)
        if not (repo / "README.md").is_file():
            problems.append(
                f"{key}: no mirror at {repo} (expected README.md with configs and <subset>/<split>.jsonl)"
            )
            continue
        try:
            configs = mirror_configs(repo)
        except (ValueError, yaml.YAMLError) as exc:
            problems.append(f"{key}: unreadable README.md ({exc})")
            continue
        listed = {(repo / path).resolve() for splits in configs.values() for path in splits.values()}
        stray = [f for f in sorted(repo.rglob("*.jsonl")) if f.resolve() not in listed]
        if stray:
            problems.append(
                f"{key}: {len(stray)} row file(s) outside the README's subsets, never read or scored "
                f"(e.g. {stray[0].relative_to(repo)}; expected <subset>/<split>.jsonl)"
            )
        missing = [s for s in oall_subsets(key) if s not in configs]
        if missing:
            problems.append(
                f"{key}: {len(missing)} OALL v2 subsets missing from the mirror (e.g. {missing[0]!r})"
            )
        for subset, splits in configs.items():
            if eval_split not in splits:
                problems.append(f"{key}:{subset}: no '{eval_split}' split")
            for split, path in splits.items():
                if not (repo / path).is_file():
                    problems.append(f"{key}:{subset}:{split}: file {repo / path} is missing")
    return problems


def iter_mirror_rows(
    mirror_dir: Path, key: str, splits: Iterable[str] | None = None
) -> Iterator[BenchmarkRow]:
    """Rows of one benchmark from a mirror; a malformed line raises with file and line number."""
    repo = repo_dir(mirror_dir, key)
    if not (repo / "README.md").is_file():
        raise FileNotFoundError(
            f"benchmark mirror for {key} not found: {repo} (run `arabic-r1 benchmarks check`)"
        )
    wanted = set(splits) if splits else None
    for subset, split_files in sorted(mirror_configs(repo).items()):
        for split, rel in sorted(split_files.items()):
            if wanted is not None and split not in wanted:
                continue
            path = repo / rel
            with path.open(encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{i + 1}: not valid JSON ({exc.msg})") from None
                    yield BenchmarkRow(key, subset, split, i, row)


def iter_hub_rows(
    key: str, splits: Iterable[str] | None = None, subsets: Iterable[str] | None = None
) -> Iterator[BenchmarkRow]:
    """Rows streamed from the hub (needs network); same shape as :func:`iter_mirror_rows`."""
    from datasets import load_dataset

    b = spec(key)
    for subset in subsets or oall_subsets(key):
        for split in splits or b.splits:
            ds = load_dataset(b.hf_repo, subset, split=split, streaming=True)
            for i, row in enumerate(ds):
                yield BenchmarkRow(key, subset, split, i, dict(row))


def mirror_digests(mirror_dir: Path | None, keys: Iterable[str]) -> dict[str, str]:
    """The content digest of each benchmark's mirror folder: phase 01 indexes, and phase 05 scores, exactly the rows
    with this digest (both manifests record it, so a refreshed mirror shows as a mismatch)."""

    if mirror_dir is None:
        return {}
    return {
        k: path_digest(repo_dir(mirror_dir, k))
        for k in keys
        if (repo_dir(mirror_dir, k) / "README.md").is_file()
    }


def iter_benchmark_rows(
    key: str, source: str, mirror_dir: Path | None, splits: Iterable[str] | None = None
) -> Iterator[BenchmarkRow]:
    if source == "mirror":
        if mirror_dir is None:
            raise ValueError("benchmark source 'mirror' needs a mirror folder (eval.mirror_dir)")
        return iter_mirror_rows(mirror_dir, key, splits)
    return iter_hub_rows(key, splits)
