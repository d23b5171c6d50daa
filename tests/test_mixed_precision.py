"""Mixed precision (trainer.precision=16-mixed / bf16-mixed) with manual optimization: the fp16
gradient scaler's skipped steps are not alarms, a real divergence still is, the logged gradient norm
is the unscaled one, resume restores the scaler; on the CPU and, where present, on a GPU."""

import types

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision

import tests.planted_amp as planted
from gan_lightning.alarms import NonFiniteAlarm, NonFiniteError
from gan_lightning.config import ConfigError
from tests.gpu import DEVICES, on

PLANT = "loss.discriminator._target_=tests.planted_amp.discriminator_loss_times_at_call"


class Recorder(L.Callback):
    """Per batch: the loss scale after it, whether D's weights changed, G's logged gradient norm."""

    def __init__(self):
        self.trainer, self.start_scale, self.scales, self.d_changed, self.grad_norms, self.batch_devices = None, None, [], [], [], []

    def on_train_start(self, trainer, pl_module):
        self.trainer = trainer
        scaler = trainer.precision_plugin.scaler if isinstance(trainer.precision_plugin, MixedPrecision) else None
        self.start_scale = scaler.get_scale() if scaler is not None else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch_devices.append(batch.device)
        self.d_before = [p.detach().clone() for p in pl_module.discriminator.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.scales.append(scaler.get_scale() if scaler is not None else None)
        self.d_changed.append(any(not torch.equal(a, p) for a, p in zip(self.d_before, pl_module.discriminator.parameters())))
        self.grad_norms.append(float(trainer.callback_metrics["train/grad_norm_g"]))


@pytest.fixture(autouse=True)
def fresh_plant():
    planted.calls = 0


def run(train_in_process, device, *overrides, **kwargs):
    recorder = Recorder()
    train_in_process(*on(device), "eval=none", *overrides, extra_callbacks=[recorder], **kwargs)
    return recorder


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_overflow_skips_the_step_without_an_alarm_and_the_logged_gradient_norm_is_unscaled(train_in_process, tmp_path, device):
    # D's 3rd loss x 1e4: finite, but its fp16 gradients times the loss scale (2^16) overflow.
    fp16 = run(train_in_process, device, "trainer.precision=16-mixed", PLANT, "+loss.discriminator.call=3", "+loss.discriminator.factor=1e4",
               run_dir=tmp_path / "fp16")
    assert fp16.trainer.precision_plugin.precision == "16-mixed" and fp16.trainer.precision_plugin.scaler.is_enabled()
    assert len(fp16.scales) == 8  # the run went on to the end of its epoch
    assert fp16.scales[1] == fp16.scales[0] == fp16.start_scale == 2.0**16
    assert fp16.scales[2] == fp16.scales[1] / 2  # the scaler halved its scale ...
    assert fp16.d_changed == [True, True, False, True, True, True, True, True]  # ... and skipped D's update
    # G's gradient norm as logged in fp32: the same size, not 2^16 times it.
    planted.calls = 0
    fp32 = run(train_in_process, device, "trainer.precision=32-true", run_dir=tmp_path / "fp32")
    assert 0.5 < fp16.grad_norms[0] / fp32.grad_norms[0] < 2, (fp16.grad_norms[0], fp32.grad_norms[0])


@pytest.mark.parametrize("device", DEVICES)
def test_a_divergence_in_fp16_still_stops_the_run_before_the_update(train_in_process, device):
    with pytest.raises(NonFiniteError, match=r"non-finite training at step 2 \(epoch 0\): loss_d is nan"):
        run(train_in_process, device, "trainer.precision=16-mixed", PLANT, "+loss.discriminator.call=3", "+loss.discriminator.factor=nan")


@pytest.mark.parametrize("device", DEVICES)
def test_resume_restores_the_gradient_scaler(train_in_process, tmp_path, device):
    first = run(train_in_process, device, "trainer.precision=16-mixed", PLANT, "+loss.discriminator.call=3", "+loss.discriminator.factor=1e4",
                run_dir=tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["MixedPrecision"]["scale"] == first.scales[-1] == 2.0**15
    resumed = run(train_in_process, device, "trainer.precision=16-mixed", "trainer.max_epochs=2", f"ckpt_path={last}", run_dir=tmp_path / "resumed")
    assert resumed.start_scale == 2.0**15  # not a fresh scaler's 2^16
    assert len(resumed.scales) == 8


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_mixed_trains_without_a_scaler(train_in_process, device):
    bf16 = run(train_in_process, device, "trainer.precision=bf16-mixed")
    plugin = bf16.trainer.precision_plugin
    assert isinstance(plugin, MixedPrecision) and plugin.precision == "bf16-mixed" and plugin.scaler is None
    assert len(bf16.grad_norms) == 8 and all(0 < g < float("inf") for g in bf16.grad_norms)
    assert all(torch.isfinite(p).all() for p in bf16.trainer.lightning_module.parameters())


def test_16_mixed_on_the_cpu_is_fp16_with_a_cpu_scaler_not_lightnings_silent_bf16(train_in_process):
    fp16 = run(train_in_process, "cpu", "trainer.precision=16-mixed")
    plugin = fp16.trainer.precision_plugin
    assert plugin.precision == "16-mixed" and plugin.device == "cpu" and plugin.scaler.is_enabled()


def test_an_unknown_precision_is_one_line(train_in_process):
    with pytest.raises(ConfigError, match=r"^trainer.precision must be 32-true, .*bf16-mixed.*, got '8-mixed'$"):
        train_in_process("trainer.precision=8-mixed")


# --- the alarm's scaler logic, on CPU tensors with torch's CPU GradScaler ---

def scaled_setup(scale: float, grad: float):
    """A parameter whose scaled gradient is grad, unscaled by a CPU GradScaler at scale, as
    Lightning does before calling on_before_optimizer_step."""
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    scaler.scale(torch.ones(()))  # creates the scale tensor
    weight.grad = torch.tensor([grad, 1.0])
    scaler.unscale_(optimizer)
    trainer = types.SimpleNamespace(global_step=5, current_epoch=0, checkpoint_callbacks=[], precision_plugin=types.SimpleNamespace(scaler=scaler))
    return weight, optimizer, scaler, trainer


def test_alarm_lets_the_scaler_skip_an_overflowed_step():
    weight, optimizer, scaler, trainer = scaled_setup(2.0**16, float("inf"))
    module = types.SimpleNamespace(last_loss=("loss_d", torch.tensor(0.7)), device=torch.device("cpu"))
    NonFiniteAlarm().on_before_optimizer_step(trainer, module, optimizer)  # no alarm
    scaler.step(optimizer)
    scaler.update()
    assert torch.equal(weight.detach(), torch.ones(2)) and scaler.get_scale() == 2.0**15  # skipped, scale halved


def test_alarm_stops_on_an_overflow_at_scale_1_and_on_a_non_finite_loss_with_a_scaler():
    weight, optimizer, scaler, trainer = scaled_setup(1.0, float("nan"))
    module = types.SimpleNamespace(last_loss=("loss_d", torch.tensor(0.7)), device=torch.device("cpu"))
    with pytest.raises(NonFiniteError, match=r"step 5 \(epoch 0\): loss_d is finite \(0.7\) but its gradient norm is nan at a loss scale of 1 "):
        NonFiniteAlarm().on_before_optimizer_step(trainer, module, optimizer)
    weight, optimizer, scaler, trainer = scaled_setup(2.0**16, 3.0)  # finite gradients ...
    module.last_loss = ("loss_g", torch.tensor(float("inf")))  # ... behind an infinite loss
    with pytest.raises(NonFiniteError, match=r"loss_g is inf"):
        NonFiniteAlarm().on_before_optimizer_step(trainer, module, optimizer)
    module.last_loss = ("loss_g", torch.tensor(0.7))
    NonFiniteAlarm().on_before_optimizer_step(trainer, module, optimizer)  # all finite: passes
