"""Sample-quality metrics on the project's MNIST classifier (classifier.py), computed by torchmetrics.

- fid_mnist: Fréchet distance between the classifier's penultimate features (128-d) of generated
  images and of the MNIST test set (10,000 images), by torchmetrics' FrechetInceptionDistance with
  the classifier as its feature extractor. Not Inception features: values are comparable only with
  other fid_mnist values, not with the FIDs of papers.
- classes_covered: how many digit classes the classifier's argmax histogram of the generated
  images contains, a class counting as present when it gets at least 1/10 of its uniform share,
  i.e. at least 1% of the samples (PRESENT_SHARE). 10 = every digit is made.
- kl_uniform: KL(histogram || uniform) in nats; 0 = all digits equally often, log 10 = 2.30 = one digit only.
- classifier_score: exp(E_x KL(p(y|x) || p(y))) with p(y) the mean of p(y|x) over the samples (the
  "Inception score" formula on this classifier); between 1 and 10, high = confident and varied.

With an Inception FID metric given (inception.py, off by default), also fid_inception: the usual
FID on InceptionV3 features, the number papers report.

Images go in as float tensors (N, 1, 28, 28) in [-1, 1], the scaling the classifier was trained on;
generated_batches converts a generator's output range (model.output_range, e.g. [0, 1]) to it. Every state is a sum, so under DDP each process feeds its share of the
images and torchmetrics adds the states of all processes at compute(): the result is the one of a
single process.
"""

import torch
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance

from gan_lightning.data import rescale, scale_to_tanh_range
from gan_lightning.metrics.inception import add_images as add_inception_images
from gan_lightning.metrics.classifier import NUM_CLASSES, ClassifierFeatures, MNISTClassifier, load_classifier

PRESENT_SHARE = 0.1  # a class is present with >= PRESENT_SHARE * (1 / NUM_CLASSES) of the samples


class ClassCoverage(Metric):
    """classes_covered, kl_uniform and classifier_score from the classifier's p(y|x)."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("counts", torch.zeros(NUM_CLASSES, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("prob_sum", torch.zeros(NUM_CLASSES, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("entropy_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor) -> None:
        """logits: the classifier's outputs (N, 10) for N images."""
        log_p = torch.log_softmax(logits, dim=1).double()
        p = log_p.exp()
        self.counts += torch.bincount(log_p.argmax(1), minlength=NUM_CLASSES).double()
        self.prob_sum += p.sum(0)
        self.entropy_sum += -(p * log_p).sum()
        self.total += logits.shape[0]

    def compute(self) -> dict[str, float]:
        histogram = self.counts / self.total
        present = histogram >= PRESENT_SHARE / NUM_CLASSES
        nonzero = histogram > 0
        kl_uniform = (histogram[nonzero] * (histogram[nonzero] * NUM_CLASSES).log()).sum()
        # E_x KL(p(y|x) || p(y)) = H(p(y)) - E_x H(p(y|x)), since p(y) is the mean of p(y|x)
        marginal = self.prob_sum / self.total
        marginal_entropy = -(marginal * marginal.clamp_min(1e-30).log()).sum()
        score = torch.exp(marginal_entropy - self.entropy_sum / self.total)
        return {"classes_covered": int(present.sum()), "kl_uniform": float(kl_uniform), "classifier_score": float(score)}


class SampleQuality:
    """fid_mnist and mode coverage of generated images against reference (real) images.

    The reference features are computed once, when this object is made, and kept (the FID's
    real-feature states survive reset()); each call then measures a new set of generated images.
    """

    def __init__(self, reference: torch.Tensor, classifier: MNISTClassifier | None = None, device: str | torch.device = "cpu", batch_size: int = 1000,
                 inception=None):
        """inception: an Inception FID metric (inception.inception_fid()) to report fid_inception too."""
        classifier = classifier if classifier is not None else load_classifier()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.classifier = classifier.to(self.device)
        self.features = ClassifierFeatures(self.classifier)
        self.fid = FrechetInceptionDistance(feature=self.features, reset_real_features=False).to(self.device)
        self.coverage = ClassCoverage().to(self.device)
        if reference.dtype == torch.uint8:
            reference = scale_to_tanh_range(reference)
        self.inception = inception.to(self.device) if inception is not None else None
        with torch.no_grad():
            for batch in reference.split(batch_size):
                batch = batch.to(self.device)
                self.fid.update(batch, real=True)
                if self.inception is not None:
                    add_inception_images(self.inception, batch, real=True)

    @torch.no_grad()
    def __call__(self, batches) -> dict[str, float]:
        """Metrics of generated images, given as an iterable of batches (or one tensor) in [-1, 1]."""
        self.fid.reset()
        self.coverage.reset()
        if self.inception is not None:
            self.inception.reset()
        if isinstance(batches, torch.Tensor):
            batches = batches.split(self.batch_size)
        for images in batches:
            images = images.to(self.device)
            self.fid.update(images, real=False)
            self.coverage.update(self.classifier.head(self.features.last))  # no dropout: eval mode
            if self.inception is not None:
                add_inception_images(self.inception, images, real=False)
        metrics = {"fid_mnist": float(self.fid.compute()), **self.coverage.compute()}
        if self.inception is not None:
            metrics["fid_inception"] = float(self.inception.compute())
        return metrics


def fixed_noise(num_samples: int, latent_dim: int, seed: int) -> torch.Tensor:
    """The evaluation noise: the same seed gives the same z on every machine and process."""
    return torch.randn(num_samples, latent_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def generated_batches(gan, noise: torch.Tensor, batch_size: int):
    """Images of gan.sample(z) for noise, batch by batch, on the module's device (GAN.sample uses eval mode),
    in [-1, 1] (the classifier's range) whatever G's output range (gan.output_range)."""
    for z in noise.split(batch_size):
        yield rescale(gan.sample(z.to(gan.device)), gan.output_range, (-1.0, 1.0))

