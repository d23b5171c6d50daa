"""Train the reference MNIST classifier and record its weights' checksum and test accuracy.

    python -m gan_lightning.metrics.train_classifier data.root=../shared/data
    python -m gan_lightning.metrics.train_classifier --help    # its options (conf/train_classifier.yaml)

A Hydra app like the other commands (key=value, --help); it writes no Hydra folder or log.

Seeded and single-threaded by default, so the same command on the same torch version gives the
same weights. Reads MNIST through gan_lightning.data, the same code path (and [-1, 1] scaling)
as GAN training. Light augmentation (random shifts of up to 2 pixels) makes it robust to the
small misalignments of generated digits.
"""

import json
import time
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from gan_lightning.data import load_mnist_images, scale_to_tanh_range
from gan_lightning.metrics.classifier import RECORD, WEIGHTS, MNISTClassifier, sha256
from gan_lightning.train import CONFIG_DIR



def load_labels(root: str, train: bool) -> torch.Tensor:
    from torchvision.datasets import MNIST

    return MNIST(root, train=train, download=False).targets


def random_shift(images: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by up to max_shift pixels in x and y (background -1 fills the border)."""
    n = images.shape[0]
    padded = F.pad(images, [max_shift] * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    rows = (torch.arange(28)[None, :] + dy[:, None])[:, :, None]  # n, 28, 1
    cols = (torch.arange(28)[None, :] + dx[:, None])[:, None, :]  # n, 1, 28
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def accuracy(model: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    correct = sum((model(scale_to_tanh_range(x)).argmax(1) == y).sum().item() for x, y in zip(images.split(1000), labels.split(1000)))
    return correct / len(labels)


def train(data_root: str, epochs: int, batch_size: int, lr: float, seed: int, threads: int, out: str) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_x, train_y = load_mnist_images(data_root, train=True), load_labels(data_root, train=True)
    test_x, test_y = load_mnist_images(data_root, train=False), load_labels(data_root, train=False)

    model = MNISTClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * (len(train_x) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        start = time.time()
        order = torch.randperm(len(train_x), generator=generator)
        for i in range(len(train_x) // batch_size):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x = random_shift(scale_to_tanh_range(train_x[idx]), generator)
            loss = F.cross_entropy(model(x), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        acc = accuracy(model, test_x, test_y)
        print(f"epoch {epoch + 1}/{epochs}: last loss {loss.item():.4f}, test accuracy {acc:.4f} ({time.time() - start:.0f} s)", flush=True)

    torch.save(model.state_dict(), out)
    record = {
        "sha256": sha256(Path(out)),
        "test_accuracy": acc,
        "test_images": len(test_y),
        "command": "python -m gan_lightning.metrics.train_classifier " + " ".join(f"{k}={v}" for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, threads=threads).items()),
        "torch": torch.__version__,
    }
    if Path(out).resolve() == WEIGHTS:
        RECORD.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return record


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train_classifier")
def main(cfg: DictConfig) -> None:
    options = OmegaConf.to_container(cfg)
    options["data_root"] = options.pop("data")["root"]  # data.root, as in the other commands
    options["out"] = options["out"] or str(WEIGHTS)
    train(**options)


if __name__ == "__main__":
    main()
