"""MNIST for GAN training: read once by torchvision, then served from memory, a batch per index gather.

torchvision's per-sample path (PIL image -> ToTensor -> Normalize -> collate) costs more than
the reference MLPs' arithmetic. Here the images stay one uint8 tensor and a batch is one gather
plus one scaling, giving the same values as ToTensor + Normalize(0.5, 0.5), i.e. [-1, 1].
Shuffling and DDP sharding still come from the DataLoader's sampler, which Lightning replaces
with a DistributedSampler under DDP.

Resuming gives the data order of an uninterrupted run: the order of an epoch depends on a seed
(saved in checkpoints) and the epoch number alone, never on the global RNG the noise is drawn
from, and a run resumed in the middle of an epoch skips the batches it had already trained on.
"""

import math
import struct
from collections.abc import Callable
from contextlib import suppress
from itertools import islice
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.datasets import MNIST

from gan_lightning.compat import batches_trained_this_epoch


class MNISTNotFoundError(RuntimeError):
    pass


class DataError(ValueError):
    """The data cannot give what the config asks for (e.g. not one full batch)."""


def scale_to_tanh_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of the generator's Tanh."""
    return images.float().div_(127.5).sub_(1.0)


def scale_pixels(images: torch.Tensor, value_range=(-1.0, 1.0)) -> torch.Tensor:
    """uint8 [0, 255] -> float in value_range (lo, hi): the range of the generator's output
    (model.output_range), e.g. [-1, 1] for Tanh, [0, 1] for Sigmoid. [-1, 1] gives exactly
    scale_to_tanh_range's values."""
    lo, hi = value_range
    return images.float().div_(255.0 / (hi - lo)).add_(lo)


def rescale(images: torch.Tensor, from_range, to_range) -> torch.Tensor:
    """Images in from_range mapped linearly to to_range (the same tensor when the ranges agree)."""
    (a, b), (c, d) = from_range, to_range
    if (a, b) == (c, d):
        return images
    return (images - a) * ((d - c) / (b - a)) + c


def mnist_raw_folder(root: str) -> Path:
    return Path(root).resolve() / "MNIST" / "raw"


def find_or_download_mnist(root: str, download: bool) -> None:
    """Make sure the four MNIST files are under root/MNIST/raw, downloading them if allowed."""
    raw = mnist_raw_folder(root)
    # torchvision's own list of the files, without their .gz ending
    names = [Path(url).stem for url, _ in MNIST.resources]
    if all((raw / name).is_file() for name in names):
        return
    hint = f"MNIST not found in {raw}. Point data.root at a folder that holds MNIST/raw/ (for example data.root=../shared/data)"
    if not download:
        raise MNISTNotFoundError(hint + " or allow data.download=true.")
    made = [folder for folder in (raw, raw.parent, Path(root)) if not folder.exists()]  # deepest first
    try:
        MNIST(root, train=True, download=True)
        MNIST(root, train=False, download=True)
    except Exception as err:  # torchvision raises RuntimeError, URLError or OSError depending on the mirror
        for folder in made:  # the empty folders torchvision made for the download (a partial file keeps them)
            with suppress(OSError):
                folder.rmdir()
        # torchvision tells each mirror's failure on its own line; the last one says why
        reason = str(err).strip().splitlines()[-1].strip() if str(err).strip() else type(err).__name__
        raise MNISTNotFoundError(f"{hint}; downloading it failed ({reason}).") from None


def idx_problem(path: Path) -> str | None:
    """What is wrong with an MNIST file in the IDX format (magic 0 0 8 ndim, ndim sizes, the bytes), or None."""
    with open(path, "rb") as f:
        header = f.read(4)
        if len(header) < 4 or header[:3] != b"\x00\x00\x08" or not 1 <= header[3] <= 3:
            return "is not an MNIST IDX file (corrupt)"
        dims = f.read(4 * header[3])
    if len(dims) < 4 * header[3]:
        return "is truncated (its header is incomplete)"
    expected = 4 + len(dims) + math.prod(struct.unpack(f">{header[3]}I", dims))
    size = path.stat().st_size
    return None if size == expected else f"is truncated or corrupt ({size} bytes, its header says {expected})"


def load_mnist_images(root: str, train: bool = True) -> torch.Tensor:
    """The images of one split as a uint8 tensor (N, 1, 28, 28), read by torchvision."""
    try:
        return MNIST(root, train=train, download=False).data.unsqueeze(1)
    except (RuntimeError, AssertionError, ValueError):  # torchvision: missing files, or a bare assert / reshape error on bad ones
        raw = mnist_raw_folder(root)
        split = "train" if train else "t10k"
        for name in (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"):
            if (raw / name).is_file() and (problem := idx_problem(raw / name)):
                raise MNISTNotFoundError(f"MNIST file {raw / name} {problem}; delete it to download it again, or point data.root at a good copy") from None
        raise MNISTNotFoundError(f"MNIST not found in {raw}") from None


class InMemoryImages(Dataset):
    """uint8 images scaled to value_range ([-1, 1] unless told) once, kept as one float tensor (188 MB for MNIST's 60,000
    training images), so that a batch is one gather and no arithmetic: scaling each batch again
    cost ~3% of the reference GAN's images/s at batch 64 (measured, BENCHMARKS.md)."""

    def __init__(self, images: torch.Tensor, value_range=(-1.0, 1.0)):
        self.images = scale_pixels(images, value_range)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        # The DataLoader hands a whole batch of indices here when the dataset defines this method.
        # non_blocking: copying the indices to a GPU must not wait for the steps already queued there.
        return self.images[torch.as_tensor(indices).to(self.images.device, non_blocking=True)]

    def to(self, device: torch.device) -> "InMemoryImages":
        self.images = self.images.to(device)
        return self


class EpochShuffle(RandomSampler):
    """A random order per epoch that depends on (seed, epoch) alone, as DistributedSampler's does.
    Lightning calls set_epoch at the start of every epoch, of a resumed one too, so the order after
    a resume is the uninterrupted run's; a plain RandomSampler draws it from the global RNG instead.
    It stays a RandomSampler so that Lightning swaps it for its DistributedSampler under DDP."""

    def __init__(self, data_source: Dataset, seed: int):
        super().__init__(data_source, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator.manual_seed(self.seed + epoch)


class ResumableLoader(DataLoader):
    """A DataLoader that resumes in the middle of an epoch: every epoch skips the batches that
    training already had in it, `trained()` (the trainer's batch counter, 0 at an epoch start and
    restored by Lightning from a checkpoint saved within an epoch). Skipping replays the sampler, so
    it suits samplers whose order depends on the epoch alone (EpochShuffle, DistributedSampler), at
    the cost of one in-memory gather per skipped batch."""

    def __init__(self, *args, trained: Callable[[], int] = lambda: 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.trained = trained

    def __iter__(self):
        # A generator: this runs when the first batch is asked for, after Lightning has set the
        # epoch and restored its batch counter.
        yield from islice(super().__iter__(), self.trained(), None)

    # Lightning warns that a loader without these cannot resume mid-epoch. This one keeps no state
    # of its own: Lightning's restore of such state is skipped when configure_optimizers asks for
    # trainer.estimated_stepping_batches (Lightning issue #20550), its batch counter is not.
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def keep_batch(batch: torch.Tensor) -> torch.Tensor:
    """collate_fn for batches that __getitems__ already stacked (module-level so workers can pickle it)."""
    return batch


def wants_device_data(on_device: str | bool, device: torch.device, num_workers: int) -> bool:
    """Whether the training images should live on `device` (data.on_device): "auto" on a GPU, when
    no worker processes are asked for (they could not share GPU memory); true: on any device, the CPU
    included (the same code path, testable without a GPU); false: never."""
    if on_device == "auto":
        return device.type != "cpu" and num_workers == 0
    return bool(on_device)


class MNISTDataModule(L.LightningDataModule):
    """batch_size is the minibatch of one D update; a loader batch holds batches_per_step of them
    (optim.d_steps) for each of the step's iterations_per_step iterations (optim.iterations_per_step):
    the k D updates of an iteration each get a fresh real minibatch (Goodfellow et al. 2014, Alg. 1;
    WGAN-GP), and an epoch is still every real image once through D.

    pixel_range: the generator's output range (model.output_range), which the images are scaled to.
    num_train: train on the first num_train training images only (None: all 60,000), e.g. 50,000 with
    the last 10,000 held out for validation, as Goodfellow et al. 2014."""

    def __init__(self, root: str = "data", batch_size: int = 64, num_workers: int = 0, download: bool = True, on_device: str | bool = "auto",
                 batches_per_step: int = 1, pixel_range=(-1.0, 1.0), num_train: int | None = None, iterations_per_step: int = 1):
        super().__init__()
        self.pixel_range = tuple(pixel_range)
        self.num_train = num_train
        self.root = str(root)
        self.batch_size = batch_size
        self.batches_per_step = batches_per_step
        self.iterations_per_step = iterations_per_step
        self.num_workers = num_workers
        self.download = download
        self.on_device = on_device
        self.data_device: torch.device | None = None  # where the training images were moved in setup, if anywhere
        self.train_set: InMemoryImages | None = None
        self.test_set: InMemoryImages | None = None
        self.shuffle_seed: int | None = None  # drawn at the first train_dataloader(), kept in checkpoints

    def prepare_data(self) -> None:
        find_or_download_mnist(self.root, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = InMemoryImages(load_mnist_images(self.root, train=True)[: self.num_train], self.pixel_range)
        if self.test_set is None:
            self.test_set = InMemoryImages(load_mnist_images(self.root, train=False), self.pixel_range)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if wants_device_data(self.on_device, device, self.num_workers):
            # Lightning has set up its strategy before this hook: root_device is this process's
            # GPU, so under DDP every process holds all images on its own GPU, and its sampler
            # (Lightning's DistributedSampler) picks its shard by index as on the host.
            if self.num_workers:
                raise DataError(f"data.on_device=true needs data.num_workers=0 (workers cannot share device memory), got {self.num_workers}")
            self.data_device = device
            self.train_set.to(device)
        processes = self.trainer.world_size if self.trainer is not None else 1
        if len(self.train_set) // processes < self.images_per_step:
            # full batches only (train_dataloader): the run would end at once having trained nothing
            needed = (f"data.batch_size={self.batch_size}" + (f" x optim.d_steps={self.batches_per_step}" if self.batches_per_step > 1 else "")
                      + (f" x optim.iterations_per_step={self.iterations_per_step}" if self.iterations_per_step > 1 else ""))
            raise DataError(f"{needed} is larger than the {len(self.train_set)} training images"
                            + (f" split over {processes} processes" if processes > 1 else "") + ": not one full batch to train on")

    def _loader(self, dataset: Dataset, drop_last: bool, loader: type[DataLoader] = DataLoader, batch_size: int | None = None, **kwargs) -> DataLoader:
        return loader(
            dataset,
            batch_size=batch_size or self.batch_size,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=keep_batch,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        if self.shuffle_seed is None:
            # from the global RNG, so that seed=N fixes the data order as well
            self.shuffle_seed = int(torch.randint(2**31, ()))
        # The loader's own generator: it draws a seed for its workers at every epoch, which would
        # otherwise come from the global RNG and move the noise stream by one draw on resume.
        # Full batches only: a small last batch would weigh its few samples more in both losses.
        return self._loader(
            self.train_set,
            drop_last=True,
            loader=ResumableLoader,
            batch_size=self.images_per_step,  # one training step: a real minibatch per D update
            sampler=EpochShuffle(self.train_set, self.shuffle_seed),
            generator=torch.Generator().manual_seed(self.shuffle_seed),
            trained=self.batches_trained_this_epoch,
        )

    @property
    def images_per_step(self) -> int:
        return self.batch_size * self.batches_per_step * self.iterations_per_step

    def batches_trained_this_epoch(self) -> int:
        if self.trainer is None:  # iterated by hand, not by a Trainer
            return 0
        return batches_trained_this_epoch(self.trainer)

    def state_dict(self) -> dict:
        # images_per_step: what a resume in the middle of an epoch must keep (checkpoint.check_resume)
        return {"shuffle_seed": self.shuffle_seed, "images_per_step": self.images_per_step}

    def load_state_dict(self, state: dict) -> None:
        self.shuffle_seed = state["shuffle_seed"]

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, drop_last=False)
