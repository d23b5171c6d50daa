"""benchmarks/throughput.py runs end to end in its --tiny setting and prints its tables (no timings checked)."""

import os
import subprocess
import sys

from tests.conftest import PROJECT


def test_throughput_benchmark_runs_and_prints_the_tables(mnist_root):
    cmd = [sys.executable, str(PROJECT / "benchmarks" / "throughput.py"), "--tiny", "--data-root", str(mnist_root), "--threads", "1"]
    result = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-5000:]
    out = result.stdout
    assert "| batch | loss | (0) tuned loop | (1) plain loop | (2) project | (4) common example | (2)/(0) median (min-max) | (2)/(1) | (2)/(4) |" in out
    assert "| 16 | non_saturating |" in out
    assert "(3a) torchvision per-sample" in out and "\n| 16 | " in out
    assert "1 process vs 2 DDP processes" in out
    assert "nan" not in out
