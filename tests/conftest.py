"""Shared test fixtures: a tiny MNIST in torchvision's layout, the config as train.py composes it,
train(cfg) in this process, and running train.py like a user where the command line itself is tested."""

# torch, Hydra and the project are imported where they are used, not here: under xdist the controller
# loads this file too, and starts its workers only after it (importing Lightning takes seconds).
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
TRAIN_PY = PROJECT / "train.py"


def write_idx(path: Path, array) -> None:
    """Write a uint8 array in the IDX format of the official MNIST files (magic 0x08, ndim)."""
    import numpy as np

    array = np.ascontiguousarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def make_tiny_mnist(root: Path, n_train: int = 256, n_test: int = 64, seed: int = 0) -> Path:
    """root/MNIST/raw/ with the four files torchvision reads; images are a bright bar per class."""
    import numpy as np

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


def pytest_configure(config):
    # pytest-xdist's mark, declared for runs without xdist too (python -m pytest -q)
    config.addinivalue_line("markers", "xdist_group(name): tests that share a costly module fixture run in one xdist worker")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; runs only where torch.cuda.is_available() (pytest -m gpu)")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        # Under xdist each worker (and the train.py it starts) gets its share of the cores: torch's
        # default of one thread per core in every worker oversubscribes them (more CPU time, not less wall time).
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


OUTPUTS = PROJECT / "outputs"  # the user's runs: no test may write there (each test gives its run folder)
OUTPUTS_BEFORE = pytest.StashKey[set]()


def outputs_listing() -> set[str]:
    return {str(p.relative_to(OUTPUTS)) for p in OUTPUTS.rglob("*")} if OUTPUTS.is_dir() else set()


def pytest_sessionstart(session):
    session.config.stash[OUTPUTS_BEFORE] = outputs_listing()


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):  # a pytest-xdist worker: the controller checks once
        return
    written = sorted(outputs_listing() - session.config.stash.get(OUTPUTS_BEFORE, set()))
    if written:
        print(f"\nerror: the tests wrote into {OUTPUTS}: {', '.join(written[:5])}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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


def compose_config(*overrides: str, output_dir: Path | str = "/tmp/gan-compose-test"):
    """The config exactly as train.py's task function gets it: composed from conf/ with overrides,
    Hydra's runtime values (the run folder output_dir, the cwd) set and resolved, the hydra node gone.
    Nothing is written; output_dir only matters to what is built from the config."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict, read_write

    from gan_lightning.train import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    with read_write(cfg.hydra):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(PROJECT)
    HydraConfig.instance().set_config(cfg)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]  # as Hydra hands it to the task function
    OmegaConf.resolve(cfg)
    return cfg


def command_config(name: str, *overrides: str):
    """The config of eval.py (name "evaluate") or sample.py ("sample") as the command line composes it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gan_lightning.train import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=list(overrides))


def train_here(*overrides: str, run_dir: Path, extra_callbacks=()):
    """train(cfg) in this process, as train.py's main calls it, on the composed config; run_dir is
    the run folder. Saves starting a Python process and importing torch and Lightning (seconds) per
    run. What Hydra itself does around the task (.hydra/, train.log, one-line errors and exit codes,
    sweeps) is not run: the tests of those start train.py."""
    from gan_lightning.train import train

    return train(compose_config(*overrides, output_dir=run_dir), extra_callbacks=list(extra_callbacks))


@pytest.fixture
def train_in_process(mnist_root, tmp_path):
    """train_in_process(*overrides, run_dir=..., extra_callbacks=...): train_here on tiny MNIST with
    FAST, in the run folder tmp_path/run unless run_dir is given. Returns train()'s value; its
    exceptions (ConfigError, Interrupted, ...) propagate."""

    def run(*overrides: str, run_dir: Path | None = None, extra_callbacks=()):
        return train_here(f"data.root={mnist_root}", *FAST, *overrides, run_dir=run_dir or tmp_path / "run", extra_callbacks=extra_callbacks)

    return run


def run_train(*overrides: str, timeout: float = 300, multirun: bool = False, env: dict | None = None, cwd: Path = PROJECT) -> subprocess.CompletedProcess:
    """Run `python train.py [-m] overrides...` from cwd (the project folder unless given), as a user would."""
    cmd = [sys.executable, str(TRAIN_PY), *(["-m"] if multirun else []), *overrides]
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-5000:]}"
    return result



# Modules whose tests start train.py (sweeps, DDP, signals) or build Inception: run first, so that
# under xdist the long tests do not end up alone at the end of one worker while the other idles.
LONG_FIRST = ("test_sweeps.py", "test_inception.py", "test_benchmark.py", "test_train.py", "test_eval_sample.py", "test_faults.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))  # stable: file order kept within a module
