#!/usr/bin/env bash
# The GPU check of issue 19, one prepared script for a lent device (one GPU, well inside 8 minutes):
# the 2B preset's training step in bf16 on random weights (ms/step, tokens/s, MFU, peak memory per
# variant, AdamW included), KI vs pi0 step time, and 2-camera 10-step sample_actions latency with
# the prefix KV cache. Nothing depends on it: CI has no GPU. Results go to RESULTS.md by hand,
# with the date and the device line it prints.
#
#   bash benchmarks/gpu_check.sh > "$OUT/gpu_check.txt"
#   DEVICE=cpu PRESET=kidata/assets/model/ki_tiny.toml STEPS=2 bash benchmarks/gpu_check.sh   # the smoke test
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}"
PRESET="${PRESET:-kidata/assets/model/ki_2b.toml}"
STEPS="${STEPS:-10}"
BATCH="${BATCH:-8}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
DTYPE=bfloat16
[ "$DEVICE" = cpu ] && DTYPE=float32
date -u +"gpu_check %Y-%m-%dT%H:%M:%SZ"
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PYTHON" -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0])"
# the paper's prompt layout at 2B: ~200 text tokens (prompt + FAST targets), 2 x 256 image tokens
timeout 420 "$PYTHON" benchmarks/model_bench.py --preset "$PRESET" --device "$DEVICE" --dtype "$DTYPE" \
    --batch "$BATCH" --text 200 --prefix 48 --steps "$STEPS" --optimizer
