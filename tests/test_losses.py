"""The objectives against their formulas, written in D's probabilities, on known logits."""

import pytest
import torch

from gan_lightning import losses

LOGITS = torch.tensor([-6.0, -2.0, -0.5, 0.0, 0.7, 3.0], dtype=torch.float64)


def d_of(logits):
    return torch.sigmoid(logits)


def test_discriminator_loss_is_negative_value_function():
    real, fake = LOGITS, LOGITS.flip(0)
    value = torch.log(d_of(real)).mean() + torch.log(1 - d_of(fake)).mean()
    assert torch.allclose(losses.gan_discriminator_loss(real, fake), -value)


def test_minimax_generator_loss_is_log_one_minus_d():
    expected = torch.log(1 - d_of(LOGITS)).mean()
    assert torch.allclose(losses.minimax_generator_loss(LOGITS), expected)


def test_non_saturating_generator_loss_is_minus_log_d():
    expected = -torch.log(d_of(LOGITS)).mean()
    assert torch.allclose(losses.non_saturating_generator_loss(LOGITS), expected)


def grad_wrt_logit(loss_fn, logit: float) -> float:
    l = torch.tensor([logit], dtype=torch.float64, requires_grad=True)
    loss_fn(l).backward()
    return l.grad.item()


@pytest.mark.parametrize("logit", [-5.0, -10.0, -20.0])
def test_minimax_gradient_vanishes_when_d_rejects_fakes(logit):
    # D(G(z)) = sigmoid(logit) -> 0: d/dl log(1 - sigmoid(l)) = -sigmoid(l) -> 0
    g = grad_wrt_logit(losses.minimax_generator_loss, logit)
    assert g == pytest.approx(-torch.sigmoid(torch.tensor(logit, dtype=torch.float64)).item())
    assert abs(g) < 1e-2


@pytest.mark.parametrize("logit", [-5.0, -10.0, -20.0])
def test_non_saturating_gradient_stays_strong_when_d_rejects_fakes(logit):
    # d/dl -log sigmoid(l) = sigmoid(l) - 1 -> -1
    assert grad_wrt_logit(losses.non_saturating_generator_loss, logit) == pytest.approx(-1.0, abs=1e-2)


def test_minimax_saturates_where_non_saturating_does_not_through_the_networks():
    """The same effect on the generator's own weights, with D rejecting G's samples."""
    from gan_lightning.networks import MLPDiscriminator, MLPGenerator

    torch.manual_seed(0)
    g, d = MLPGenerator(), MLPDiscriminator()
    with torch.no_grad():
        d.net[-1].bias.fill_(-12.0)  # D(G(z)) ~ 6e-6: the start of training, D wins easily
    z = torch.randn(64, 100)
    norms = {}
    for name, fn in (("minimax", losses.minimax_generator_loss), ("ns", losses.non_saturating_generator_loss)):
        g.zero_grad()
        fn(d(g(z))).backward()
        norms[name] = torch.nn.utils.get_total_norm([p.grad for p in g.parameters()]).item()
    assert norms["minimax"] < 1e-3 * norms["ns"]


def test_losses_are_finite_for_extreme_logits():
    extreme = torch.tensor([-200.0, 200.0])
    for value in (
        losses.gan_discriminator_loss(extreme, extreme),
        losses.minimax_generator_loss(extreme),
        losses.non_saturating_generator_loss(extreme),
    ):
        assert torch.isfinite(value)
