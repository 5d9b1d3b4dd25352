#!/usr/bin/env bash
# Phase 04 on a GPU (the lent device machine, or any CUDA box with the project installed); under 8 minutes.
# Unsloth vs plain transformers+PEFT on the same random MoE (8 layers, hidden 1024, 32 experts top-4) with expert
# LoRA active: tokens/s, peak memory, and non-zero expert-adapter gradients under each UNSLOTH_MOE_BACKEND; then the
# GPU tests. Results land in $OUT (or runs/gpu_check).
# On a machine without network, put the wheels the image lacks in .whl/ (see README, Performance).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
  # packages carried unpacked (bitsandbytes trimmed to the CUDA 13 library: its wheel alone is 43 MB)
  [ -d .gpu_site ] && export PYTHONPATH="$PWD/.gpu_site:$PYTHONPATH"
else
  export PYTHONPATH="$PWD:${PYTHONPATH:-}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT="${OUT:-runs/gpu_check}"
mkdir -p "$OUT"
nvidia-smi -L
python3 -c "import torch, transformers, peft, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__)"
python3 benchmarks/bench_moe_lora.py --gpu-size --family qwen3_moe --steps 8 --batch 8 --seq 512 \
  --backends transformers,unsloth@grouped_mm,unsloth@native_torch,unsloth@unsloth_triton --backend-timeout 150 --out "$OUT/qwen3_moe"
python3 benchmarks/bench_moe_lora.py --gpu-size --family deepseek_v3 --steps 8 --batch 8 --seq 512 \
  --backends transformers,unsloth@grouped_mm --backend-timeout 150 --out "$OUT/deepseek_v3"
python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
