"""The MNIST data module, on small IDX files read through torchvision like the real ones."""

import pytest
import torch
from torchvision.datasets import MNIST

from gan_lightning.data import MNISTDataModule, MNISTNotFoundError


def test_serves_train_and_test_splits_in_tanh_range(mnist_root):
    dm = MNISTDataModule(root=str(mnist_root), batch_size=32, download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 256 and len(dm.test_set) == 64
    batches = list(dm.train_dataloader())
    assert len(batches) == 256 // 32
    assert all(b.shape == (32, 1, 28, 28) and b.dtype == torch.float32 for b in batches)
    assert min(b.min() for b in batches) == -1.0 and max(b.max() for b in batches) == 1.0
    assert sum(len(b) for b in dm.test_dataloader()) == 64


def test_drops_the_incomplete_last_training_batch(mnist_root):
    dm = MNISTDataModule(root=str(mnist_root), batch_size=100, download=False)
    dm.setup("fit")
    assert [len(b) for b in dm.train_dataloader()] == [100, 100]


def test_a_training_batch_holds_a_real_minibatch_per_d_step(mnist_root):
    dm = MNISTDataModule(root=str(mnist_root), batch_size=32, download=False, batches_per_step=3)
    dm.setup("fit")
    assert [len(b) for b in dm.train_dataloader()] == [96, 96]  # 256 images: 2 full steps of 3 x 32


def test_missing_data_without_download_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(MNISTNotFoundError) as err:
        MNISTDataModule(root=str(tmp_path), download=False).prepare_data()
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "data.root=" in message


def test_failed_download_is_one_clear_message(tmp_path, monkeypatch):
    # a mirror on a closed local port: the download fails at once, without any network
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(MNISTNotFoundError) as err:
        MNISTDataModule(root=str(tmp_path / "data"), download=True).prepare_data()
    message = str(err.value)
    assert "downloading it failed" in message and str(tmp_path / "data" / "MNIST" / "raw") in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []  # not the empty data/MNIST/raw/ torchvision made for the download
