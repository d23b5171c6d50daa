"""Regularisers of the discriminator, each off unless the config asks for it (see conf/regularization/).

Penalties are written on D's input gradients and returned unweighted; GAN.training_step weighs
them and adds them to D's loss. Label smoothing lives in the loss functions (their real_label).
"""

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def input_gradients(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """d(sum of logits)/d(inputs), one flattened row per sample, kept in the graph so that a
    penalty on it trains D (each logit depends on its own sample only)."""
    (grads,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return grads.flatten(1)


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[||grad_x D(x)||^2] on real data; D's loss gets gamma/2 times it.
    real must have required grad when real_logits were computed from it."""
    return input_gradients(real_logits, real).pow(2).sum(dim=1).mean()


def gradient_penalty(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat = e x + (1 - e) G(z),
    e ~ U[0, 1] per sample: random points between real and fake samples. Costs one more D pass."""
    e = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    return (input_gradients(discriminator(x_hat), x_hat).norm(2, dim=1) - 1).pow(2).mean()


def apply_spectral_norm(net: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of every Linear and Conv layer of net: each weight
    is divided by its largest singular value, estimated by one power iteration per training forward."""
    for module in net.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            spectral_norm(module)
    return net


def instance_noise_std(step: int, sigma: float, decay_steps: int) -> float:
    """Instance noise (Sønderby et al. 2016; Arjovsky & Bottou 2017): the std of the Gaussian noise
    added to every image D sees, falling linearly from sigma at step 0 to 0 at decay_steps."""
    if sigma <= 0:
        return 0.0
    return sigma * max(0.0, 1.0 - step / decay_steps)
