"""R1, the WGAN gradient penalty, spectral normalisation and the instance-noise schedule."""

import pytest
import torch
from torch import nn

from gan_lightning.networks import MLPDiscriminator
from gan_lightning.regularizers import apply_spectral_norm, gradient_penalty, instance_noise_std, r1_penalty


def test_r1_is_the_mean_squared_input_gradient_norm_of_d_on_real_images():
    torch.manual_seed(0)
    d = MLPDiscriminator(hidden_dim=16)
    real = torch.randn(5, 1, 28, 28, requires_grad=True)
    penalty = r1_penalty(d(real), real)
    # Definition, one sample at a time: ||grad_x D(x_i)||^2, averaged.
    norms = []
    for i in range(5):
        x = real[i : i + 1].detach().requires_grad_(True)
        (g,) = torch.autograd.grad(d(x).sum(), x)
        norms.append(g.pow(2).sum())
    assert penalty.item() == pytest.approx(torch.stack(norms).mean().item(), rel=1e-5)


def test_r1_of_a_linear_critic_is_its_squared_weight_norm_and_trains_it():
    d = nn.Sequential(nn.Flatten(), nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        d[1].weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0]]))
    real = torch.randn(3, 1, 2, 2, requires_grad=True)
    penalty = r1_penalty(d(real).squeeze(1), real)
    assert penalty.item() == pytest.approx(1 + 4 + 0.25)
    penalty.backward()  # d||w||^2/dw = 2w: the penalty reaches D's weights
    assert d[1].weight.grad[0].tolist() == pytest.approx([2.0, -4.0, 1.0, 0.0])


def test_gradient_penalty_of_a_linear_critic_is_squared_distance_of_its_slope_from_one():
    d = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    with torch.no_grad():
        d[1].weight.copy_(torch.tensor([[3.0, 0.0, 4.0, 0.0]]))  # gradient norm 5 everywhere
    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    assert gradient_penalty(lambda x: d(x).squeeze(1), real, fake).item() == pytest.approx((5 - 1) ** 2)


def test_gradient_penalty_is_taken_between_real_and_fake_samples():
    seen = []

    def critic(x):
        seen.append(x.detach().clone())
        return x.flatten(1).sum(1)

    real, fake = torch.zeros(200, 1, 2, 2), torch.ones(200, 1, 2, 2)
    gradient_penalty(critic, real, fake)
    x_hat = seen[0]
    e = 1 - x_hat[:, 0, 0, 0]  # x_hat = e * 0 + (1 - e) * 1, the same e for every pixel of a sample
    assert torch.all(x_hat == x_hat[:, :1, :1, :1])
    assert 0 <= e.min() and e.max() <= 1 and e.std() > 0.2  # uniform on [0, 1] per sample


def test_spectral_norm_bounds_the_largest_singular_value_of_every_layer():
    torch.manual_seed(0)
    d = MLPDiscriminator(hidden_dim=64)
    with torch.no_grad():
        for p in d.parameters():
            p.mul_(10)  # far from 1-Lipschitz before
    linears = [m for m in d.modules() if isinstance(m, nn.Linear)]
    assert all(torch.linalg.matrix_norm(m.weight, ord=2) > 5 for m in linears)
    apply_spectral_norm(d)
    d.train()
    for _ in range(20):  # power iterations run during training forwards
        d(torch.randn(4, 1, 28, 28))
    for m in linears:
        assert torch.linalg.matrix_norm(m.weight.detach(), ord=2).item() == pytest.approx(1.0, abs=0.02)


def test_spectral_norm_covers_convolutions():
    conv = nn.Sequential(nn.Conv2d(1, 8, 3), nn.LeakyReLU())
    apply_spectral_norm(conv)
    assert hasattr(conv[0], "parametrizations") and "weight" in conv[0].parametrizations


def test_instance_noise_falls_linearly_to_zero_and_stays_there():
    assert [instance_noise_std(s, 0.2, 100) for s in (0, 25, 50, 100, 150)] == pytest.approx([0.2, 0.15, 0.1, 0.0, 0.0])
    assert instance_noise_std(10, 0.0, 100) == 0.0
