"""Training images on the training device (data.on_device): a batch is one gather there, DDP
sharding and exact resume unchanged; and no host reads of tensor values in a training step except
the non-finite alarm's one per optimizer step and those of logging steps."""

import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data import DistributedSampler

from gan_lightning.data import DataError, MNISTDataModule
from gan_lightning.module import EMA
from tests.gpu import DEVICES, on


class Batches(L.Callback):
    def __init__(self):
        self.devices, self.datamodule, self.root_device = [], None, None

    def on_train_start(self, trainer, pl_module):
        self.datamodule, self.root_device = trainer.datamodule, trainer.strategy.root_device

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.devices.append(batch.device)


@pytest.mark.parametrize("device", DEVICES)
def test_training_images_live_on_the_training_device(train_in_process, device):
    # auto on a GPU; on the CPU the same code path by asking for it
    batches = Batches()
    train_in_process(*on(device), "eval=none", f"data.on_device={'auto' if device == 'cuda' else 'true'}", extra_callbacks=[batches])
    assert batches.datamodule.data_device == batches.root_device
    assert batches.datamodule.train_set.images.device == batches.root_device
    assert len(batches.devices) == 8 and set(batches.devices) == {batches.root_device}


def test_auto_keeps_the_images_in_host_memory_on_the_cpu(train_in_process):
    batches = Batches()
    train_in_process("eval=none", extra_callbacks=[batches])
    assert batches.datamodule.data_device is None


def test_device_data_with_worker_processes_is_one_line(train_in_process):
    with pytest.raises(DataError, match=r"^data.on_device=true needs data.num_workers=0 .*got 2$"):
        train_in_process("eval=none", "data.on_device=true", "data.num_workers=2")


def test_device_resident_data_shards_under_ddp_and_resumes_within_an_epoch(mnist_root):
    dm = MNISTDataModule(str(mnist_root), batch_size=16, download=False, on_device=True)
    dm.setup("fit")  # no trainer: the CPU is the device
    assert dm.data_device == torch.device("cpu")
    loader = dm.train_dataloader()
    # Lightning's DDP rebuild of the loader around a DistributedSampler keeps the device-resident
    # dataset and the resume hook; the two ranks' shards are disjoint and cover the data.
    shards = []
    for rank in (0, 1):
        sampler = DistributedSampler(dm.train_set, num_replicas=2, rank=rank, shuffle=True, seed=42)
        rebuilt = _update_dataloader(loader, sampler)
        assert rebuilt.dataset is dm.train_set and rebuilt.num_workers == 0 and rebuilt.trained == loader.trained
        shards.append(torch.cat(list(rebuilt)))
    assert shards[0].shape == shards[1].shape == (128, 1, 28, 28)
    everything = torch.cat(shards)
    assert torch.unique(everything.flatten(1), dim=0).shape[0] == 256
    # exact resume: skipping the batches trained already gives the rest of the same epoch's order
    loader.sampler.set_epoch(1)  # as Lightning does at every epoch start, a resumed one too
    full = list(loader)
    loader.sampler.set_epoch(1)
    loader.trained = lambda: 3
    rest = list(loader)
    assert len(rest) == len(full) - 3 and all(torch.equal(a, b) for a, b in zip(rest, full[3:]))


def test_ema_matches_torchs_averaged_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ours, reference = EMA(net, 0.9), torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(3):
        net(torch.randn(5, 3))  # moves BatchNorm's running statistics
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ours.update_parameters(net)
        reference.update_parameters(net)
    for (name, a), b in zip(ours.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
    resumed = EMA(net, 0.9)
    resumed.load_state_dict(ours.state_dict())
    assert resumed.started()


class HostReads(L.Callback):
    """Counts reads of tensor values into Python (item, bool, float, int, tolist) per training
    batch: on a GPU each is a device-to-host sync."""

    NAMES = ("item", "__bool__", "__float__", "__int__", "tolist")

    def __init__(self, monkeypatch):
        self.monkeypatch, self.counts, self.current = monkeypatch, [], None
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))

    def _counting(self, original):
        def read(tensor, *args):
            if self.current is not None:
                self.current += 1
            return original(tensor, *args)
        return read

    def on_train_batch_start(self, *args):
        self.current = 0

    def on_train_batch_end(self, *args):
        self.counts.append(self.current)
        self.current = None


@pytest.mark.parametrize("extra", [[], ["ema=enabled", "optim.d_steps=2", "optim.iterations_per_step=2"], ["trainer.precision=16-mixed"]])
def test_a_training_step_reads_tensor_values_only_for_the_non_finite_check(train_in_process, monkeypatch, extra):
    reads = HostReads(monkeypatch)
    train_in_process("eval=none", "trainer.log_every_n_steps=100", "callbacks.collapse_alarm=null", "data.on_device=true", *extra,
                     extra_callbacks=[reads])
    d_steps, iterations = (2, 2) if "optim.d_steps=2" in extra else (1, 1)
    # The alarm's decision to stop before a bad update: once per step with fused Adam, which skips a
    # flagged update on the device (however many updates the step makes), once per update under
    # fp16 loss scaling; and one at the epoch's last batch, whose scalars the module writes itself
    # (log_every_n_steps=100 is longer than the epoch). 256 images, d_steps x iterations minibatches of 32 per step.
    steps = 256 // (32 * d_steps * iterations)
    per_step = d_steps + 1 if "trainer.precision=16-mixed" in extra else 1
    assert reads.counts == [per_step] * (steps - 1) + [per_step + 1]


class SyncWarnings(L.Callback):
    """Counts CUDA's synchronizing-operation warnings (torch.cuda.set_sync_debug_mode) per batch."""

    def __init__(self):
        self.counts = []

    def on_train_batch_start(self, *args):
        self.catcher = warnings.catch_warnings(record=True)
        self.records = self.catcher.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, *args):
        torch.cuda.set_sync_debug_mode(0)
        self.catcher.__exit__(None, None, None)
        self.counts.append(sum("synchroniz" in str(w.message) for w in self.records))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_on_a_gpu_a_training_step_syncs_only_for_the_non_finite_check(train_in_process, precision):
    syncs = SyncWarnings()
    train_in_process(*on("cuda"), "eval=none", "trainer.log_every_n_steps=100", "callbacks.collapse_alarm=null", "ema=enabled",
                     f"trainer.precision={precision}", extra_callbacks=[syncs])
    # after the first batch: the alarm's one per step (fused Adam skips a flagged update on the device), one per update under fp16 loss scaling
    assert syncs.counts[1:] == [2 if precision == "16-mixed" else 1] * 7, syncs.counts
