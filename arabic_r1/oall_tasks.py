"""Which lighteval tasks phase 05 runs, on which rows: lighteval's own Arabic task configs and prompt functions,
pointed at the local benchmark mirror, with the leaderboard rows lighteval chokes on fixed or reported.

Lighteval's traps handled here, in code:
- its task registry downloads ``tinyBenchmarks.pkl`` at import: an empty placeholder is written first;
- mirror mode: copies of its configs with ``hf_repo`` pointed at the local mirror folder (subset/split names kept);
- real rows it chokes on (bare alif answers, trailing spaces, ...) are normalised by the benchmark's row fix
  (``BenchmarkSpec.fix_row``) or reported, never fatal;
- 0-shot only, ``few_shots_split`` cleared (its list value crashes ArabicMMLU/MadinahQA).
"""

from __future__ import annotations

import copy
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from arabic_r1.benchmark_mirrors import mirror_configs, repo_dir, write_mirror
from arabic_r1.benchmarks import oall_subsets, spec
from arabic_r1.digests import path_digest
from arabic_r1.errors import ExplainedError
from arabic_r1.params import EvalParams

log = logging.getLogger(__name__)

ACC_NORM = "acc:logprob_normalization=LogProbCharNorm(name='norm', ignore_first_space=False)"


class EvalSetupError(ExplainedError, ValueError):
    """Something that would stop or silently skew an evaluation, found before it starts."""


# --------------------------------------------------------------------------------------------- traps
def prepare_lighteval_offline() -> Path:
    """An empty ``tinyBenchmarks.pkl`` next to lighteval's task module, so importing its registry downloads nothing."""
    import importlib.util

    found = importlib.util.find_spec("lighteval")
    if found is None or found.origin is None:
        raise EvalSetupError("lighteval is not installed: pip install lighteval==0.13.0")
    pkl = Path(found.origin).parent / "tasks" / "tasks" / "tinyBenchmarks.pkl"
    if not pkl.exists():
        try:
            pkl.touch()
        except OSError as exc:
            raise EvalSetupError(
                f"cannot write {pkl} (lighteval downloads it at import otherwise): {exc}"
            ) from None
    _import_ifeval_quietly()
    return pkl


def _import_ifeval_quietly() -> None:
    """lighteval's registry imports its ifeval task, which tries to download nltk's punkt at import and prints
    "[nltk_data] Error loading punkt" when offline. No OALL task uses it: import it once with its prints dropped."""
    import contextlib
    import importlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            importlib.import_module("lighteval.tasks.tasks.ifeval.instructions_utils")
        except ImportError:  # ifeval's own dependencies missing: lighteval skips the task, so do we
            pass


# --------------------------------------------------------------------------------------------- warts
class Warts:
    """Rows normalised or skipped, per task: every one reported, none fatal."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._seen: set[tuple] = set()

    def __deepcopy__(self, memo: dict) -> Warts:
        """One collector per evaluation: lighteval's Registry deep-copies every task config, and with it the prompt
        function holding this; the copies must record into the same report, not into copies nobody reads."""
        return self

    def add(self, task: str, index: Any, kind: str, detail: str) -> bool:
        """Record one row's wart; False when it was already recorded (each model run formats the same rows)."""
        if (task, index, kind) in self._seen:
            return False
        self._seen.add((task, index, kind))
        self.rows.append({"task": task, "row": index, "kind": kind, "detail": detail})
        return True

    def summary(self) -> dict[str, Any]:
        by: dict[str, int] = defaultdict(int)
        for r in self.rows:
            by[r["kind"]] += 1
        return {"counts": dict(by), "rows": self.rows}


class GuardedPrompt:
    """lighteval's prompt function behind the benchmark's row fix (``BenchmarkSpec.fix_row``): a row it cannot
    format is reported and skipped."""

    def __init__(self, benchmark: str, original, warts: Warts):
        self.benchmark, self.original, self.warts = benchmark, original, warts
        self.__name__ = getattr(original, "__name__", "prompt")

    def __call__(self, line: dict[str, Any], task_name: str | None = None):
        index = line.get("__index")
        row, notes = spec(self.benchmark).fix_row({k: v for k, v in line.items() if not k.startswith("__")})
        for kind, detail in notes:
            self.warts.add(task_name or self.benchmark, index, kind, detail)
        try:
            return self.original(row, task_name)
        except Exception as exc:  # one bad row never aborts a benchmark
            self.warts.add(task_name or self.benchmark, index, "skipped", f"{type(exc).__name__}: {exc}")
            return None


# --------------------------------------------------------------------------------------------- mirrors
def write_mirror_from_hub(out: Path, benchmarks: list[str], hub_root: str | None = None) -> dict[str, int]:
    """Download every OALL v2 subset and split of ``benchmarks`` (needs network) into a mirror folder.

    ``hub_root`` reads the repos from another folder in the hub layout instead (an existing mirror), which is how
    the tests exercise this without network."""
    from datasets import load_dataset

    counts = {}
    for key in benchmarks:
        b = spec(key)
        source = b.hf_repo if hub_root is None else str(mirror_view(Path(hub_root) / b.hf_repo))
        subsets = oall_subsets(key) if hub_root is None else sorted(mirror_configs(Path(source)))
        rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for subset in subsets:
            for split in b.splits:
                try:
                    ds = load_dataset(
                        source, None if subset == "default" and hub_root is None else subset, split=split
                    )
                except ValueError:  # a split this subset does not have
                    continue
                rows[(subset, split)] = [dict(r) for r in ds]
        write_mirror(out, key, rows)
        counts[key] = sum(len(v) for v in rows.values())
    return counts


# ---------------------------------------------------------------------------------------------- tasks
def lighteval_configs(benchmark: str) -> list[Any]:
    """The benchmark's lighteval task configs (``BenchmarkSpec.lighteval_tasks``), restricted to the subsets phase 05
    runs (the OALL v2 task list for the leaderboard's seven)."""
    wanted = set(oall_subsets(benchmark))
    return [c for c in spec(benchmark).lighteval_tasks() if (c.hf_subset or "default") in wanted]


def task_configs(ep: EvalParams, benchmark: str, warts: Warts) -> tuple[list[Any], list[str]]:
    """Configs to run (guarded prompts, 0-shot, mirror repos) and the OALL subsets the mirror lacks."""
    configs, missing = [], []
    present = None
    if ep.source == "mirror":
        repo = repo_dir(ep.mirror_dir, benchmark)
        if not (repo / "README.md").is_file():
            raise EvalSetupError(
                f"{benchmark}: no mirror at {repo} (arabic-r1 benchmarks mirror --out {ep.mirror_dir})"
            )
        present = set(mirror_configs(repo))
        view = str(mirror_view(repo))  # one digest of the folder, shared by all its subsets
    only = set(ep.subsets.get(benchmark, [])) or None
    for base in lighteval_configs(benchmark):
        subset = base.hf_subset or "default"
        if only is not None and subset not in only:
            continue
        if present is not None and subset not in present:
            missing.append(subset)
            continue
        c = copy.deepcopy(base)
        c.few_shots_split, c.few_shots_select = (
            None,
            None,
        )  # 0-shot; the list-valued split crashes lighteval 0.13
        c.prompt_function = GuardedPrompt(benchmark, base.prompt_function, warts)
        if ep.source == "mirror":
            c.hf_repo = view
        configs.append(c)
    if only and not configs:
        raise EvalSetupError(f"eval.subsets[{benchmark!r}] matches no OALL v2 subset: {sorted(only)}")
    return configs, missing


def mirror_view(repo: Path) -> Path:
    """The mirror folder under a name that carries its contents' digest (a symlink to it).

    The datasets library caches a local folder's rows under a key made of the folder's *name* and the subset, not
    its path or contents: a second mirror with the same layout, or a refreshed one, would return the first one's rows.
    Loading through ``<RepoName>-<digest>`` makes the cache key follow the rows."""
    import datasets

    view = (
        Path(datasets.config.HF_DATASETS_CACHE)
        / "arabic_r1_mirror_views"
        / f"{repo.name}-{path_digest(repo)[:16]}"
    )
    if not view.exists():
        view.parent.mkdir(parents=True, exist_ok=True)
        tmp = view.with_name(f".{view.name}.{os.getpid()}")
        tmp.symlink_to(repo.resolve(), target_is_directory=True)
        try:
            os.replace(tmp, view)
        except OSError:  # another process made the same view
            tmp.unlink(missing_ok=True)
    return view


def task_string(configs: list[Any]) -> str:
    return ",".join(f"{c.name}|0" for c in configs)
