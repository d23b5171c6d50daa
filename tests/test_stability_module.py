"""The stability options wired into GAN: EMA of G, learning-rate schedules, penalties, label smoothing."""

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader

from gan_lightning.module import GAN
from tests.conftest import compose_config

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
    "d_output": "margin",
    "generator": {"_target_": "gan_lightning.losses.hinge_generator_loss", "_partial_": True},
    "discriminator": {"_target_": "gan_lightning.losses.hinge_discriminator_loss", "_partial_": True},
}


def optim(**extra):
    return {"lr_g": 1e-3, "lr_d": 1e-3, "d_steps": 1, "optimizer": {"_target_": "torch.optim.Adam", "betas": [0.5, 0.999]}, **extra}


class Record(L.Callback):
    """After every batch: G's weights, both learning rates and the names of the logged scalars."""

    def __init__(self):
        self.weights, self.lrs, self.logged = [], [], []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.logged.append(set(trainer.callback_metrics))
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
    # the last step (a logging step) logs the rates its updates used, not those the schedule set after it
    logged = module.trainer.callback_metrics
    assert float(logged["train/lr_d"]) == float(logged["train/lr_g"]) == pytest.approx(lr_d[-2]) and lr_d[-2] > 0


def test_penalties_and_ema_are_off_by_default():
    plain = GAN(MODEL, NON_SATURATING, optim())
    assert plain.r1_weight == 0 and plain.gp_weight == 0 and plain.generator_ema is None


def test_label_smoothing_is_refused_for_a_loss_without_a_real_target():
    with pytest.raises(ValueError, match="real_label"):
        GAN(MODEL, HINGE, optim(), regularization={"real_label": 0.9})


def test_hinge_and_least_squares_train_a_few_steps_to_finite_weights_and_log_raw_scores():
    torch.manual_seed(0)
    least_squares = {"name": "least_squares", "d_output": "score",
                     "discriminator": {"_target_": "gan_lightning.losses.least_squares_discriminator_loss", "_partial_": True},
                     "generator": {"_target_": "gan_lightning.losses.least_squares_generator_loss", "_partial_": True}}
    for loss in (HINGE, least_squares):
        module = GAN(MODEL, loss, optim())
        weights = [p for p in module.parameters() if p.dim() > 1]  # (D's last bias has no gradient under hinge while all logits are within the margin)
        before = [p.detach().clone() for p in weights]
        record = fit(module, steps=3)
        assert all(torch.isfinite(p).all() for p in module.parameters())
        assert all(not torch.equal(a, b) for a, b in zip(before, weights))  # both networks learned
        # 3 steps, fewer than log_every_n_steps (50): the scalars are logged at the run's last step;
        # D's output is a score here, logged as one, not as a sigmoid "probability"
        assert record.logged[:2] == [set(), set()]
        assert {"train/loss_d", "train/d_real_score", "train/d_fake_score"} <= record.logged[2]
        assert not {"train/d_real", "train/d_fake"} & record.logged[2]
        assert ("train/d_margins_met" in record.logged[2]) is (loss is HINGE)


@pytest.mark.parametrize("overrides", [
    ["experiment=wgan_gp", "trainer.limit_train_batches=3"],
    ["loss=least_squares", "regularization.real_label=0.9", "regularization.r1_weight=10", "regularization.spectral_norm=true",
     "regularization.instance_noise.sigma=0.1", "ema=enabled", "ema.start_step=2", "optim.lr_schedule=linear"],
])
def test_remedies_train_from_their_config(train_in_process, tmp_path, overrides):
    train_in_process("eval=none", *overrides)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    module = GAN.load_from_checkpoint(last)
    if "ema=enabled" in overrides:
        assert module.generator_ema.n_averaged.item() == ckpt["global_step"] - 2 + 1
        assert module.sampler() is module.generator_ema.module
        assert module.hparams.regularization["spectral_norm"] is True
    else:
        assert module.d_steps == 5 and module.gp_weight == 10.0


def test_stable_mlp_preset_builds_the_reference_networks_with_spectral_norm_on_d_and_an_ema_of_g():
    """What experiment=stable_mlp builds, read from the module, not from the yaml."""
    plain = instantiate(compose_config().module, _recursive_=False, _convert_="all")
    stable = instantiate(compose_config("experiment=stable_mlp").module, _recursive_=False, _convert_="all")
    shapes = lambda net: [tuple(p.shape) for p in net.parameters()]
    assert shapes(stable.generator) == shapes(plain.generator)
    assert stable.generator_loss.func is plain.generator_loss.func and stable.discriminator_loss.func is plain.discriminator_loss.func
    linears = [m for m in stable.discriminator.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 and all(parametrize.is_parametrized(m, "weight") for m in linears)
    assert not any(parametrize.is_parametrized(m) for m in stable.generator.modules())
    assert not any(parametrize.is_parametrized(m) for m in plain.discriminator.modules())
    assert stable.generator_ema is not None and plain.generator_ema is None
