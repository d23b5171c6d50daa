"""benchmarks/throughput.py and step_costs.py run end to end in their --tiny setting and print their tables, and
levers.py's bf16 and medium-matmul variants train (no timings checked).

The scripts run in this process (a subprocess would only add its imports); what they change for their own
process (torch threads, warning filters, logger levels) is put back afterwards."""

import importlib.util
import logging
import tempfile
import warnings

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import PROJECT, compose_config

QUIETED = ("lightning", "lightning.pytorch", "lightning.fabric", "gan_lightning")  # the loggers the script turns down


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, PROJECT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_throughput():
    return load_benchmark("throughput")


def run_benchmark(name: str, *args: str) -> None:
    """benchmarks/<name>.py's main(--tiny --threads 1 args) in this process."""
    threads, levels = torch.get_num_threads(), {name: logging.getLogger(name).level for name in QUIETED}
    try:
        with warnings.catch_warnings():
            load_benchmark(name).main(["--tiny", "--threads", "1", *args])
    finally:
        torch.set_num_threads(threads)
        for logger, level in levels.items():
            logging.getLogger(logger).setLevel(level)


def run_throughput(*args: str) -> None:
    run_benchmark("throughput", *args)


def test_throughput_benchmark_runs_and_prints_the_tables(mnist_root, capsys, tmp_path, monkeypatch):
    # --no-ddp: the DDP comparison starts train.py three times (seconds of imports each); its runs are
    # checked below, and its step timer in a 2-process run in tests/test_train.py
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the benchmark's runs write
    run_throughput("--data-root", str(mnist_root), "--no-ddp", "--matmul-precision", "medium",
                   "--variant", "k8:optim.iterations_per_step=8")  # 8 iterations a batch: more than --tiny's 6 (whole batches are timed)
    assert not list(tmp_path.glob("gan_throughput_*"))  # its runs' checkpoints and logs are gone with it
    out = capsys.readouterr().out
    assert "matmul precision medium" in out
    assert torch.get_float32_matmul_precision() == "highest"  # every contender set it for its run only
    assert "| batch | loss | (0) tuned loop | (1) plain loop | (2) project | (4) common example | (2)/(0) median (min-max) | (2)/(1) | (2)/(4) |" in out
    assert "| 16 | non_saturating |" in out
    assert "| 16 | non_saturating | project[k8] | optim.iterations_per_step=8 |" in out
    assert "(3a) torchvision per-sample" in out and "\n| 16 | " in out
    assert "nan" not in out


def test_the_ddp_comparison_runs_train_py_with_its_step_timer(tmp_path):
    throughput = load_throughput()
    cfg = compose_config(*throughput.ddp_overrides("data", 2, 64, 10, 2, tmp_path / "run"))
    assert (cfg.trainer.devices, cfg.data.batch_size, cfg.trainer.limit_train_batches) == (2, 32, 12)  # the global batch split
    assert cfg.callbacks.evaluate_generator is None  # steps alone are timed
    timer = instantiate(cfg.callbacks.step_timer)
    assert type(timer).__name__ == "StepTimer" and timer.path == str(tmp_path / "run" / "step_times.json")


def test_the_step_costs_benchmark_prints_its_table_and_undoes_its_timers(mnist_root, capsys, tmp_path, monkeypatch):
    from lightning.pytorch.core.optimizer import LightningOptimizer
    from lightning.pytorch.trainer import call

    from gan_lightning.module import GAN

    wrapped = [(GAN, "training_step"), (GAN, "manual_backward"), (LightningOptimizer, "step"), (torch.optim.Adam, "step"),
               (torch.Tensor, "backward"), (call, "_call_callback_hooks")]
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # torch wraps Adam.step for its profiler at the first Adam, for good
    before = [getattr(owner, name) for owner, name in wrapped]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run_benchmark("step_costs", "--data-root", str(mnist_root), "--iterations-per-step", "2", "--per-callback")
    assert not list(tmp_path.glob("gan_step_costs_*"))
    out = capsys.readouterr().out
    assert "## Microseconds per GAN step, batch 16, optim.iterations_per_step=2" in out
    for row in ("| project, step |", "NaN alarm |", "optimizer layers |", "Lightning's loop between training steps |", "callbacks' batch hooks |",
                "| NonFiniteAlarm |", "| ModelCheckpoint |", "| Lightning's dispatch around them"):  # the last three: --per-callback's table
        assert row in out
    assert "nan" not in out and "project / tuned (images/s): " in out and "project / tuned from the layers" in out
    assert [getattr(owner, name) for owner, name in wrapped] == before  # the timers are gone: later runs in this process are plain


@pytest.mark.parametrize("variant", ["cat+frozen+fused+bf16", "cat+frozen+fused+medium"])
def test_the_levers_benchmark_runs_its_bf16_and_medium_matmul_variants(variant):
    levers = load_benchmark("levers")
    data = torch.rand(64, 1, 28, 28) * 2 - 1  # images as scale_to_tanh_range leaves them
    assert levers.run(variant, data, batch_size=8, steps=3, warmup=1) > 0
    assert torch.get_float32_matmul_precision() == "highest"
