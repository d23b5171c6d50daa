"""benchmarks/throughput.py on a chosen device and precision (--device, --precision), in its --tiny setting."""

import pytest
import torch

from tests.gpu import CUDA
from tests.test_benchmark import load_throughput, run_throughput


# On the CPU the fp16 run alone (a loss scaler, the case with most to go wrong); bf16 training on the
# CPU is checked in test_mixed_precision.py. On a GPU both.
@pytest.mark.parametrize("device,precision", [("cpu", "16-mixed")] + [
    pytest.param("cuda", precision, marks=CUDA.marks) for precision in ("bf16-mixed", "16-mixed")])
def test_benchmark_runs_on_a_device_in_mixed_precision(mnist_root, device, precision, capsys):
    run_throughput("--no-ddp", "--data-root", str(mnist_root), "--device", device, "--precision", precision, "--contenders", "plain", "project", "common")
    out = capsys.readouterr().out
    assert f"device {device}" in out and f"precision {precision}" in out
    row = next(line for line in out.splitlines() if line.startswith("| 16 | non_saturating |"))
    assert "nan" not in row


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_benchmark_on_cuda_without_a_gpu_is_one_line(mnist_root, capsys):
    with pytest.raises(SystemExit) as stop:
        load_throughput().main(["--tiny", "--data-root", str(mnist_root), "--device", "cuda"])
    assert stop.value.code == 2 and capsys.readouterr().err.strip() == "error: --device cuda: torch sees no CUDA GPU here"
