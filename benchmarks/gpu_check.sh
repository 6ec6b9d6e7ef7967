#!/usr/bin/env bash
# The GPU check, one prepared script for a lent device (one 80 GB GPU, well inside 8 minutes): the
# 2B preset's training step in bf16 on random weights with activation checkpointing (ms/step,
# tokens/s, TFLOP per part, MFU, peak memory per variant, AdamW included; a variant that runs out of
# memory says so and the others still run), KI vs pi0 step time, and 2-camera 10-step
# sample_actions latency with the prefix KV cache. Nothing depends on it: CI has no GPU. Results
# go to RESULTS.md by hand, with the date and the device line it prints.
#
# Runs from a fresh clone: this checkout's kidata is imported through PYTHONPATH (installed or
# not), with .venv/bin/python when there is one, else a python3 that already has torch (GPU
# images ship one), else after `make setup` (creates .venv from PyPI).
#
#   bash benchmarks/gpu_check.sh > "$OUT/gpu_check.txt"
#   DEVICE=cpu PRESET=model/ki_tiny.toml STEPS=2 bash benchmarks/gpu_check.sh   # the smoke test
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}"
PRESET="${PRESET:-model/ki_2b.toml}"
STEPS="${STEPS:-10}"
BATCH="${BATCH:-8}"
CHECKPOINTING="${CHECKPOINTING:-1}"  # batch 8 without it needs ~75-82 GiB at 2B: past an 80 GB card
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then
        PYTHON=.venv/bin/python
    elif command -v python3 >/dev/null && python3 -c "import torch, numpy" 2>/dev/null; then
        PYTHON=python3
    else
        echo "gpu_check: no .venv and no python3 with torch here: running make setup" >&2
        make setup >&2
        PYTHON=.venv/bin/python
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c "import kidata.model.ki_model" 2>/dev/null; then
    echo "gpu_check: $PYTHON cannot import kidata's model from $PWD (it needs torch and numpy): run make setup or set PYTHON" >&2
    exit 2
fi
DTYPE=bfloat16
[ "$DEVICE" = cpu ] && DTYPE=float32
date -u +"gpu_check %Y-%m-%dT%H:%M:%SZ"
"$PYTHON" -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0])"
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
FLAGS=()
[ "$CHECKPOINTING" = 1 ] && FLAGS+=(--checkpointing)
# the paper's prompt layout at 2B: ~200 text tokens (prompt + FAST targets), 2 x 256 image tokens
timeout 420 "$PYTHON" benchmarks/model_bench.py --preset "$PRESET" --device "$DEVICE" --dtype "$DTYPE" \
    --batch "$BATCH" --text 200 --prefix 48 --steps "$STEPS" --optimizer ${FLAGS[@]+"${FLAGS[@]}"}
