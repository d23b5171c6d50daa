"""`eval.py` (gan-eval): score a trained generator, given its checkpoint (config: conf/evaluate.yaml).

    python eval.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt data.root=../shared/data
    python eval.py ckpt_path=<file> inception=true [inception_weights=<file>]  # + fid_inception (torch-fidelity)
    python eval.py ckpt_path=<file> parzen=true  # + parzen_ll, parzen_ll_stderr, parzen_sigma (Goodfellow et al. 2014)
    python eval.py real_images=true parzen=true  # the yardstick: the same scores for real training images
    python eval.py --help

A Hydra app, as train.py: key=value overrides, --help, tab completion. The networks are rebuilt from
the hyperparameters saved in the checkpoint (any loss variant), on device=auto|cpu|cuda. The JSON
goes to the checkpoint's run folder (the folder above checkpoints/) unless out= says otherwise.
"""

import contextlib
import json
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from gan_lightning import compat
from gan_lightning.checkpoint import CheckpointError, read_checkpoint
from gan_lightning.data import MNISTNotFoundError, load_mnist_images, scale_to_tanh_range
from gan_lightning.metrics.classifier import RECORD, ClassifierWeightsError
from gan_lightning.metrics.inception import InceptionUnavailable, inception_fid
from gan_lightning.metrics.parzen import generator_parzen, mnist_in_unit_range, mnist_valid_test, parzen_estimate
from gan_lightning.metrics.quality import SampleQuality, fixed_noise, generated_batches
from gan_lightning.summary import first_line
from gan_lightning.train import CONFIG_DIR


class UsageError(Exception):
    pass


def check_args(cfg: DictConfig, minimum: dict[str, int], flags: tuple[str, ...] = ()) -> None:
    """What Hydra cannot check in a plain yaml config: a checkpoint is given (unless real_images=true),
    counts are integers of at least their minimum, flags are true or false."""
    if cfg.get("real_images") is True and cfg.ckpt_path:
        raise UsageError("real_images=true scores MNIST training images, not a generator: leave out ckpt_path")
    if not cfg.ckpt_path and cfg.get("real_images") is not True:
        raise UsageError("ckpt_path=<file.ckpt> is required")
    for key, low in minimum.items():
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UsageError(f"{key} must be an integer >= {low}, got {value}")
    for key in flags:
        if not isinstance(cfg[key], bool):
            raise UsageError(f"{key} must be true or false, got {cfg[key]}")


@contextlib.contextmanager
def writing(path: Path):
    """An output that cannot be written (a read-only folder, a full disk) as one UsageError line."""
    try:
        yield
    except OSError as err:
        raise UsageError(f"could not write {path}: {err.strerror or err}") from None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device={name} asked for but no CUDA device is available")
    try:
        return torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"device must be auto, cpu, cuda or cuda:<index>, got {name}") from None


def load_gan(ckpt_path: str, device: torch.device):
    from gan_lightning.module import GAN

    compat.check()  # the module relies on the internals compat.py works around, as in training
    path = Path(ckpt_path)
    checkpoint = read_checkpoint(path)  # the check train.py makes too
    try:
        gan = GAN(**checkpoint["hyper_parameters"])
        gan.load_state_dict(checkpoint["state_dict"])
    except Exception as err:  # weights that do not fit the networks its hyperparameters describe
        reason = first_line(err)[:200]
        raise CheckpointError(f"{path} is not a usable gan-lightning checkpoint ({type(err).__name__}: {reason})") from None
    return gan.to(device).eval()


def run_folder(ckpt_path: str) -> Path:
    """The training run a checkpoint belongs to: <run>/checkpoints/x.ckpt -> <run>."""
    folder = Path(ckpt_path).resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


def sample_quality(cfg: DictConfig, device: torch.device) -> SampleQuality:
    """fid_mnist and the coverage numbers against the MNIST test set, plus fid_inception with inception=true."""
    inception = inception_fid(cfg.inception_weights) if cfg.inception else None
    return SampleQuality(load_mnist_images(cfg.data.root, train=False), device=device, batch_size=cfg.batch_size, inception=inception)


def scores(gan, cfg: DictConfig, device: torch.device) -> dict:
    """The metrics of cfg.num_samples images from fixed noise: sample_quality's, and the
    Parzen-window estimate with parzen=true. Another score is one more option and block here."""
    quality = sample_quality(cfg, device)
    noise = fixed_noise(cfg.num_samples, gan.latent_dim, cfg.seed)
    metrics = quality(generated_batches(gan, noise, cfg.batch_size))
    if cfg.parzen:  # Goodfellow et al. 2014's Parzen-window estimate (metrics/parzen.py)
        metrics.update(generator_parzen(gan, *mnist_valid_test(cfg.data.root, cfg.parzen_valid_size), noise, cfg.batch_size))
    return metrics


def real_image_scores(cfg: DictConfig, device: torch.device) -> dict:
    """The same scores for the first cfg.num_samples MNIST training images in place of samples: what
    real digits score, the yardstick of every other number (training images 50,000-60,000, which
    choose the Parzen sigma, are not among them while num_samples <= 50,000)."""
    if cfg.num_samples > 50_000:
        raise UsageError(f"num_samples must be at most 50000 with real_images=true (the rest choose the Parzen sigma), got {cfg.num_samples}")
    images = load_mnist_images(cfg.data.root, train=True)[: cfg.num_samples]
    metrics = sample_quality(cfg, device)(scale_to_tanh_range(batch).to(device) for batch in images.split(cfg.batch_size))
    if cfg.parzen:
        metrics.update(parzen_estimate(mnist_in_unit_range(images), *mnist_valid_test(cfg.data.root, cfg.parzen_valid_size)))
    return metrics


def evaluate(cfg: DictConfig) -> dict:
    check_args(cfg, {"num_samples": 2, "batch_size": 1, "seed": 0, "parzen_valid_size": 1}, flags=("inception", "parzen", "real_images"))  # FID needs two samples
    device = pick_device(cfg.device)
    if cfg.real_images:
        result = {**real_image_scores(cfg, device), "samples": f"the first {cfg.num_samples} MNIST training images", "num_samples": cfg.num_samples}
        out = Path(cfg.out) if cfg.out else None  # no run folder to put it in
    else:
        gan = load_gan(cfg.ckpt_path, device)
        result = {**scores(gan, cfg, device), "ckpt_path": str(Path(cfg.ckpt_path).resolve()), "num_samples": cfg.num_samples, "seed": cfg.seed}
        out = Path(cfg.out) if cfg.out else run_folder(cfg.ckpt_path) / f"eval_{Path(cfg.ckpt_path).stem}.json"
    result["classifier_sha256"] = json.loads(RECORD.read_text())["sha256"]
    print(json.dumps(result, indent=2))
    if out is not None:
        with writing(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {out}", file=sys.stderr)
    return result


COMMAND_ERRORS = (UsageError, CheckpointError, MNISTNotFoundError, ClassifierWeightsError, InceptionUnavailable, compat.CompatError)


def run_command(command, cfg: DictConfig):
    """command(cfg), with the commands' expected errors as one line and exit status 2."""
    try:
        return command(cfg)
    except COMMAND_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_command(evaluate, cfg)


if __name__ == "__main__":
    main()
