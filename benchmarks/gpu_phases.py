"""Phases 04-05 of the smoke profile on a CUDA GPU, from a run folder whose phases 00-03 ran on a CPU (make
gpu-bundle carries it): Unsloth training in bf16, then the evaluation, as notebooks 04 and 05 run them (the same
phase functions, without Jupyter), then the checks of the GPU check (benchmarks/gpu_check.sh):

- the student audit meets the bars the CPU smoke run meets (arabic_r1.audit.shortfalls);
- every routed- and shared-expert adapter changed: no all-zero lora_B in the saved adapter, and phase 04's own
  per-expert check (coverage.json);
- the merged bf16 model differs from the base by the adapter's delta (phase 04's merge check, its max error).

    python benchmarks/gpu_phases.py --run-root RUNS --out OUT [--dry-run]

``--dry-run`` (any machine): loads the params with the GPU overrides, checks them with preflight's rules, and
prints what it would run. Writes ``OUT/gpu_phases.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RUN_NAME = "gpu_base"  # the run folder make gpu-bundle builds and carries (phases 00-03 of smoke)
GPU_OVERRIDES = ["run.device=cuda", "run.hardware=H100:80", "run.torch_threads=null", "model.dtype=bfloat16", "train.backend=unsloth",
                 "train.precision=bf16"]  # fmt: skip
EXPERT_FAMILIES = ("routed_experts", "shared_experts")


def overrides(run_root: Path) -> list[str]:
    return [f"run.root={run_root}", f"run.name={RUN_NAME}", *GPU_OVERRIDES]


def zero_lora_b(adapter_dir: Path) -> dict[str, dict[str, int]]:
    """Per expert family of the saved adapter: lora_B tensors, and how many are all zeros (never updated)."""
    from safetensors.torch import load_file

    from arabic_r1.moe_lora import family_of

    out = {f: {"tensors": 0, "all_zero": 0} for f in EXPERT_FAMILIES}
    for name, t in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        fam = family_of(f".{name}.")
        if "lora_B" in name and fam in out:
            out[fam]["tensors"] += 1
            out[fam]["all_zero"] += int(not bool(t.abs().max() > 0))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-root", type=Path, default=REPO / "runs")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "gpu_check")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()
    from arabic_r1.params_loading import load_params
    from arabic_r1.preflight import preflight

    ovr = overrides(a.run_root.resolve())
    params = load_params("smoke", ovr)
    problems = [f.line() for f in preflight(params) if f.status == "fail"]
    print(f"phases 04-05 of smoke with {' '.join(ovr)}; preflight: {problems or 'ok'}")
    if a.dry_run:
        return 1 if problems else 0
    from arabic_r1.audit import shortfalls
    from arabic_r1.evaluate import run_oall_evaluation
    from arabic_r1.notebook import open_phase
    from arabic_r1.train import run_moe_lora_sft

    result: dict = {"overrides": ovr}
    t0 = time.perf_counter()
    params, phase = open_phase("moe_lora_sft", "smoke", ovr)
    train = run_moe_lora_sft(params, phase)
    result["phase_04"] = {"seconds": round(time.perf_counter() - t0, 1),
                          **{k: train.summary.get(k) for k in ("steps", "first_loss", "final_loss_median",
                                                               "peak_memory_mb", "merge_check", "expert_adapters")}}  # fmt: skip
    result["lora_B"] = zero_lora_b(phase.dir / "adapter")
    t0 = time.perf_counter()
    params, phase = open_phase("oall_evaluation", "smoke", ovr)
    run_oall_evaluation(params, phase)
    audit = json.loads((phase.dir / "student_audit.json").read_text(encoding="utf-8"))
    result["phase_05"] = {"seconds": round(time.perf_counter() - t0, 1),
                          "student": {m: {k: v["overall"].get(k) for k in ("parsed", "truncated", "four_phase")}
                                      for m, v in audit["models"].items()}}  # fmt: skip
    failures = shortfalls(audit)
    failures += [f"{f}: {c['all_zero']} of {c['tensors']} lora_B all zero" for f, c in result["lora_B"].items()
                 if c["all_zero"] or not c["tensors"]]  # fmt: skip
    result["failures"] = failures
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_phases.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print("RESULT " + json.dumps(result))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
