"""The stability options wired into GAN: EMA of G, learning-rate schedules, penalties, label smoothing."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import FAST, check, run_train
from gan_lightning.module import GAN

MODEL = {
    "latent_dim": 8,
    "generator": {"_target_": "gan_lightning.networks.MLPGenerator", "latent_dim": 8, "hidden_dim": 16, "image_shape": [1, 28, 28]},
    "discriminator": {"_target_": "gan_lightning.networks.MLPDiscriminator", "hidden_dim": 16, "image_shape": [1, 28, 28]},
}
NON_SATURATING = {
    "name": "non_saturating",
    "generator": {"_target_": "gan_lightning.losses.non_saturating_generator_loss", "_partial_": True},
    "discriminator": {"_target_": "gan_lightning.losses.gan_discriminator_loss", "_partial_": True},
}
HINGE = {
    "name": "hinge",
    "generator": {"_target_": "gan_lightning.losses.hinge_generator_loss", "_partial_": True},
    "discriminator": {"_target_": "gan_lightning.losses.hinge_discriminator_loss", "_partial_": True},
}


def optim(**extra):
    return {"lr_g": 1e-3, "lr_d": 1e-3, "d_steps": 1, "optimizer": {"_target_": "torch.optim.Adam", "betas": [0.5, 0.999]}, **extra}


class Record(L.Callback):
    """After every batch: G's weights and both learning rates."""

    def __init__(self):
        self.weights, self.lrs = [], []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.weights.append([p.detach().clone() for p in pl_module.generator.parameters()])
        self.lrs.append([opt.param_groups[0]["lr"] for opt in trainer.optimizers])


def fit(module: GAN, steps: int) -> Record:
    record = Record()
    images = torch.rand(steps * 4, 1, 28, 28) * 2 - 1
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[record])
    trainer.fit(module, DataLoader(images, batch_size=4))
    return record


def test_ema_follows_its_definition_from_start_step_and_feeds_sample():
    torch.manual_seed(0)
    decay, start = 0.8, 2
    module = GAN(MODEL, NON_SATURATING, optim(), num_sample_images=3, ema={"decay": decay, "start_step": start})
    assert module.sampler() is module.generator  # nothing averaged yet: samples come from G
    record = fit(module, steps=6)
    # Generator step k (1-based) ends with weights record.weights[k-1]; the average starts as a
    # copy at step `start`, then ema <- decay * ema + (1 - decay) * w after every step.
    expected = record.weights[start - 1]
    for w in record.weights[start:]:
        expected = [decay * e + (1 - decay) * x for e, x in zip(expected, w)]
    for e, got in zip(expected, module.generator_ema.module.parameters()):
        torch.testing.assert_close(got, e)
    assert not torch.allclose(expected[0], record.weights[-1][0])  # the average differs from G
    module.eval()
    torch.testing.assert_close(module.sample(), module.generator_ema.module(module.sample_noise))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lr_schedules_fall_to_zero_over_the_run_for_both_networks(schedule):
    torch.manual_seed(0)
    module = GAN(MODEL, NON_SATURATING, optim(lr_schedule=schedule))
    record = fit(module, steps=8)
    lr_d, lr_g = zip(*record.lrs)
    assert lr_d == lr_g
    assert lr_d[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(lr_d, lr_d[1:]))  # falls every batch
    if schedule == "linear":
        assert lr_d[3] == pytest.approx(1e-3 * (1 - 4 / 8))  # after 4 of 8 steps


def test_penalties_reach_discriminator_loss_and_are_off_by_default():
    torch.manual_seed(0)
    plain = GAN(MODEL, NON_SATURATING, optim())
    assert plain.r1_weight == 0 and plain.gp_weight == 0 and plain.generator_ema is None
    module = GAN(MODEL, {**NON_SATURATING, "gradient_penalty_weight": 10.0}, optim(), regularization={"r1_weight": 5.0})
    real, fake = torch.randn(4, 1, 28, 28, requires_grad=True), torch.randn(4, 1, 28, 28)
    penalties = module.d_penalties(real, fake, module.discriminator(real))
    assert set(penalties) == {"r1", "gp"} and all(v > 0 for v in penalties.values())


def test_label_smoothing_is_refused_for_a_loss_without_a_real_target():
    with pytest.raises(ValueError, match="real_label"):
        GAN(MODEL, HINGE, optim(), regularization={"real_label": 0.9})


def test_hinge_and_least_squares_train_a_few_steps_to_finite_weights():
    torch.manual_seed(0)
    for loss in (HINGE, {**NON_SATURATING, "discriminator": {"_target_": "gan_lightning.losses.least_squares_discriminator_loss", "_partial_": True},
                          "generator": {"_target_": "gan_lightning.losses.least_squares_generator_loss", "_partial_": True}}):
        module = GAN(MODEL, loss, optim())
        weights = [p for p in module.parameters() if p.dim() > 1]  # (D's last bias has no gradient under hinge while all logits are within the margin)
        before = [p.detach().clone() for p in weights]
        fit(module, steps=3)
        assert all(torch.isfinite(p).all() for p in module.parameters())
        assert all(not torch.equal(a, b) for a, b in zip(before, weights))  # both networks learned


@pytest.mark.parametrize("overrides", [
    ["experiment=wgan_gp", "trainer.limit_train_batches=3"],
    ["loss=least_squares", "regularization.real_label=0.9", "regularization.r1_weight=10", "regularization.spectral_norm=true",
     "regularization.instance_noise.sigma=0.1", "ema=enabled", "ema.start_step=2", "optim.lr_schedule=linear"],
])
def test_remedies_train_from_the_command_line(mnist_root, tmp_path, overrides):
    check(run_train(*FAST, "eval=none", f"data.root={mnist_root}", f"hydra.run.dir={tmp_path}", *overrides))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    module = GAN.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    if "ema=enabled" in overrides:
        assert module.generator_ema.n_averaged.item() == ckpt["global_step"] - 2 + 1
        assert module.sampler() is module.generator_ema.module
        assert module.hparams.regularization["spectral_norm"] is True
    else:
        assert module.d_steps == 5 and module.gp_weight == 10.0


def test_stable_mlp_preset_keeps_the_reference_networks_and_adds_spectral_norm_and_ema():
    from hydra import compose, initialize_config_dir

    from tests.conftest import PROJECT

    with initialize_config_dir(config_dir=str(PROJECT / "conf"), version_base="1.3"):
        plain = compose("train")
        stable = compose("train", overrides=["experiment=stable_mlp"])
    assert stable.model == plain.model and stable.loss == plain.loss and stable.optim == plain.optim
    assert stable.regularization.spectral_norm is True and stable.ema.decay == 0.999
    assert plain.regularization.spectral_norm is False and plain.ema.decay is None
