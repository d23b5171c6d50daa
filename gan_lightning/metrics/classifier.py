"""The project's reference MNIST classifier: the fixed yardstick of fid_mnist and mode coverage.

A small CNN trained by `python -m gan_lightning.metrics.train_classifier` on MNIST exactly as the
GAN sees it (gan_lightning.data: uint8 -> [-1, 1]), so generated images go in as they come out of
the generator's Tanh, with no conversion. Its weights ship with the package (mnist_classifier.pt,
state_dict only); mnist_classifier.json beside them records their SHA-256 and test accuracy, and
loading refuses weights whose checksum differs, so every number measured with it is comparable.
Retraining with the recorded command (single thread, seed 0, torch 2.14.1 on CPU) gives identical
tensors, and the identical SHA-256 when saved under the same file name (torch.save writes the
file's name into the archive).

Penultimate features (FEATURE_DIM, after ReLU) feed the Fréchet distance; logits give p(y|x).
"""

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

WEIGHTS = Path(__file__).resolve().parent / "mnist_classifier.pt"
RECORD = WEIGHTS.with_suffix(".json")  # {"sha256": ..., "test_accuracy": ..., "command": ...}
FEATURE_DIM = 128
NUM_CLASSES = 10


class MNISTClassifier(nn.Module):
    """28x28 image in [-1, 1] -> 3 conv blocks -> 128 features -> 10 logits."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 3x3
            nn.Flatten(),
            nn.Linear(64 * 3 * 3, FEATURE_DIM), nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class ClassifierFeatures(nn.Module):
    """The classifier's penultimate features, as torchmetrics' FrechetInceptionDistance takes a
    custom feature extractor (num_features tells it the dimension without a trial forward).

    The features of the last batch stay in `last`, so that the class probabilities of the same
    images cost only the head (the convolutions are nearly all of the evaluation's time)."""

    num_features = FEATURE_DIM

    def __init__(self, classifier: MNISTClassifier):
        super().__init__()
        self.classifier = classifier
        self.last: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last = self.classifier.features(x.float())
        return self.last


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class ClassifierWeightsError(RuntimeError):
    pass


def load_classifier(path: Path = WEIGHTS, device: str | torch.device = "cpu") -> MNISTClassifier:
    """The committed classifier in eval mode, without gradients, after checking its SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierWeightsError(f"MNIST classifier weights not found at {path}; train them with `python -m gan_lightning.metrics.train_classifier`")
    expected = json.loads(RECORD.read_text())["sha256"]
    actual = sha256(path)
    if actual != expected:
        raise ClassifierWeightsError(f"{path} has SHA-256 {actual}, expected {expected} (recorded in {RECORD.name}); the metrics would not be comparable")
    classifier = MNISTClassifier()
    classifier.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    classifier.eval().requires_grad_(False)
    return classifier.to(device)
