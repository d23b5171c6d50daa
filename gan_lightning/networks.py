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
