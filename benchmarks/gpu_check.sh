#!/usr/bin/env bash
# The GPU check: one command, at most 8 minutes on one H100/H200 with no network and only torch, transformers, peft
# and accelerate (the lent device machine; any CUDA box works the same).
#   1. on a CPU machine with registry access: make gpu-bundle   (wheels + the smoke run's phases 00-03 in .gpu_bundle/)
#   2. on the GPU machine, with .gpu_bundle carried:  bash benchmarks/gpu_check.sh
# (a) phases 04-05 of the smoke profile on the GPU, train.backend unsloth in bf16, and the student audit's bars;
# (b) every routed/shared expert adapter changed, the merged bf16 model = base + adapter delta (max error printed);
# (c) transformers+PEFT vs Unsloth per UNSLOTH_MOE_BACKEND on Qwen3-MoE- and DeepSeek-V3-shaped layers (hidden 2048,
#     64 experts, top-8), compile (first two steps) apart, expert gradients non-zero;
# (d) $OUT/gpu_check.json and $OUT/gpu_check.md (OUT defaults to runs/gpu_check).
# --dry-run (any machine, in the tests): builds every config and prints every command without running them.
# Time budget (timeouts): 30 s set-up + 200 s phases + 4 x 40 s Qwen3-MoE + 2 x 40 s DeepSeek-V3 = 470 s.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=""
[ "${1:-}" = "--dry-run" ] && DRY="--dry-run"
PY="${PYTHON:-python3}"
OUT="${OUT:-runs/gpu_check}"
B=.gpu_bundle
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -z "$DRY" ]; then
  [ -f "$B/run.tgz" ] || { echo "no $B/run.tgz: run 'make gpu-bundle' on a CPU machine first and carry $B" >&2; exit 2; }
  if ls "$B"/wheels/*.whl >/dev/null 2>&1; then
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$B"/wheels/*.whl
  fi
  export PYTHONPATH="$PWD/$B/site:/tmp/site:$PWD"
  mkdir -p runs "$OUT" && tar xzf "$B/run.tgz" -C runs
  nvidia-smi -L
  echo "carried: $(ls "$B"/wheels | wc -l) wheels, $(ls "$B"/site | tr '\n' ' ')"
  "$PY" -c "import torch, transformers, peft, trl, unsloth; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__, 'unsloth', unsloth.__version__)"
else
  export PYTHONPATH="$PWD:${PYTHONPATH:-}"
fi
STATUS=0
timeout 200 "$PY" benchmarks/gpu_phases.py --run-root runs --out "$OUT" $DRY || STATUS=$?
timeout 200 "$PY" benchmarks/bench_moe_lora.py --shape gpu --family qwen3_moe --steps 8 --batch 4 --seq 512 --backend-timeout 40 \
  --backends transformers,unsloth@grouped_mm,unsloth@native_torch,unsloth@unsloth_triton --out "$OUT/qwen3_moe" $DRY || STATUS=$?
timeout 110 "$PY" benchmarks/bench_moe_lora.py --shape gpu --family deepseek_v3 --steps 8 --batch 4 --seq 512 --backend-timeout 40 \
  --backends transformers,unsloth@grouped_mm --out "$OUT/deepseek_v3" $DRY || STATUS=$?
"$PY" benchmarks/gpu_report.py "$OUT" $DRY
exit $STATUS
