"""gan_lightning.compat: each workaround of a Lightning, Hydra or torch internal still meets the
internal it relies on (these fail when upstream changes under it), and the start-up check names the
supported releases when one is gone."""

import os
import sys
import types
from unittest import mock

import lightning as L
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


def test_the_ema_groups_are_the_tensors_themselves_per_device_and_dtype_as_averaged_models():
    from torch.optim import swa_utils
    from torch.utils import _foreach_utils

    from gan_lightning.module import EMA

    # AveragedModel groups with the very helper the workaround uses (the reason to use it at all)
    assert swa_utils._group_tensors_by_device_and_dtype is _foreach_utils._group_tensors_by_device_and_dtype
    averages = [torch.zeros(2), torch.zeros(3, dtype=torch.float64), torch.zeros(4)]
    current = [torch.ones(2), torch.ones(3, dtype=torch.float64), torch.ones(4)]
    grouped = compat.group_by_device_and_dtype([averages, current])
    assert set(grouped) == {(torch.device("cpu"), torch.float32), (torch.device("cpu"), torch.float64)}
    [group_averages, group_current], _ = grouped[(torch.device("cpu"), torch.float32)]
    assert [id(t) for t in group_averages] == [id(averages[0]), id(averages[2])]  # the tensors, in order, not copies
    assert [id(t) for t in group_current] == [id(current[0]), id(current[2])]
    torch._foreach_lerp_(group_averages, group_current, 0.5)  # what multi_avg_fn does to a group
    assert averages[0].tolist() == [0.5, 0.5] and averages[1].tolist() == [0.0, 0.0, 0.0]

    # module.EMA's grouped update gives AveragedModel's numbers, float64 buffer included
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    net.register_buffer("count", torch.zeros(2, dtype=torch.float64))
    ours, torchs = EMA(net, decay=0.9), swa_utils.AveragedModel(net, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(3):
        with torch.no_grad():
            net.weight.add_(1.0)
            net.count.add_(1.0)
        ours.update_parameters(net)
        torchs.update_parameters(net)
    for a, b in zip(ours.state_dict().values(), torchs.state_dict().values()):
        assert torch.equal(a, b)


class _CountingBatches(L.LightningModule):
    """One weight; configure_optimizers asks for estimated_stepping_batches, as Lightning issue
    #20550's repro (and a OneCycleLR) does; records each batch it trains on."""

    def __init__(self, seen: list):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = seen

    def training_step(self, batch, batch_idx):
        self.seen.append(int(batch))
        return (self.weight * batch.float()).sum()

    def configure_optimizers(self):
        assert self.trainer.estimated_stepping_batches > 0
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")  # the resumed run needs no ModelCheckpoint
def test_a_resumed_epoch_skips_the_batches_lightnings_restored_counter_says_were_trained(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from gan_lightning.data import ResumableLoader

    def fit(seen: list, max_steps: int, ckpt_path=None, callbacks=()):
        trainer = L.Trainer(max_steps=max_steps, max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=bool(callbacks), callbacks=list(callbacks), default_root_dir=tmp_path)
        loader = ResumableLoader(torch.arange(6), batch_size=None, trained=lambda: compat.batches_trained_this_epoch(trainer))
        trainer.fit(_CountingBatches(seen), train_dataloaders=loader, ckpt_path=ckpt_path)
        return trainer

    seen = []
    # a checkpoint saved in on_train_batch_end after batch 1 (completed one short of ready there: Lightning issue #18060)
    fit(seen, max_steps=3, callbacks=[ModelCheckpoint(dirpath=tmp_path, filename="mid", every_n_train_steps=2, save_top_k=-1)])
    assert seen == [0, 1, 2]
    resumed = []
    trainer = fit(resumed, max_steps=-1, ckpt_path=tmp_path / "mid.ckpt")
    assert resumed == [2, 3, 4, 5]  # the 2 batches trained before the checkpoint are skipped, none twice
    assert compat.batches_trained_this_epoch(trainer) == 6

    from lightning.pytorch.loops import progress

    monkeypatch.setattr(progress, "_BatchProgress", lambda: types.SimpleNamespace(current=types.SimpleNamespace(completed=0)))  # no `ready`
    with pytest.raises(compat.CompatError, match=r"batch progress has no current.ready.*supported: .*lightning>=2.4"):
        compat.check()


def test_the_hook_calls_are_checked_for_the_attribute_that_lets_a_hook_log(monkeypatch):
    from lightning.pytorch.trainer import call

    monkeypatch.setattr(call, "_call_callback_hooks", lambda trainer, hook_name, *args: None)
    with pytest.raises(compat.CompatError, match=r"_call_callback_hooks no longer sets the module's _current_fx_name"):
        compat.check()


def test_resetting_logged_values_is_checked_for_lightnings_skip_of_reset_values(monkeypatch):
    from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection

    monkeypatch.setattr(_ResultCollection, "valid_items", lambda self: iter(self.items()))
    with pytest.raises(compat.CompatError, match=r"no longer skips the values reset since they were logged"):
        compat.check()
