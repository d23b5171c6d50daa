"""The reference networks: the MLP generator and discriminator of the original GAN set-up on MNIST."""

import math

import torch
from torch import nn


class MLPGenerator(nn.Module):
    """G: z (latent_dim) -> Linear ReLU Linear ReLU Linear Tanh -> image in [-1, 1]."""

    output_activation = nn.Tanh

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
            self.output_activation(),
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


def init_uniform_(net: nn.Module, init_range: float) -> None:
    """pylearn2's `irange` initialisation, used by Goodfellow et al. 2014: every weight uniform in
    [-init_range, init_range], every bias 0."""
    for module in net.modules():
        if isinstance(module, nn.Linear):
            nn.init.uniform_(module.weight, -init_range, init_range)
            nn.init.zeros_(module.bias)


class SigmoidMLPGenerator(MLPGenerator):
    """G of Goodfellow et al. 2014 on MNIST: z -> Linear ReLU Linear ReLU Linear Sigmoid -> image in
    [0, 1] (pixel intensities, as the paper's data). Sized 100-1200-1200-784 by the goodfellow2014
    model config; weights uniform in [-init_range, init_range] (the authors' irange 0.05).

    init_output_bias(marginals) sets the output bias to logit(mean pixel): before any training G
    then draws the average digit, as pylearn2's init_sigmoid_bias_from_marginals does
    (callbacks.InitOutputBias calls it with the training images' means)."""

    output_activation = nn.Sigmoid

    def __init__(self, latent_dim: int = 100, hidden_dim: int = 1200, image_shape=(1, 28, 28), init_range: float = 0.05):
        super().__init__(latent_dim, hidden_dim, image_shape)
        init_uniform_(self, init_range)

    @torch.no_grad()
    def init_output_bias(self, marginals: torch.Tensor, eps: float = 1e-7) -> None:
        """marginals: the mean of every pixel over the training images, in [0, 1]. Clipped to
        [eps, 1 - eps] (pylearn2's clip) so that pixels that are always 0 get a finite bias."""
        out = self.net[-2]
        out.bias.copy_(torch.logit(marginals.reshape(-1).clamp(eps, 1 - eps)).to(out.bias))


class Maxout(nn.Module):
    """Maxout units (Goodfellow et al. 2013): a Linear layer to units x pieces, the max over each
    unit's pieces."""

    def __init__(self, in_features: int, units: int, pieces: int):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(x.shape[0], self.units, self.pieces).amax(2)


class MaxoutDiscriminator(nn.Module):
    """D of Goodfellow et al. 2014 on MNIST: two maxout layers (240 units x 5 pieces) and a logit,
    with dropout on each layer's input: inputs kept with probability input_keep (0.8), hidden units
    with hidden_keep (0.5). nn.Dropout scales the kept values by 1/keep while training, as the
    authors' pylearn2 config did (input scales 1.25 and 2), so in eval mode the network is used
    unscaled: the same expectation, the "weight scaling" rule of dropout. Weights uniform in
    [-init_range, init_range] (irange 0.005), biases 0."""

    def __init__(self, units: int = 240, pieces: int = 5, image_shape=(1, 28, 28), input_keep: float = 0.8, hidden_keep: float = 0.5,
                 init_range: float = 0.005):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(1 - input_keep),
            Maxout(math.prod(image_shape), units, pieces),
            nn.Dropout(1 - hidden_keep),
            Maxout(units, units, pieces),
            nn.Dropout(1 - hidden_keep),
            nn.Linear(units, 1),
        )
        init_uniform_(self, init_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)

    def probability(self, x: torch.Tensor) -> torch.Tensor:
        """D(x): the probability that x is real."""
        return torch.sigmoid(self(x))
