"""The DCGAN-style networks: shapes, ranges, and that D scores every image on its own."""

import torch
from torch import nn

from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator


def test_generator_maps_noise_to_28x28_images_in_tanh_range():
    g = DCGANGenerator(latent_dim=10, channels=8)
    images = g(torch.randn(5, 10))
    assert images.shape == (5, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1


def test_discriminator_gives_one_logit_per_image_and_probabilities():
    d = DCGANDiscriminator(channels=8)
    x = torch.randn(6, 1, 28, 28)
    assert d(x).shape == (6,)
    p = d.probability(x)
    assert p.shape == (6,) and torch.all((p > 0) & (p < 1))


def test_discriminator_scores_each_image_independently_of_its_batch():
    # GAN.training_step scores real and fake in one pass; that is only right without batch statistics.
    d = DCGANDiscriminator(channels=8).train()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules())
    x = torch.randn(6, 1, 28, 28)
    torch.testing.assert_close(d(x)[:2], d(x[:2]))


def test_model_dcgan_trains_from_its_config(train_in_process, tmp_path):
    train_in_process("eval=none", "model=dcgan", "model.channels=8", "trainer.limit_train_batches=3", "ema=enabled", "ema.start_step=1")
    assert (tmp_path / "run" / "samples" / "epoch_000.png").is_file()
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    # G's BatchNorm running statistics are averaged with its weights, for samples in eval mode.
    assert "generator_ema.module.net.2.running_mean" in state


def test_samples_use_batchnorm_running_statistics_and_leave_training_mode_alone():
    from gan_lightning.module import GAN

    model = {"generator": {"_target_": "gan_lightning.networks.DCGANGenerator", "latent_dim": 10, "channels": 8},
             "discriminator": {"_target_": "gan_lightning.networks.DCGANDiscriminator", "channels": 8}}
    loss = {"generator": {"_target_": "gan_lightning.losses.non_saturating_generator_loss", "_partial_": True},
            "discriminator": {"_target_": "gan_lightning.losses.gan_discriminator_loss", "_partial_": True}}
    optim = {"optimizer": {"_target_": "torch.optim.Adam"}, "lr_g": 1e-4, "lr_d": 1e-4, "d_steps": 1}
    gan = GAN(model=model, loss=loss, optim=optim).train()
    z = torch.randn(4, 10)
    samples = gan.sample(z)
    assert gan.training and gan.generator.training  # the module's mode is restored
    # eval-mode output: each image independent of the others in its batch (no batch statistics)
    torch.testing.assert_close(samples[:1], gan.sample(z[:1]))
    assert not torch.allclose(gan.generator(z)[:1], gan.generator(z[:1]))  # training mode would differ
