"""The in-memory fast path serves the same data as torchvision's per-sample path, reshuffled each
epoch and sharded without overlap under DDP (checked on the tiny IDX fixture)."""

import torch
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import transforms
from torchvision.datasets import MNIST

from gan_lightning.data import MNISTDataModule


def datamodule(root, batch_size=32) -> MNISTDataModule:
    dm = MNISTDataModule(str(root), batch_size=batch_size, download=False)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def torchvision_images(root) -> torch.Tensor:
    """All training images through torchvision's per-sample path: PIL -> ToTensor -> Normalize(0.5, 0.5)."""
    tv = MNIST(str(root), train=True, download=False, transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
    return next(iter(DataLoader(tv, batch_size=len(tv), shuffle=False)))[0]


def indices_of(batches, reference: torch.Tensor) -> list[int]:
    """The dataset index of every image in batches (the fixture's images are all different)."""
    index = {image.numpy().tobytes(): i for i, image in enumerate(reference)}
    assert len(index) == len(reference)
    return [index[image.numpy().tobytes()] for batch in batches for image in batch]


def test_same_images_and_scaling_as_torchvision(mnist_root):
    expected = torchvision_images(mnist_root)
    dm = datamodule(mnist_root)
    # one by one, and batched through the loader (the unshuffled test loader shares the code path)
    single = torch.stack([dm.train_set[i] for i in range(len(dm.train_set))])
    batched = torch.cat(list(DataLoader(dm.train_set, batch_size=50, collate_fn=dm._loader(dm.train_set, drop_last=False).collate_fn)))
    assert single.shape == batched.shape == expected.shape == (256, 1, 28, 28)
    assert single.dtype == batched.dtype == torch.float32
    torch.testing.assert_close(single, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(batched, expected, atol=1e-6, rtol=0)
    assert expected.min() == -1.0 and expected.max() == 1.0


def test_train_loader_reshuffles_every_epoch_and_covers_the_data(mnist_root):
    dm = datamodule(mnist_root, batch_size=32)
    reference = dm.train_set[list(range(len(dm.train_set)))]
    loader = dm.train_dataloader()
    epochs = []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)  # as the Trainer does at every epoch start
        epochs.append(indices_of(loader, reference))
    for order in epochs:
        assert sorted(order) == list(range(256))  # 256 = 8 full batches: every image exactly once
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]


def test_ddp_shards_are_disjoint_and_reshuffled(mnist_root):
    dm = datamodule(mnist_root, batch_size=16)
    reference = dm.train_set[list(range(len(dm.train_set)))]
    loader = dm.train_dataloader()

    def shard(rank: int, epoch: int) -> list[int]:
        # What the Trainer does under DDP: the same loader rebuilt around a DistributedSampler.
        sampler = DistributedSampler(dm.train_set, num_replicas=2, rank=rank, shuffle=True, seed=42)
        sampler.set_epoch(epoch)
        return indices_of(_update_dataloader(loader, sampler), reference)

    for epoch in (0, 1):
        rank0, rank1 = shard(0, epoch), shard(1, epoch)
        assert len(rank0) == len(rank1) == 128
        assert not set(rank0) & set(rank1)
        assert sorted(rank0 + rank1) == list(range(256))
    assert shard(0, 0) != shard(0, 1)
