"""benchmarks/throughput.py on a chosen device and precision (--device, --precision), in its --tiny setting."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import PROJECT
from tests.gpu import CUDA


def benchmark(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(PROJECT / "benchmarks" / "throughput.py"), "--tiny", "--threads", "1", "--no-ddp", *args]
    return subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})


# On the CPU the fp16 run alone (a loss scaler, the case with most to go wrong); bf16 training on the
# CPU is checked in test_mixed_precision.py. On a GPU both.
@pytest.mark.parametrize("device,precision", [("cpu", "16-mixed")] + [
    pytest.param("cuda", precision, marks=CUDA.marks) for precision in ("bf16-mixed", "16-mixed")])
def test_benchmark_runs_on_a_device_in_mixed_precision(mnist_root, device, precision):
    result = benchmark("--data-root", str(mnist_root), "--device", device, "--precision", precision, "--contenders", "plain", "project", "common")
    assert result.returncode == 0, result.stderr[-5000:]
    assert f"device {device}" in result.stdout and f"precision {precision}" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("| 16 | non_saturating |"))
    assert "nan" not in row


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_benchmark_on_cuda_without_a_gpu_is_one_line(mnist_root, capsys):
    # in this process: the check comes before any run, a subprocess would only add its imports
    spec = importlib.util.spec_from_file_location("throughput", PROJECT / "benchmarks" / "throughput.py")
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    with pytest.raises(SystemExit) as stop:
        throughput.main(["--tiny", "--data-root", str(mnist_root), "--device", "cuda"])
    assert stop.value.code == 2 and capsys.readouterr().err.strip() == "error: --device cuda: torch sees no CUDA GPU here"
