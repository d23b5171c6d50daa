"""experiment=goodfellow2014: the paper's networks, data range, split and SGD schedule, in a short run."""

import types

import lightning as L
import pytest
import torch

from gan_lightning.data import MNISTDataModule, scale_pixels
from gan_lightning.metrics.parzen import SIGMAS
from gan_lightning.metrics.quality import generated_batches
from gan_lightning.networks import MaxoutDiscriminator, SigmoidMLPGenerator


class Probe(L.Callback):
    """What the run trained on and with: the data, G's output bias at the start, the optimizers at the end."""

    def on_train_start(self, trainer, pl_module):
        self.images = trainer.datamodule.train_set.images.clone()
        self.start_bias = pl_module.generator.net[-2].bias.detach().clone()
        self.grid_range = pl_module.output_range

    def on_train_end(self, trainer, pl_module):
        self.groups = [dict(opt.param_groups[0]) for opt in trainer.optimizers]
        self.metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}


def test_the_paper_set_up_trains_on_unit_range_pixels_with_its_schedule(train_in_process, mnist_root, tmp_path):
    probe = Probe()
    # tiny MNIST, its first 64 training images, batch 32 -> 2 steps an epoch; the momentum ramp over 2 epochs
    train_in_process("experiment=goodfellow2014", "trainer.max_epochs=2", "callbacks.sgd_schedule.saturate_epochs=2",
                     "data.num_train=64", "eval.parzen.enabled=true", run_dir=tmp_path / "run", extra_callbacks=[probe])

    assert len(probe.images) == 64  # the first num_train images only
    assert probe.images.min() == 0.0 and probe.images.max() == 1.0  # pixels in [0, 1], G's Sigmoid range
    marginals = probe.images.mean(0).reshape(-1).clamp(1e-7, 1 - 1e-7)
    torch.testing.assert_close(probe.start_bias, torch.logit(marginals))  # G starts at the mean image
    opt_d, opt_g = probe.groups
    steps = 2 * (64 // 32)
    assert opt_g["lr"] == pytest.approx(0.1 / 1.000004**steps, rel=1e-9) and opt_d["lr"] == pytest.approx(0.05 / 1.000004**steps, rel=1e-9)
    assert opt_g["momentum"] == pytest.approx(0.6)  # epoch 1 of a 2-epoch ramp from 0.5 to 0.7
    # the end-of-run evaluation logs the Parzen estimate beside fid_mnist
    assert probe.metrics["eval/parzen_sigma"] in [pytest.approx(s) for s in SIGMAS]
    assert probe.metrics["eval/parzen_ll_stderr"] > 0 and abs(probe.metrics["eval/parzen_ll"]) < 1e4
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["model"]["output_range"] == [0, 1]
    assert (tmp_path / "run" / "samples" / "epoch_001.png").is_file()


def test_unit_range_data_and_the_classifier_range_conversion():
    raw = torch.tensor([0, 51, 255], dtype=torch.uint8)
    torch.testing.assert_close(scale_pixels(raw, (0, 1)), raw.float() / 255)
    torch.testing.assert_close(scale_pixels(raw, (-1, 1)), raw.float() / 127.5 - 1)

    class UnitRangeGAN:  # the interface generated_batches uses
        device, output_range = torch.device("cpu"), (0.0, 1.0)

        def sample(self, z):
            return z

    out = torch.cat(list(generated_batches(UnitRangeGAN(), torch.tensor([0.0, 0.25, 1.0]), batch_size=2)))
    torch.testing.assert_close(out, torch.tensor([-1.0, -0.5, 1.0]))  # the classifier gets [-1, 1]


def test_paper_networks_shapes_and_dropout_only_while_training():
    g, d = SigmoidMLPGenerator(), MaxoutDiscriminator()
    images = g(torch.randn(4, 100))
    assert images.shape == (4, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    x = torch.rand(4, 1, 28, 28)
    d.eval()
    torch.testing.assert_close(d(x), d(x))  # no dropout at evaluation
    d.train()
    assert not torch.equal(d(x), d(x))
    assert sum(p.numel() for p in d.parameters()) == 784 * 1200 + 1200 + 240 * 1200 + 1200 + 240 + 1


def test_the_paper_schedule_decays_the_rates_per_update_whatever_the_iterations_per_step():
    from gan_lightning.callbacks import SGDSchedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1, momentum=0.5)
    trainer = types.SimpleNamespace(optimizers=[opt])
    schedule = SGDSchedule(lr_decay=1.01)
    schedule.on_train_batch_end(trainer, types.SimpleNamespace(iterations=4), None, None, 0)  # one step of 4 iterations
    schedule.on_train_batch_end(trainer, types.SimpleNamespace(iterations=1), None, None, 1)  # and one of 1
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 1.01**5, rel=1e-12)  # as after 5 steps of 1 iteration
