"""make gpu-bundle: what the GPU check (benchmarks/gpu_check.sh) needs on a CUDA machine without network that has
only torch, transformers, peft, accelerate and the packages in benchmarks/device_packages.txt, in ``.gpu_bundle/``
(ignored by git; carry it to the machine):

    python scripts/gpu_bundle.py [--list] [--limit-mib 64]

- ``wheels/``: the wheels below, ``site/``: bitsandbytes unpacked, ``run.tgz``: the smoke run's phases 00-03
  (run ``gpu_base``, made here on the CPU: they are CPU work), which phases 04-05 continue there.

1. The import closure of phases 04-05 and Unsloth, measured here: a subprocess imports the phase modules and
   every module they import inside functions (lighteval, unsloth, bitsandbytes...), and names the distribution
   behind each loaded module, at the version installed here (the project's resolved set);
2. minus what the machine has (benchmarks/device_packages.txt) and NOT_CARRIED (imported here, not used there);
3. ``pip download --no-deps`` of those versions for CPython 3.12 on manylinux x86_64 into ``wheels/``, except
   bitsandbytes, whose wheel (~43 MB) is unpacked into ``site/`` with only its CUDA 13 library kept, and the
   wheels in PRUNE, repacked without the files the check never loads;
4. the sizes printed; exit 1 if the tracked repository plus the bundle exceed the limit (64 MiB travel to the
   machine in all).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from arabic_r1.hosted_install import NO_DEPS_EXTRA, norm, pyproject_extra  # noqa: E402  (one place for the pins)

BUNDLE = REPO / ".gpu_bundle"
WHEELS, SITE, RUN_TGZ = BUNDLE / "wheels", BUNDLE / "site", BUNDLE / "run.tgz"
RUN_NAME = "gpu_base"  # benchmarks/gpu_phases.py continues this run
CPU_PHASES = ("00", "01", "02", "03")
DEVICE_PACKAGES = REPO / "benchmarks" / "device_packages.txt"
# what phases 04-05 import (benchmarks/gpu_phases.py runs them); their function-level imports are followed too
CLOSURE_MODULES = ("arabic_r1.train", "arabic_r1.evaluate", "arabic_r1.eval_models", "arabic_r1.eval_generation",
                   "arabic_r1.oall_tasks", "arabic_r1.notebook", "arabic_r1.moe_lora", "arabic_r1.model_loading",
                   "arabic_r1.preflight", "arabic_r1.trace_checks", "unsloth", "unsloth_zoo", "bitsandbytes")  # fmt: skip
# imported by a function of those modules, not on the GPU check's path: the ZeRO-3 launcher, wandb tracking,
# vLLM generation (eval.backend: vllm), Ray data executors
# (hf_transfer: Unsloth's fast downloads; the machine has no network)
NOT_CARRIED = {"deepspeed", "wandb", "vllm", "ray", "hf_transfer"}
# files inside wheels the GPU check never loads, dropped when the wheel is repacked (sizes are the wheels' own):
# inspect_ai's sandbox binaries and web viewer (lighteval imports inspect_ai; 34 -> ~5 MiB), Unsloth Studio's web
# app (27 -> ~3 MiB), datatrove's URL blocklist used by phase 01 (17 -> 0.5 MiB), botocore's AWS service models
# (15 -> ~1 MiB; a client is never created)
PRUNE = {
    "inspect_ai": ("inspect_ai/binaries/", "inspect_ai/_view/dist/"),
    "unsloth": ("studio/",),
    "datatrove": ("datatrove/assets/url_filterblacklists",),
    "botocore": ("botocore/data/",),
}
KEEP = (
    "botocore/data/endpoints.json",
    "botocore/data/partitions.json",
    "botocore/data/_retry.json",
    "botocore/data/sdk-default-configuration.json",
)  # read when botocore is imported
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "manylinux_2_24_x86_64", "manylinux_2_34_x86_64", "manylinux_2_35_x86_64")  # fmt: skip
CLOSURE_CODE = """
import ast, importlib, json, sys
from importlib import metadata
from pathlib import Path
skip = set(sys.argv[2].split(","))
for name in sys.argv[1].split(","):
    try:
        mod = importlib.import_module(name)
    except ImportError:  # a GPU-only package not installed here (bitsandbytes): carried from its pin
        continue
    if not name.startswith("arabic_r1"):
        continue
    for node in ast.walk(ast.parse(Path(mod.__file__).read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        for n in names:
            if n.partition(".")[0] not in skip:
                try:
                    importlib.import_module(n)
                except ImportError:
                    pass
by_module = metadata.packages_distributions()
dists = {}
for top in {k.partition(".")[0] for k in list(sys.modules)}:
    for d in by_module.get(top, []):
        dists[d] = metadata.version(d)
print(json.dumps(dists))
"""


def closure() -> dict[str, str]:
    """{distribution: version} imported by CLOSURE_MODULES here (a fresh interpreter, no GPU needed)."""
    out = subprocess.run(
        [sys.executable, "-c", CLOSURE_CODE, ",".join(CLOSURE_MODULES), ",".join(NOT_CARRIED)],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def device_has() -> set[str]:
    lines = DEVICE_PACKAGES.read_text(encoding="utf-8").splitlines()
    return {norm(x) for x in lines if x.strip() and not x.startswith("#")}


def hosted_extra() -> list[str]:
    """The ``hosted`` extra at the versions installed here: what Unsloth imports when installed --no-deps."""
    from importlib import metadata

    out = []
    for name in pyproject_extra(REPO, "hosted"):
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def to_carry() -> list[str]:
    """Requirements to download: ``name==version`` of the closure, then the GPU stack the Colab/Kaggle install
    puts in with --no-deps (the ``gpu`` extra's pins, cut_cross_entropy, the ``hosted`` extra) where the closure
    lacks them and the machine does not have them."""
    have = device_has() | {norm(n) for n in NOT_CARRIED} | {"arabic-r1"}
    found = {d: v for d, v in sorted(closure().items()) if norm(d) not in have}
    reqs = [f"{d}=={v}" for d, v in found.items()]
    covered = {norm(d) for d in found} | have
    for req in [*pyproject_extra(REPO, "gpu"), *NO_DEPS_EXTRA, *hosted_extra()]:
        if norm(Requirement(req).name) not in covered:
            reqs.append(req)
    return reqs


def download(reqs: list[str]) -> None:
    """Wheels for the GPU machine's CPython 3.12, one version each."""
    for folder in (WHEELS, SITE):
        shutil.rmtree(folder, ignore_errors=True)
    WHEELS.mkdir(parents=True)
    plats = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", *plats,
                    "-d", str(WHEELS), *reqs], check=True)  # fmt: skip
    for whl in WHEELS.glob("bitsandbytes-*.whl"):
        trim_bitsandbytes(whl)
    for dist, prefixes in PRUNE.items():
        for whl in WHEELS.glob(f"{dist}-*.whl"):
            prune_wheel(whl, prefixes)


def prune_wheel(whl: Path, prefixes: tuple[str, ...]) -> None:
    """Repack ``whl`` without the files under ``prefixes`` (KEEP excepted), their RECORD lines dropped too, so
    that pip installs it as it installs any wheel."""

    def dropped(name: str) -> bool:
        return name.startswith(prefixes) and name not in KEEP

    tmp = whl.with_suffix(".tmp")
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if dropped(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(ln for ln in lines if not dropped(ln.split(",", 1)[0])) + "\n").encode()
            dst.writestr(info, data)
    tmp.replace(whl)


def trim_bitsandbytes(whl: Path) -> None:
    """Unpack into .gpu_site with only the CUDA 13 library (the machine's torch is cu130) and the CPU one."""
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            name = Path(info.filename).name
            if name.startswith("libbitsandbytes_") and not ("cuda13" in name or "cpu" in name):
                continue
            z.extract(info, SITE)
    whl.unlink()


def pack_run() -> None:
    """Phases 00-03 of smoke as run gpu_base (fresh ones are skipped), packed for the machine."""
    import tarfile

    cmd = [
        str(Path(sys.executable).parent / "arabic-r1"),
        "reproduce",
        "--params",
        "smoke",
        "-o",
        f"run.name={RUN_NAME}",
    ]
    for phase in CPU_PHASES:
        cmd += ["--only", phase]
    subprocess.run(cmd, check=True, cwd=REPO)
    with tarfile.open(RUN_TGZ, "w:gz") as tar:
        tar.add(
            REPO / "runs" / RUN_NAME, arcname=RUN_NAME, filter=lambda i: None if "/notebooks" in i.name else i
        )


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def tracked_size() -> int:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.split(b"\0")  # fmt: skip
    return sum((REPO / f.decode()).stat().st_size for f in files if f and (REPO / f.decode()).is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print what would be carried, download nothing")
    ap.add_argument("--limit-mib", type=float, default=64.0)
    a = ap.parse_args()
    reqs = to_carry()
    print(f"{len(reqs)} distributions to carry: " + ", ".join(reqs))
    if a.list:
        return 0
    download(reqs)
    pack_run()
    repo, whl, site, run = tracked_size(), size(WHEELS), size(SITE), RUN_TGZ.stat().st_size
    total = (repo + whl + site + run) / 2**20
    print(f"repository {repo / 2**20:.1f} MiB + wheels {whl / 2**20:.1f} MiB + site {site / 2**20:.1f} MiB + "
          f"run.tgz {run / 2**20:.1f} MiB = {total:.1f} MiB (limit {a.limit_mib:g} MiB)")  # fmt: skip
    for w in sorted(WHEELS.glob("*.whl"), key=lambda p: -p.stat().st_size)[:8]:
        print(f"  {w.stat().st_size / 2**20:6.1f} MiB  {w.name}")
    if total > a.limit_mib:
        print("too large for the device machine: trim the largest above, or carry fewer", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
