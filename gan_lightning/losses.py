"""GAN objectives, written on the discriminator's logits l, where D(x) = sigmoid(l).

The identities used: -log D = softplus(-l) and -log(1 - D) = softplus(l).
Every function returns a scalar to *minimise* (mean over the batch).

To add a variant: write its functions here and a yaml file in conf/loss/ that names them.
"""

import torch
from torch.nn.functional import softplus


def gan_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D ascends log D(x) + log(1 - D(G(z))), i.e. minimises its negative (binary cross-entropy)."""
    return softplus(-real_logits).mean() + softplus(fake_logits).mean()


def minimax_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G minimises log(1 - D(G(z))), the value function itself.

    Its gradient vanishes as D(G(z)) -> 0, which is where G starts: it saturates early.
    """
    return -softplus(fake_logits).mean()


def non_saturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G minimises -log D(G(z)): same fixed point, strong gradients while D rejects G's samples."""
    return softplus(-fake_logits).mean()
