"""The Parzen-window estimate (Goodfellow et al. 2014's parzen_ll.py) on data with known answers."""

import math

import pytest
import torch

from gan_lightning.metrics.parzen import SIGMAS, log_likelihoods, parzen_estimate


def test_gaussian_samples_give_the_smoothed_gaussian_density():
    # A Parzen window of sigma around samples of N(0, I) is, as samples grow, the density of
    # N(0, (1 + sigma^2) I): the exact log-density at a few points, within Monte Carlo error.
    gen = torch.Generator().manual_seed(0)
    samples = torch.randn(200_000, 2, generator=gen, dtype=torch.float64)
    x = torch.tensor([[0.0, 0.0], [0.5, -0.3], [-1.0, 0.8]], dtype=torch.float64)
    sigma, var = 0.5, 1.25
    exact = -(x * x).sum(1) / (2 * var) - math.log(2 * math.pi * var)
    estimate = log_likelihoods(x, samples, [sigma], block=2)[0]
    torch.testing.assert_close(estimate, exact, atol=0.01, rtol=0)


def test_samples_equal_to_the_test_set_with_a_tiny_sigma_give_the_closed_form():
    # Each test image meets its own sample at distance 0 and the others ~e^(-hundreds) away:
    # log p(x) = -log n - d log(sigma sqrt(2 pi)), the value of the estimate for a perfect memoriser.
    images = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    sigma = 0.01
    closed_form = -math.log(50) - 784 * math.log(sigma * math.sqrt(2 * math.pi))
    ll = log_likelihoods(images, images, [sigma])[0]
    torch.testing.assert_close(ll, torch.full((50,), closed_form, dtype=torch.float64), atol=1e-6, rtol=0)


def test_blocked_matrix_products_agree_with_the_direct_formula():
    gen = torch.Generator().manual_seed(2)
    x, samples = torch.rand(7, 30, generator=gen), torch.rand(11, 30, generator=gen)
    sq = ((x.double()[:, None] - samples.double()[None]) ** 2).sum(2)
    for sigma in (0.1, 0.3):
        direct = torch.logsumexp(-sq / (2 * sigma**2), 1) - math.log(11) - 30 * math.log(sigma * math.sqrt(2 * math.pi))
        torch.testing.assert_close(log_likelihoods(x, samples, [sigma], block=3)[0], direct)


def test_sigma_is_chosen_on_the_validation_images_and_the_test_mean_has_its_standard_error():
    # One sample at 0, one validation point at 0.5: the validation log-likelihood
    # -0.125 / sigma^2 - log(sigma sqrt(2 pi)) peaks at sigma = 0.5; of parzen_ll.py's grid
    # logspace(-1, 0, 10) the best is 10^(-1/3) = 0.464.
    assert SIGMAS[0] == pytest.approx(0.1) and SIGMAS[-1] == pytest.approx(1.0) and len(SIGMAS) == 10
    result = parzen_estimate(torch.zeros(1, 1), valid=torch.full((1, 1), 0.5), test=torch.tensor([[0.0], [1.0]]))
    sigma = 10 ** (-1 / 3)
    assert result["parzen_sigma"] == pytest.approx(sigma)
    near, far = -math.log(sigma * math.sqrt(2 * math.pi)), -1 / (2 * sigma**2) - math.log(sigma * math.sqrt(2 * math.pi))
    assert result["parzen_ll"] == pytest.approx((near + far) / 2)
    assert result["parzen_ll_stderr"] == pytest.approx(abs(near - far) / 2 / math.sqrt(2))  # numpy's std (ddof 0) / sqrt(n)
