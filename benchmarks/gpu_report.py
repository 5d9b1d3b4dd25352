"""The GPU check's one JSON and one markdown table (benchmarks/gpu_check.sh, step d), from what its steps wrote:
``OUT/gpu_phases.json`` and ``OUT/<family>/results.json``.

    python benchmarks/gpu_report.py OUT [--dry-run]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FAMILIES = ("qwen3_moe", "deepseek_v3")


def collect(out: Path) -> dict:
    def read(p: Path) -> dict | None:
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    return {
        "phases": read(out / "gpu_phases.json"),
        "moe_lora": {f: read(out / f / "results.json") for f in FAMILIES},
    }


def table(report: dict) -> str:
    lines = ["| family | backend | MoE backend | s/step | tok/s | vs transformers | warm-up s | peak MB | expert grads |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for fam, res in report["moe_lora"].items():
        for r in (res or {}).get("results", []):
            if "error" in r:
                lines.append(
                    f"| {fam} | {r['backend']} | | failed: {r['error'].splitlines()[-1][:80]} | | | | | |"
                )
                continue
            lines.append(f"| {fam} | {r['backend'].partition('@')[0]} | {r['moe_backend']} | {r['seconds_per_step']} | "
                         f"{r['tokens_per_s']:.0f} | {r.get('speed_vs_transformers', '')} | {r.get('warmup_seconds', '')} | "
                         f"{r['peak_memory_mb']:.0f} | {'non-zero' if r['expert_grads_nonzero'] else 'ZERO'} |")  # fmt: skip
    ph = report["phases"]
    if ph:
        p4, p5 = ph.get("phase_04", {}), ph.get("phase_05", {})
        lines += ["", f"Phases 04-05 (smoke, Unsloth bf16): phase 04 {p4.get('seconds')} s, loss {p4.get('first_loss')} -> "
                  f"{p4.get('final_loss_median')}, merge check {p4.get('merge_check')}; expert lora_B {ph.get('lora_B')}; "
                  f"phase 05 {p5.get('seconds')} s, student {p5.get('student')}; failures: {ph.get('failures') or 'none'}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    out = Path(sys.argv[1])
    if "--dry-run" in sys.argv:
        print(f"would write {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
        return 0
    report = collect(out)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / "gpu_check.md").write_text(table(report), encoding="utf-8")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
