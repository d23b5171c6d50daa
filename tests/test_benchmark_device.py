"""benchmarks/throughput.py on a chosen device and precision (--device, --precision), in its --tiny setting."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import PROJECT
from tests.gpu import DEVICES


def benchmark(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(PROJECT / "benchmarks" / "throughput.py"), "--tiny", "--threads", "1", "--no-ddp", *args]
    return subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_benchmark_runs_on_a_device_in_mixed_precision(mnist_root, device, precision):
    result = benchmark("--data-root", str(mnist_root), "--device", device, "--precision", precision, "--contenders", "plain", "project", "common")
    assert result.returncode == 0, result.stderr[-5000:]
    assert f"device {device}" in result.stdout and f"precision {precision}" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("| 16 | non_saturating |"))
    assert "nan" not in row


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_benchmark_on_cuda_without_a_gpu_is_one_line(mnist_root):
    result = benchmark("--data-root", str(mnist_root), "--device", "cuda")
    assert result.returncode == 2 and result.stderr.strip() == "error: --device cuda: torch sees no CUDA GPU here"
