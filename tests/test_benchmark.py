"""benchmarks/throughput.py runs end to end in its --tiny setting and prints its tables (no timings checked).

The script runs in this process (a subprocess would only add its imports); what it changes for its own
process (torch threads, warning filters, logger levels) is put back afterwards."""

import importlib.util
import logging
import warnings

import torch
from hydra.utils import instantiate

from tests.conftest import PROJECT, compose_config

QUIETED = ("lightning", "lightning.pytorch", "lightning.fabric", "gan_lightning")  # the loggers the script turns down


def load_throughput():
    spec = importlib.util.spec_from_file_location("throughput", PROJECT / "benchmarks" / "throughput.py")
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    return throughput


def run_throughput(*args: str) -> None:
    """throughput.py's main(args) in this process."""
    threads, levels = torch.get_num_threads(), {name: logging.getLogger(name).level for name in QUIETED}
    try:
        with warnings.catch_warnings():
            load_throughput().main(["--tiny", "--threads", "1", *args])
    finally:
        torch.set_num_threads(threads)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_throughput_benchmark_runs_and_prints_the_tables(mnist_root, capsys):
    # --no-ddp: the DDP comparison starts train.py three times (seconds of imports each); its runs are
    # checked below, and its step timer in a 2-process run in tests/test_train.py
    run_throughput("--data-root", str(mnist_root), "--no-ddp")
    out = capsys.readouterr().out
    assert "| batch | loss | (0) tuned loop | (1) plain loop | (2) project | (4) common example | (2)/(0) median (min-max) | (2)/(1) | (2)/(4) |" in out
    assert "| 16 | non_saturating |" in out
    assert "(3a) torchvision per-sample" in out and "\n| 16 | " in out
    assert "nan" not in out


def test_the_ddp_comparison_runs_train_py_with_its_step_timer(tmp_path):
    throughput = load_throughput()
    cfg = compose_config(*throughput.ddp_overrides("data", 2, 64, 10, 2, tmp_path / "run"))
    assert (cfg.trainer.devices, cfg.data.batch_size, cfg.trainer.limit_train_batches) == (2, 32, 12)  # the global batch split
    assert cfg.callbacks.evaluate_generator is None  # steps alone are timed
    timer = instantiate(cfg.callbacks.step_timer)
    assert type(timer).__name__ == "StepTimer" and timer.path == str(tmp_path / "run" / "step_times.json")


def test_the_step_costs_benchmark_prints_its_table_and_undoes_its_timers(mnist_root, capsys):
    from lightning.pytorch.core.optimizer import LightningOptimizer
    from lightning.pytorch.trainer import call

    from gan_lightning.module import GAN

    spec = importlib.util.spec_from_file_location("step_costs", PROJECT / "benchmarks" / "step_costs.py")
    step_costs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step_costs)
    wrapped = [(GAN, "training_step"), (GAN, "manual_backward"), (LightningOptimizer, "step"), (torch.optim.Adam, "step"),
               (torch.Tensor, "backward"), (call, "_call_callback_hooks")]
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # torch wraps Adam.step for its profiler at the first Adam, for good
    before = [getattr(owner, name) for owner, name in wrapped]
    threads, levels = torch.get_num_threads(), {name: logging.getLogger(name).level for name in QUIETED}
    try:
        with warnings.catch_warnings():
            step_costs.main(["--tiny", "--threads", "1", "--data-root", str(mnist_root), "--steps-per-batch", "2"])
    finally:
        torch.set_num_threads(threads)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    out = capsys.readouterr().out
    assert "## Microseconds per GAN step, batch 16, 2 GAN steps per loader batch" in out
    for row in ("| project, step |", "NaN alarm |", "optimizer layers |", "Lightning's loop between training steps |", "callbacks' batch hooks |"):
        assert row in out
    assert "nan" not in out and "project / tuned (images/s): " in out
    assert [getattr(owner, name) for owner, name in wrapped] == before  # the timers are gone: later runs in this process are plain
