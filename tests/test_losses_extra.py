"""The hinge, least-squares and Wasserstein objectives against their formulas, on known logits."""

import pytest
import torch

from gan_lightning import losses

REAL = torch.tensor([2.0, 0.5, -1.5])
FAKE = torch.tensor([-2.0, 0.3, 1.2, 0.0])


def test_hinge_discriminator_loss_is_the_margin_formula():
    expected = (sum(max(0.0, 1 - r) for r in REAL.tolist()) / 3) + (sum(max(0.0, 1 + f) for f in FAKE.tolist()) / 4)
    assert losses.hinge_discriminator_loss(REAL, FAKE).item() == pytest.approx(expected)


def test_hinge_gives_no_gradient_beyond_the_margin():
    real = torch.tensor([2.0, 0.5], requires_grad=True)
    fake = torch.tensor([-2.0, 0.3], requires_grad=True)
    losses.hinge_discriminator_loss(real, fake).backward()
    # Outside the margin (real 2 >= 1, fake -2 <= -1) nothing; inside, -1/n for real and +1/n for fake.
    assert real.grad.tolist() == pytest.approx([0.0, -0.5])
    assert fake.grad.tolist() == pytest.approx([0.0, 0.5])


def test_hinge_generator_loss_is_minus_the_mean_score():
    fake = FAKE.clone().requires_grad_(True)
    loss = losses.hinge_generator_loss(fake)
    loss.backward()
    assert loss.item() == pytest.approx(-FAKE.mean().item())
    assert fake.grad.tolist() == pytest.approx([-0.25] * 4)


def test_least_squares_losses_are_half_mean_squared_errors_to_their_targets():
    expected_d = 0.5 * ((REAL - 1) ** 2).mean() + 0.5 * (FAKE**2).mean()
    assert losses.least_squares_discriminator_loss(REAL, FAKE).item() == pytest.approx(expected_d.item())
    expected_g = 0.5 * ((FAKE - 1) ** 2).mean()
    assert losses.least_squares_generator_loss(FAKE).item() == pytest.approx(expected_g.item())


def test_least_squares_generator_gradient_grows_with_distance_from_the_real_target():
    fake = torch.tensor([-3.0, 0.0, 1.0], requires_grad=True)
    losses.least_squares_generator_loss(fake).backward()
    # d/df 0.5 mean (f - 1)^2 = (f - 1) / n: far-off samples still get a strong gradient.
    assert fake.grad.tolist() == pytest.approx([-4 / 3, -1 / 3, 0.0])


def test_least_squares_real_label_moves_the_real_target():
    expected = 0.5 * ((REAL - 0.9) ** 2).mean() + 0.5 * (FAKE**2).mean()
    assert losses.least_squares_discriminator_loss(REAL, FAKE, real_label=0.9).item() == pytest.approx(expected.item())


def test_wasserstein_losses_are_differences_of_mean_scores():
    assert losses.wasserstein_critic_loss(REAL, FAKE).item() == pytest.approx(FAKE.mean().item() - REAL.mean().item())
    assert losses.wasserstein_generator_loss(FAKE).item() == pytest.approx(-FAKE.mean().item())
    real = REAL.clone().requires_grad_(True)
    fake = FAKE.clone().requires_grad_(True)
    losses.wasserstein_critic_loss(real, fake).backward()
    assert real.grad.tolist() == pytest.approx([-1 / 3] * 3)
    assert fake.grad.tolist() == pytest.approx([1 / 4] * 4)


def test_label_smoothing_is_cross_entropy_with_a_soft_real_target():
    a = 0.9
    sig = torch.sigmoid
    expected = -(a * torch.log(sig(REAL)) + (1 - a) * torch.log(1 - sig(REAL))).mean() - torch.log(1 - sig(FAKE)).mean()
    assert losses.gan_discriminator_loss(REAL, FAKE, real_label=a).item() == pytest.approx(expected.item(), rel=1e-5)
    # With the default target it is the plain value function.
    plain = -torch.log(sig(REAL)).mean() - torch.log(1 - sig(FAKE)).mean()
    assert losses.gan_discriminator_loss(REAL, FAKE).item() == pytest.approx(plain.item(), rel=1e-5)


def test_label_smoothing_stops_rewarding_certainty_on_real_images():
    # The smoothed loss is minimal where D(x) equals the target, not at D(x) -> 1.
    logits = torch.linspace(-1, 6, 701)
    per_logit = torch.stack([losses.gan_discriminator_loss(l.view(1), torch.tensor([-20.0]), real_label=0.9) for l in logits])
    best = torch.sigmoid(logits[per_logit.argmin()]).item()
    assert best == pytest.approx(0.9, abs=0.01)
