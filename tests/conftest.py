"""Shared test fixtures: a tiny MNIST in torchvision's layout, and running train.py like a user."""

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROJECT = Path(__file__).resolve().parent.parent


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format of the official MNIST files (magic 0x08, ndim)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def make_tiny_mnist(root: Path, n_train: int = 256, n_test: int = 64, seed: int = 0) -> Path:
    """root/MNIST/raw/ with the four files torchvision reads; images are a bright bar per class."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for image, label in zip(images, labels):
            image[4 + 2 * label : 6 + 2 * label, 4:24] = 255
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    return make_tiny_mnist(tmp_path_factory.mktemp("mnist"))


# Small, quiet, CPU-only runs; each test adds what it checks.
FAST = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.batch_size=32",
    "eval.num_samples=256",  # the end-of-training evaluation on a few images, not 10,000
]


def run_train(*overrides: str, timeout: float = 300, multirun: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python train.py [-m] overrides...` from the project folder, as a user would."""
    cmd = [sys.executable, str(PROJECT / "train.py"), *(["-m"] if multirun else []), *overrides]
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=timeout, env=full_env)


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-5000:]}"
    return result


@pytest.fixture
def train_in_process(mnist_root, tmp_path):
    """train(cfg) in this process, as train.py would call it: train_in_process(*overrides, run_dir=...)
    composes the config with tiny MNIST and FAST, the run folder tmp_path/run unless run_dir is given,
    extra_callbacks as in train().
    Returns train()'s value; its exceptions (ConfigError, Interrupted, ...) propagate."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict, read_write

    from gan_lightning.train import CONFIG_DIR, train

    def run(*overrides: str, run_dir: Path | None = None, extra_callbacks: list = ()):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[f"data.root={mnist_root}", *FAST, *overrides], return_hydra_config=True)
        with read_write(cfg.hydra):
            cfg.hydra.runtime.output_dir = str(run_dir or tmp_path / "run")
            cfg.hydra.runtime.cwd = str(PROJECT)
        HydraConfig.instance().set_config(cfg)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]  # as Hydra hands it to the task function
        OmegaConf.resolve(cfg)
        return train(cfg, extra_callbacks=extra_callbacks)

    return run


def pytest_configure(config):
    # here rather than in pyproject.toml's pytest options, which another branch edits
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; runs only where torch.cuda.is_available() (pytest -m gpu)")
