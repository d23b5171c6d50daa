"""`eval.py` and `sample.py`: score or draw from a trained generator, given its checkpoint.

    python eval.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt data.root=../shared/data
    python eval.py ckpt_path=<file> inception=true [inception_weights=<file>]  # + fid_inception (torch-fidelity)
    python eval.py ckpt_path=<file> parzen=true             # + parzen_ll, parzen_ll_stderr, parzen_sigma (Goodfellow et al. 2014)
    python sample.py ckpt_path=<file> n=64                  # a PNG grid
    python sample.py ckpt_path=<file> n=10000 out_dir=<dir> # one PNG per sample (torch-fidelity/clean-fid format)
    python sample.py ckpt_path=<file> interpolate=true      # rows=8 lines of steps=10 latent interpolations

Arguments are key=value, as for train.py. The networks are rebuilt from the hyperparameters saved
in the checkpoint (any loss variant), on device=auto|cpu|cuda. Files go to the checkpoint's run
folder (the folder above checkpoints/) unless out=/out_dir= says otherwise.
"""

import json
import sys
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from gan_lightning.checkpoint import CheckpointError, read_checkpoint
from gan_lightning.data import MNISTNotFoundError, load_mnist_images
from gan_lightning.metrics.classifier import RECORD, ClassifierWeightsError
from gan_lightning.metrics.inception import InceptionUnavailable, inception_fid
from gan_lightning.metrics.parzen import generator_parzen, mnist_valid_test
from gan_lightning.metrics.quality import SampleQuality, fixed_noise, generated_batches

EVAL_ARGS = {"ckpt_path": None, "data.root": "data", "num_samples": 10000, "batch_size": 1000, "seed": 0, "device": "auto", "out": None,
             "inception": False, "inception_weights": None, "parzen": False}
SAMPLE_ARGS = {"ckpt_path": None, "n": 64, "nrow": 8, "seed": 0, "device": "auto", "out": None, "out_dir": None,
               "interpolate": False, "rows": 8, "steps": 10, "batch_size": 1000}
# the smallest value of the integer arguments that have one (FID needs two samples)
MINIMUM = {"num_samples": 2, "n": 1, "nrow": 1, "rows": 1, "steps": 1, "batch_size": 1}


class UsageError(Exception):
    pass


def parse(argv: list[str], defaults: dict) -> dict:
    args = dict(defaults)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            raise UsageError(f"unknown argument {arg!r}; expected key=value with key one of {', '.join(defaults)}")
        default = defaults[key]
        if isinstance(default, bool):
            if value.lower() not in ("true", "false"):
                raise UsageError(f"{key} must be true or false, got {value!r}")
            args[key] = value.lower() == "true"
        elif isinstance(default, int):
            try:
                args[key] = int(value)
            except ValueError:
                raise UsageError(f"{key} must be an integer, got {value!r}") from None
            if args[key] < MINIMUM.get(key, args[key]):
                raise UsageError(f"{key} must be an integer >= {MINIMUM[key]}, got {value}")
        else:
            args[key] = None if value.lower() in ("null", "none", "") else value
    if not args["ckpt_path"]:
        raise UsageError("ckpt_path=<file.ckpt> is required")
    return args


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device={name} asked for but no CUDA device is available")
    return torch.device(name)


def load_gan(ckpt_path: str, device: torch.device):
    from gan_lightning.module import GAN

    path = Path(ckpt_path)
    checkpoint = read_checkpoint(path)  # the check train.py makes too
    try:
        gan = GAN(**checkpoint["hyper_parameters"])
        gan.load_state_dict(checkpoint["state_dict"])
    except Exception as err:  # weights that do not fit the networks its hyperparameters describe
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"{path} is not a usable gan-lightning checkpoint ({type(err).__name__}: {reason})") from None
    return gan.to(device).eval()


def run_folder(ckpt_path: str) -> Path:
    """The training run a checkpoint belongs to: <run>/checkpoints/x.ckpt -> <run>."""
    folder = Path(ckpt_path).resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


def evaluate(args: dict) -> dict:
    device = pick_device(args["device"])
    gan = load_gan(args["ckpt_path"], device)
    inception = inception_fid(args["inception_weights"]) if args["inception"] else None
    quality = SampleQuality(load_mnist_images(args["data.root"], train=False), device=device, batch_size=args["batch_size"], inception=inception)
    noise = fixed_noise(args["num_samples"], gan.latent_dim, args["seed"])
    metrics = quality(generated_batches(gan, noise, args["batch_size"]))
    if args["parzen"]:  # Goodfellow et al. 2014's Parzen-window estimate (parzen.py)
        metrics.update(generator_parzen(gan, *mnist_valid_test(args["data.root"]), noise, args["batch_size"]))
    result = {**metrics, "ckpt_path": str(Path(args["ckpt_path"]).resolve()), "num_samples": args["num_samples"], "seed": args["seed"],
              "classifier_sha256": json.loads(RECORD.read_text())["sha256"]}
    out = Path(args["out"]) if args["out"] else run_folder(args["ckpt_path"]) / f"eval_{Path(args['ckpt_path']).stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}", file=sys.stderr)
    return result


def to_png_range(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(-1, 1) + 1) / 2


def interpolation_noise(rows: int, steps: int, latent_dim: int, seed: int) -> torch.Tensor:
    """rows x steps latents: each row walks in a straight line between two random points."""
    ends = fixed_noise(2 * rows, latent_dim, seed).view(rows, 2, latent_dim)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    return (ends[:, :1] * (1 - t) + ends[:, 1:] * t).reshape(rows * steps, latent_dim)


def sample(args: dict) -> Path:
    device = pick_device(args["device"])
    gan = load_gan(args["ckpt_path"], device)
    stem = Path(args["ckpt_path"]).stem
    if args["interpolate"]:
        noise = interpolation_noise(args["rows"], args["steps"], gan.latent_dim, args["seed"])
        nrow, default_out = args["steps"], f"interpolation_{stem}.png"
    else:
        noise = fixed_noise(args["n"], gan.latent_dim, args["seed"])
        nrow, default_out = args["nrow"], f"samples_{stem}.png"
    images = torch.cat([x.cpu() for x in generated_batches(gan, noise, args["batch_size"])])
    if args["out_dir"] and not args["interpolate"]:
        out = Path(args["out_dir"])
        out.mkdir(parents=True, exist_ok=True)
        digits = len(str(len(images) - 1))
        for i, image in enumerate(to_png_range(images)):
            save_image(image, out / f"{i:0{digits}d}.png")
        print(f"{len(images)} PNGs written to {out}")
        return out
    out = Path(args["out"]) if args["out"] else run_folder(args["ckpt_path"]) / default_out
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(to_png_range(images), nrow=nrow, pad_value=1.0), out)
    print(f"written to {out}")
    return out


def run(command, defaults: dict) -> None:
    try:
        command(parse(sys.argv[1:], defaults))
    except (UsageError, CheckpointError, MNISTNotFoundError, ClassifierWeightsError, InceptionUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def eval_main() -> None:
    run(evaluate, EVAL_ARGS)


def sample_main() -> None:
    run(sample, SAMPLE_ARGS)
