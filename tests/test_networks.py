"""The reference MLPs: exact layers, shapes and output ranges."""

import torch
from torch import nn

from gan_lightning.networks import MLPDiscriminator, MLPGenerator


def layer_spec(net: nn.Module):
    return [
        (type(m).__name__, m.in_features, m.out_features) if isinstance(m, nn.Linear) else type(m).__name__
        for m in net.net
    ]


def test_generator_is_the_reference_mlp():
    assert layer_spec(MLPGenerator()) == [
        ("Linear", 100, 256), "ReLU", ("Linear", 256, 256), "ReLU", ("Linear", 256, 784), "Tanh",
    ]


def test_discriminator_is_the_reference_mlp():
    assert layer_spec(MLPDiscriminator()) == [
        "Flatten", ("Linear", 784, 256), "ReLU", ("Linear", 256, 256), "ReLU", ("Linear", 256, 1),
    ]


def test_generator_makes_images_in_tanh_range():
    images = MLPGenerator()(torch.randn(5, 100))
    assert images.shape == (5, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1


def test_discriminator_scores_each_image():
    d = MLPDiscriminator()
    x = torch.rand(7, 1, 28, 28) * 2 - 1
    logits, probs = d(x), d.probability(x)
    assert logits.shape == probs.shape == (7,)
    assert ((probs > 0) & (probs < 1)).all()
    # each image is scored on its own: a batch gives the same scores as one by one
    assert torch.allclose(torch.cat([d(x[i : i + 1]) for i in range(7)]), logits, atol=1e-6)


def test_sizes_come_from_config_arguments():
    g, d = MLPGenerator(latent_dim=16, hidden_dim=32), MLPDiscriminator(hidden_dim=32)
    assert g(torch.randn(2, 16)).shape == (2, 1, 28, 28)
    assert layer_spec(d)[1] == ("Linear", 784, 32)
