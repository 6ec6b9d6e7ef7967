"""``benchmarks/gpu_check.sh``, the prepared script for a lent GPU, runs end to end: here on the CPU
with the tiny preset (the same script, the same benchmark, the same lines a GPU run prints)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_runs_on_a_python3_with_torch_without_a_venv_or_an_installed_kidata(tmp_path):
    # a machine as a lent GPU comes: python3 has torch, kidata is not installed, PYTHON is unset
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    site = subprocess.run([sys.executable, "-c", "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "DEVICE": "cpu",
           "PRESET": "model/ki_tiny.toml", "STEPS": "1", "BATCH": "2", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": site}  # -S: no site-packages (no editable kidata), only torch's directory
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh"], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "make setup" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gpu_check 20") and lines[1].startswith("torch ")
    for variant in ("ki", "joint", "pi0", "pi0_fast"):
        assert any(line.split()[:3] == [variant, "train", "step"] and "TFLOP/step" in line for line in lines), variant
    assert any(line.startswith("ki / pi0 step time:") for line in lines)
    assert any(line.startswith("sample_actions (1 observation, 2 cameras, 10 steps)") for line in lines)


def test_a_variant_out_of_memory_is_reported_and_the_others_still_run(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("model_bench", ROOT / "benchmarks" / "model_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    measured = bench.run_variant

    def run_variant(config, inputs, args, device, dtype):
        if config.variant == "joint":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return measured(config, inputs, args, device, dtype)

    monkeypatch.setattr(bench, "run_variant", run_variant)
    monkeypatch.setattr(sys, "argv", ["model_bench.py", "--batch", "2", "--steps", "1", "--text", "12", "--prefix", "5",
                                      "--variants", "ki,joint,pi0"])
    bench.main()
    lines = capsys.readouterr().out.splitlines()
    assert "  joint     out of memory at batch 2: lower BATCH or keep activation checkpointing on" in lines
    assert [line.split()[0] for line in lines if "fwd+bwd" in line] == ["ki", "pi0"]


def test_model_bench_refuses_half_of_a_batch_of_one_in_one_sentence():
    result = subprocess.run([sys.executable, "benchmarks/model_bench.py", "--batch", "1", "--half-batch"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert "--half-batch needs --batch 2 or more (got --batch 1: half of it is empty)" in result.stderr
    assert "Traceback" not in result.stderr
