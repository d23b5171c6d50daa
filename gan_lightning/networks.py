"""The reference networks: the MLP generator and discriminator of the original GAN set-up on MNIST."""

import math

import torch
from torch import nn


class MLPGenerator(nn.Module):
    """G: z (latent_dim) -> Linear ReLU Linear ReLU Linear Tanh -> image in [-1, 1]."""

    def __init__(self, latent_dim: int = 100, hidden_dim: int = 256, image_shape=(1, 28, 28)):
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = tuple(image_shape)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, math.prod(self.image_shape)),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.image_shape)


class MLPDiscriminator(nn.Module):
    """D: image -> Linear ReLU Linear ReLU Linear -> logit; D(x) = sigmoid(logit).

    forward returns the logit because every loss is computed from logits (softplus form),
    which is the same mathematics as log(sigmoid(.)) without its overflow. Each sample is
    scored independently (no batch statistics), so real and fake images may share one pass.
    """

    def __init__(self, hidden_dim: int = 256, image_shape=(1, 28, 28)):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(image_shape), hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)

    def probability(self, x: torch.Tensor) -> torch.Tensor:
        """D(x): the probability that x is real (the Sigmoid of the reference network)."""
        return torch.sigmoid(self(x))


class DCGANGenerator(nn.Module):
    """DCGAN-style G for 28x28 single-channel images (Radford et al. 2016, sized for MNIST):
    z -> Linear to 2c x 7 x 7 -> ConvTranspose to c x 14 x 14 -> ConvTranspose to 1 x 28 x 28,
    BatchNorm and ReLU between, Tanh at the end."""

    def __init__(self, latent_dim: int = 100, channels: int = 64):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 2 * channels * 7 * 7, bias=False),
            nn.Unflatten(1, (2 * channels, 7, 7)),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * channels, channels, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.ConvTranspose2d(channels, 1, kernel_size=4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class DCGANDiscriminator(nn.Module):
    """DCGAN-style D for 28x28 single-channel images: stride-2 convolutions with LeakyReLU(0.2),
    28 -> 14 -> 7, then one logit per image.

    No BatchNorm, unlike the DCGAN paper: GAN.training_step scores real and fake images in one
    concatenated pass, and batch statistics would let each image's score depend on the others
    (and on the real/fake mix). Spectral normalisation (regularization.spectral_norm=true) is the
    per-sample way to tame this D."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * channels * 7 * 7, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)

    def probability(self, x: torch.Tensor) -> torch.Tensor:
        """D(x): the probability that x is real."""
        return torch.sigmoid(self(x))
