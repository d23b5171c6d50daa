"""The metrics on the committed classifier: what each number says about a set of images.

Real MNIST is not available to tests, so "digit-like" images are digits drawn with Pillow's own
font (varied size, position and angle). The classifier, trained on handwriting, reads most of
them right (not all: printed 6s and 1s are ambiguous to it), enough to show the sanity figures.
"""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from gan_lightning.data import scale_to_tanh_range
from gan_lightning.metrics.classifier import RECORD, WEIGHTS, ClassifierWeightsError, load_classifier, sha256
from gan_lightning.metrics.quality import ClassCoverage, SampleQuality


def render_digits(n: int, seed: int) -> torch.Tensor:
    """n uint8 images (n, 1, 28, 28) of the digits 0-9 in turn, white on black like MNIST."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        font = ImageFont.load_default(size=int(rng.integers(22, 27)))
        image = Image.new("L", (28, 28))
        dx, dy = rng.integers(-2, 3, 2)
        ImageDraw.Draw(image).text((14 + dx, 14 + dy), str(i % 10), fill=255, font=font, anchor="mm")
        image = image.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR).filter(ImageFilter.GaussianBlur(0.3))
        out[i] = np.asarray(image)
    return torch.from_numpy(out).unsqueeze(1)


@pytest.fixture(scope="module")
def quality() -> SampleQuality:
    return SampleQuality(render_digits(1000, seed=0), batch_size=250)


def test_classifier_weights_are_small_and_match_their_record():
    record = json.loads(RECORD.read_text())
    assert WEIGHTS.stat().st_size < 1_000_000
    assert record["sha256"] == sha256(WEIGHTS)
    assert record["test_accuracy"] >= 0.99 and record["test_images"] == 10000
    assert not load_classifier().training


def test_changed_weights_are_refused(tmp_path):
    changed = tmp_path / "mnist_classifier.pt"
    data = bytearray(WEIGHTS.read_bytes())
    data[-100] ^= 0xFF
    changed.write_bytes(bytes(data))
    with pytest.raises(ClassifierWeightsError, match="SHA-256"):
        load_classifier(changed)
    with pytest.raises(ClassifierWeightsError, match="not found"):
        load_classifier(tmp_path / "missing.pt")


def test_digit_images_score_far_better_than_noise(quality):
    digits = quality(scale_to_tanh_range(render_digits(1000, seed=1)))
    noise = quality(torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert digits["fid_mnist"] * 20 < noise["fid_mnist"]
    assert digits["classes_covered"] == 10 and digits["kl_uniform"] < 0.2
    assert noise["classes_covered"] < 5 and noise["kl_uniform"] > 1.0
    assert digits["classifier_score"] > 2 * noise["classifier_score"]


def test_one_repeated_digit_covers_one_class(quality):
    one = scale_to_tanh_range(render_digits(3, seed=2)[2:3]).repeat(500, 1, 1, 1)  # a "2", 500 times
    metrics = quality(one)
    assert metrics["classes_covered"] == 1
    assert metrics["kl_uniform"] == pytest.approx(math.log(10))
    assert metrics["classifier_score"] == pytest.approx(1.0)
    assert metrics["fid_mnist"] > 10 * quality(scale_to_tanh_range(render_digits(500, seed=3)))["fid_mnist"]


def test_fid_of_the_reference_against_itself_is_zero(quality):
    assert quality(scale_to_tanh_range(render_digits(1000, seed=0)))["fid_mnist"] == pytest.approx(0.0, abs=1e-3)


def one_hot_logits(labels: list[int]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(labels), 10).float() * 50.0  # p(y|x) ~ one-hot


def test_coverage_formulas_on_known_probabilities():
    coverage = ClassCoverage()
    coverage.update(one_hot_logits(list(range(10)) * 100))  # every class equally often, certain
    metrics = coverage.compute()
    assert metrics["classes_covered"] == 10
    assert metrics["kl_uniform"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["classifier_score"] == pytest.approx(10.0, rel=1e-6)

    coverage.reset()
    coverage.update(torch.zeros(100, 10))  # every image undecided: p(y|x) uniform
    assert coverage.compute()["classifier_score"] == pytest.approx(1.0)


@pytest.mark.parametrize("count_of_nine, covered", [(10, 10), (9, 9)])
def test_a_class_is_present_from_one_percent_of_the_samples(count_of_nine, covered):
    # 1000 samples: 1/10 of the uniform share (100) is 10 images
    labels = [9] * count_of_nine + [i % 9 for i in range(1000 - count_of_nine)]
    coverage = ClassCoverage()
    coverage.update(one_hot_logits(labels))
    assert coverage.compute()["classes_covered"] == covered


def test_classifier_score_stays_between_1_and_10():
    coverage = ClassCoverage()
    for scale in (0.1, 1.0, 10.0, 100.0):
        coverage.reset()
        coverage.update(torch.randn(500, 10, generator=torch.Generator().manual_seed(1)) * scale)
        assert 1.0 <= coverage.compute()["classifier_score"] <= 10.0
