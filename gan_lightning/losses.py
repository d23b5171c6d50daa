"""GAN objectives, written on the discriminator's logits l, where D(x) = sigmoid(l).

The identities used: -log D = softplus(-l) and -log(1 - D) = softplus(l).
Every function returns a scalar to *minimise* (mean over the batch). The hinge, least-squares and
Wasserstein objectives read the same output as a raw score (D(x) = sigmoid(l) is then only a
display of it).

To add a variant: write its functions here and a yaml file in conf/loss/ that names them.
"""

import torch
from torch.nn.functional import relu, softplus


def gan_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """D ascends log D(x) + log(1 - D(G(z))), i.e. minimises its negative (binary cross-entropy).

    real_label < 1 is one-sided label smoothing (Salimans et al. 2016): the real target becomes
    real_label, so D is not rewarded for pushing D(x) all the way to 1. Fake targets stay 0."""
    if real_label == 1.0:
        return softplus(-real_logits).mean() + softplus(fake_logits).mean()
    real_term = real_label * softplus(-real_logits) + (1.0 - real_label) * softplus(real_logits)
    return real_term.mean() + softplus(fake_logits).mean()


def minimax_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G minimises log(1 - D(G(z))), the value function itself.

    Its gradient vanishes as D(G(z)) -> 0, which is where G starts: it saturates early.
    """
    return -softplus(fake_logits).mean()


def non_saturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G minimises -log D(G(z)): same fixed point, strong gradients while D rejects G's samples."""
    return softplus(-fake_logits).mean()


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss (Lim & Ye 2017, used by SAGAN/BigGAN): D is pushed to l >= 1 on real, l <= -1 on fake,
    and gets no gradient from samples it already separates by that margin."""
    return relu(1.0 - real_logits).mean() + relu(1.0 + fake_logits).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G raises D's raw score on its samples (no margin on G's side)."""
    return -fake_logits.mean()


def least_squares_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """LSGAN (Mao et al. 2017, a=0, b=c=1): D regresses its raw output to 1 on real, 0 on fake.
    The squared error keeps penalising samples far on the right side, so G's gradients do not vanish."""
    return 0.5 * (real_logits - real_label).pow(2).mean() + 0.5 * fake_logits.pow(2).mean()


def least_squares_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G pushes D's raw output on its samples towards the real target 1."""
    return 0.5 * (fake_logits - 1.0).pow(2).mean()


def wasserstein_critic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """WGAN (Arjovsky et al. 2017): the critic maximises E[D(x)] - E[D(G(z))], an estimate of the
    Wasserstein-1 distance while D is 1-Lipschitz (the gradient penalty below keeps it so)."""
    return fake_logits.mean() - real_logits.mean()


def wasserstein_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()

