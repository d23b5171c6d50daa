"""gan_lightning.compat: each workaround of a Lightning, Hydra or torch internal still meets the
internal it relies on (these fail when upstream changes under it), and the start-up check names the
supported releases when one is gone."""

import os
import sys
import types
from unittest import mock

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.strategies.launchers.subprocess_script import _hydra_subprocess_cmd
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import read_write

from gan_lightning import compat
from tests.conftest import compose_config


def test_the_start_up_check_passes_here_and_names_the_supported_releases_when_an_internal_is_gone(monkeypatch):
    compat.check()
    monkeypatch.delattr(torch, "_amp_foreach_non_finite_check_and_unscale_")
    with pytest.raises(compat.CompatError, match=r"_amp_foreach_non_finite_check_and_unscale_ is gone.*supported: torch>=2.6, lightning>=2.4"):
        compat.check()


def test_disarming_ds_step_hooks_stops_it_counting_a_step():
    calls = []
    opt = LightningOptimizer(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1))
    opt._strategy = types.SimpleNamespace(optimizer_step=lambda optimizer, closure: optimizer.step(closure))  # as the trainer's
    opt._on_before_step = lambda: calls.append("before")  # what Lightning's manual loop arms before every batch
    opt._on_after_step = lambda: calls.append("after")
    opt.step()
    assert calls == ["before", "after"]
    compat.count_generator_steps_only(opt)
    opt.step()
    assert calls == ["before", "after"]


def test_the_nvml_cuda_check_is_dropped_only_without_the_nvidia_driver(monkeypatch):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    with mock.patch.object(compat.ctypes, "CDLL", return_value=object()):  # a driver: Lightning's setting stays
        compat.use_default_cuda_check_without_nvidia_driver()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1" and torch.cuda._nvml_based_avail()
    with mock.patch.object(compat.ctypes, "CDLL", side_effect=OSError("libnvidia-ml.so.1: cannot open shared object file")):
        compat.use_default_cuda_check_without_nvidia_driver()
    assert "PYTORCH_NVML_BASED_CUDA_CHECK" not in os.environ and not torch.cuda._nvml_based_avail()


def test_in_a_multirun_lightnings_ddp_processes_rerun_this_job_alone_in_its_folder(tmp_path, monkeypatch):
    job_dir = tmp_path / "3_optim.lr_g=0.001"
    compose_config(output_dir=job_dir)
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg):
        hydra_cfg.mode = RunMode.MULTIRUN
        hydra_cfg.overrides.task = ["optim.lr_g=0.001", "trainer.devices=2"]
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "optim.lr_g=0.001,0.002", "trainer.devices=2"])
    with compat.ddp_launch_scope("/runs/a,b=1/last.ckpt"):
        command, _ = _hydra_subprocess_cmd(local_rank=1)  # what Lightning starts rank 1 with
    assert command[:3] == [sys.executable, "-m", "gan_lightning.train"]
    assert command[3:6] == ["optim.lr_g=0.001", "trainer.devices=2", "ckpt_path='/runs/a,b=1/last.ckpt'"]
    assert f'hydra.run.dir="{job_dir}"' in command and "-m" not in command[3:]  # not the sweep again
    assert sys.argv == ["train.py", "-m", "optim.lr_g=0.001,0.002", "trainer.devices=2"]  # restored


def test_the_hparams_summary_goes_to_the_runs_own_event_file(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    writer = compat.file_writer(logger.experiment)
    writer.add_summary(torch.utils.tensorboard.summary.scalar("x", 1.0))
    writer.flush()
    assert [str(p.parent) for p in tmp_path.rglob("events.out.tfevents.*")] == [logger.log_dir]  # no second run folder


def test_the_scalers_findings_and_the_fused_inf_check_are_read_as_tensors():
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    assert compat.scaler_found_inf(scaler, optimizer) is None  # before unscale_
    scaler.scale(weight.sum()).backward()
    scaler.unscale_(optimizer)
    assert compat.loss_scale(scaler).item() == 4.0 and compat.scaler_found_inf(scaler, optimizer).item() == 0.0
    weight.grad[1] = float("nan")
    found = torch.zeros(1)
    compat.add_non_finite([weight.grad], found)
    assert found.item() == 1.0 and weight.grad[0].item() == 1.0  # found, and the finite gradient left as it was


def test_the_sweep_launchers_internals_are_checked_before_a_sweep(monkeypatch):
    from submitit.local.local import LocalJob
    from submitit.slurm.slurm import SlurmExecutor

    compat.check(compat.SWEEP_CHECKS)
    assert callable(getattr(compat.BasicLauncher, "launch"))
    monkeypatch.setattr(LocalJob, "__init__", lambda self, *args, **kwargs: None)  # a LocalJob that keeps no _process
    with pytest.raises(compat.CompatError, match=r"LocalJob no longer keeps its process as _process.*supported: .*submitit>=1.5"):
        compat.check(compat.SWEEP_CHECKS)
    monkeypatch.undo()
    monkeypatch.setattr(SlurmExecutor, "_make_submission_file_text", None)  # gone (a base class declares it)
    with pytest.raises(compat.CompatError, match=r"SlurmExecutor has no _make_submission_file_text"):
        compat.check(compat.SWEEP_CHECKS)
