"""What a profile needs installed: one registry (a params setting -> the distribution it needs -> the extra of this
package that installs it), read by ``arabic-r1 doctor`` on the machine that runs the profile (installed? in range?)
and by ``arabic-r1 preflight`` on a laptop (does the set-up install it at all?).

The set-ups: ``make install`` on a GPU machine installs :data:`GPU_SETUP_EXTRAS` (``make install
EXTRAS=gpu,deepspeed,vllm`` adds vLLM); the Colab/Kaggle setup cell installs the ``gpu`` extra's pins with --no-deps
(:mod:`arabic_r1.hosted_install`). Version ranges are the
extras' own (``pyproject.toml``), read from this package's installed metadata, so there is one place to change them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from packaging.requirements import Requirement

from arabic_r1.params import Params

GPU_SETUP_EXTRAS = (
    "gpu",
    "deepspeed",
)  # the Makefile's GPU default (tests/test_preflight.py keeps them equal)


@dataclass(frozen=True)
class Need:
    dist: str  # the distribution, as pip names it
    why: str  # the setting that needs it, with its key
    applies: Callable[[Params], bool]


def _optim(params: Params) -> str:
    return str(params.train.sft.get("optim", ""))


NEEDS: tuple[Need, ...] = (
    Need("unsloth", "train.backend: unsloth", lambda p: p.train.backend == "unsloth"),
    Need("unsloth_zoo", "train.backend: unsloth", lambda p: p.train.backend == "unsloth"),
    Need("unsloth", "eval.backend: unsloth", lambda p: p.eval.backend == "unsloth"),
    Need("bitsandbytes", "model.load_in_4bit: true", lambda p: p.model.load_in_4bit),
    Need("bitsandbytes", "eval.load_in_4bit: true", lambda p: p.eval.load_in_4bit),
    Need("bitsandbytes", "train.sft.optim: an 8-bit/paged optimizer", lambda p: "8bit" in _optim(p) or "paged" in _optim(p)),
    Need("deepspeed", "train.launcher: accelerate_deepspeed_zero3", lambda p: p.train.launcher == "accelerate_deepspeed_zero3"),
    Need("vllm", "eval.backend: vllm", lambda p: p.eval.backend == "vllm"),
    Need("vllm", "distill.backend: vllm_in_process", lambda p: p.distill.backend == "vllm_in_process"),
    Need("vllm", "eval.judge.backend: vllm_in_process", lambda p: p.eval.judge is not None and p.eval.judge.backend == "vllm_in_process"),
)  # fmt: skip


def needs_of(params: Params) -> list[Need]:
    """The distributions this profile needs beyond the base install, one per distribution (first reason kept)."""
    seen: dict[str, Need] = {}
    for need in NEEDS:
        if need.applies(params) and need.dist not in seen:
            seen[need.dist] = need
    return list(seen.values())


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def extra_requirements() -> dict[str, dict[str, Requirement]]:
    """{extra: {distribution: requirement}} from this package's installed metadata (pyproject's optional deps)."""
    out: dict[str, dict[str, Requirement]] = {}
    for line in metadata.requires("arabic_r1") or []:
        req = Requirement(line)
        if req.marker is None:
            continue
        for extra in _extras_of(str(req.marker)):
            out.setdefault(extra, {})[_norm(req.name)] = req
    return out


def _extras_of(marker: str) -> list[str]:
    import re

    return [_norm(m) for m in re.findall(r'extra == "([^"]+)"', marker)]


def provider(dist: str) -> tuple[str, Requirement] | None:
    """(the extra that installs ``dist``, its requirement), preferring the GPU set-up's own extras."""
    extras = extra_requirements()
    for extra in (*GPU_SETUP_EXTRAS, *sorted(extras)):
        req = extras.get(extra, {}).get(_norm(dist))
        if req is not None:
            return extra, req
    return None


def installed_problem(dist: str) -> str | None:
    """On this machine: why ``dist`` cannot serve the profile (missing, or outside its extra's range), else None."""
    found = provider(dist)
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        how = f"pip install '.[{found[0]}]'" if found else f"pip install {dist}"
        return f"not installed ({how})"
    if found and version not in found[1].specifier:
        return f"{version} installed, the '{found[0]}' extra asks for {found[1].specifier}"
    return None
