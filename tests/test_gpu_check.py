"""``benchmarks/gpu_check.sh``, the prepared script for a lent GPU, runs end to end: here on the CPU
with the tiny preset (the same script, the same benchmark, the same lines a GPU run prints)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_prints_every_variants_training_step_and_the_sampling_latency():
    env = {**os.environ, "DEVICE": "cpu", "PRESET": "kidata/assets/model/ki_tiny.toml", "STEPS": "1", "BATCH": "2",
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh"], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gpu_check 20") and lines[1].startswith("torch ")
    for variant in ("ki", "joint", "pi0", "pi0_fast"):
        assert any(line.split()[:3] == [variant, "train", "step"] and "tokens/s" in line for line in lines), variant
    assert any(line.startswith("ki / pi0 step time:") for line in lines)
    assert any(line.startswith("sample_actions (1 observation, 2 cameras, 10 steps)") for line in lines)


def test_model_bench_refuses_half_of_a_batch_of_one_in_one_sentence():
    result = subprocess.run([sys.executable, "benchmarks/model_bench.py", "--batch", "1", "--half-batch"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert "--half-batch needs --batch 2 or more (got --batch 1: half of it is empty)" in result.stderr
    assert "Traceback" not in result.stderr
