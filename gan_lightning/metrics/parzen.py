"""The Parzen-window log-likelihood estimate of Goodfellow et al. 2014 (Table 1), computed as the
authors' parzen_ll.py (github.com/goodfeli/adversarial) computes it:

- a Gaussian kernel density with a diagonal covariance sigma^2 I around each of 10,000 generator
  samples mu_j, in [0, 1] pixel space (784 dimensions):
      log p(x) = logsumexp_j(-||x - mu_j||^2 / (2 sigma^2)) - log(n) - d log(sigma sqrt(2 pi));
- sigma chosen from logspace(-1, 0, 10) by the mean log-likelihood of validation images: the
  first `valid_size` of the last 10,000 training images, 50,000-60,000, which
  experiment=goodfellow2014 holds out (parzen_ll.py's default -l 1000 uses the first 1,000 of
  them; valid_size=10000 uses all);
- the result: the mean log-likelihood of the 10,000 MNIST test images (nats, higher is better)
  and its standard error, std / sqrt(10,000).

Vectorised: ||x - mu||^2 = |x|^2 + |mu|^2 - 2 x.mu, one matrix product per block of images, in
float64 (in float32 the cancellation in that identity costs ~1e-3 of a squared distance of ~100,
which the smallest sigma (0.1) turns into ~0.05 nats per image). The distances do not depend on
sigma, so each block's are computed once and scored for every sigma.

Cost: two 10,000 x 10,000 x 784 float64 products plus the exponentials, 10-30 s on one CPU thread
(BENCHMARKS.md), well under a second on a GPU.

    python eval.py ckpt_path=<file.ckpt> parzen=true                   # a generator's estimate
    python eval.py real_images=true parzen=true data.root=../shared/data  # the yardstick: 10,000 real training images as "samples"
"""

import math

import numpy as np
import torch

from gan_lightning.data import load_mnist_images

SIGMAS = tuple(np.logspace(-1, 0, 10).tolist())  # parzen_ll.py's --sigma_start -1 --sigma_end 0 --cross_val 10
VALIDATION_IMAGES = 10_000  # the last 10,000 training images (50,000-60,000), never trained on by experiment=goodfellow2014


def log_likelihoods(x: torch.Tensor, samples: torch.Tensor, sigmas, block: int = 1000) -> torch.Tensor:
    """log p(x_i) under the Parzen window of `samples` for each sigma: (len(sigmas), len(x)), float64.
    x and samples are (N, ...) images in [0, 1], flattened here; computed on samples' device."""
    mu = samples.reshape(len(samples), -1).to(torch.float64)
    x = x.reshape(len(x), -1).to(device=mu.device, dtype=torch.float64)
    d = mu.shape[1]
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64, device=mu.device)
    mu_sq = (mu * mu).sum(1)
    out = []
    for xb in x.split(block):
        sq_dist = ((xb * xb).sum(1, keepdim=True) + mu_sq - 2.0 * xb @ mu.T).clamp_min_(0.0)  # (block, n)
        # one logsumexp per sigma over the samples: (sigmas, block)
        out.append(torch.stack([torch.logsumexp(sq_dist / (-2.0 * s * s), dim=1) for s in sigmas]))
    return torch.cat(out, dim=1) - math.log(len(mu)) - d * torch.log(sigmas * math.sqrt(2 * math.pi)).unsqueeze(1)


def parzen_estimate(samples: torch.Tensor, valid: torch.Tensor, test: torch.Tensor, sigmas=SIGMAS) -> dict[str, float]:
    """The authors' protocol: sigma = argmax over sigmas of the mean validation log-likelihood, then
    the mean test log-likelihood with that sigma and its standard error (numpy's std, ddof 0)."""
    sigma = sigmas[int(log_likelihoods(valid, samples, sigmas).mean(1).argmax())]
    ll = log_likelihoods(test, samples, [sigma])[0]
    return {"parzen_ll": float(ll.mean()), "parzen_ll_stderr": float(ll.std(unbiased=False) / math.sqrt(len(ll))), "parzen_sigma": float(sigma)}


def mnist_in_unit_range(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float64) / 255.0


def mnist_valid_test(data_root: str, valid_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation images (the first valid_size of the last 10,000 training images, 50,000-60,000
    in MNIST) and the 10,000 test images, in [0, 1]."""
    held_out = load_mnist_images(data_root, train=True)[-VALIDATION_IMAGES:]
    return mnist_in_unit_range(held_out[:valid_size]), mnist_in_unit_range(load_mnist_images(data_root, train=False))


@torch.no_grad()
def generator_parzen(gan, valid: torch.Tensor, test: torch.Tensor, noise: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
    """The estimate for gan.sample(z) over noise (10,000 z in the paper), on the module's device,
    its samples mapped from G's output range to [0, 1]."""
    from gan_lightning.data import rescale

    samples = torch.cat([rescale(gan.sample(z.to(gan.device)), gan.output_range, (0.0, 1.0)) for z in noise.split(batch_size)])
    return parzen_estimate(samples, valid, test)
