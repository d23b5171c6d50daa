"""Inception FID (fid_inception), the number papers report, next to the project's fid_mnist.

torchmetrics' FrechetInceptionDistance with torch-fidelity's InceptionV3 (2048-d pool features, the
TF-compatible network of the original FID code), on the generated digits as 3-channel images in
[0, 1], resized to 299x299 inside the network. Off by default: it needs the torch-fidelity package
and its Inception weights (~92 MB: downloaded into torch hub's cache by the first use when there is
internet, or given as a file), and costs far more than fid_mnist (InceptionV3 at 299x299 per image).
"""

from pathlib import Path

import torch

from gan_lightning.summary import first_line

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file name for them
CHUNK = 100  # images per Inception pass: its activations at 299x299 take tens of MB per image


class InceptionUnavailable(RuntimeError):
    """Inception FID was asked for but cannot be computed here (package or weights missing)."""


def inception_fid(weights_path: str | None = None):
    """torchmetrics' FrechetInceptionDistance on torch-fidelity's InceptionV3: weights from
    weights_path, or (None) from torch hub's cache, downloading them when they are not there yet.
    Raises InceptionUnavailable with what to do when that fails."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        import torch_fidelity  # noqa: F401  (torchmetrics needs it for Inception features)
    except ImportError:
        raise InceptionUnavailable("Inception FID needs the torch-fidelity package: pip install torch-fidelity "
                                   "(or pip install -e '.[inception]')") from None
    if weights_path is not None and not Path(weights_path).is_file():
        raise InceptionUnavailable(f"Inception weights not found: {weights_path} (eval.inception.weights_path)")
    try:
        return FrechetInceptionDistance(feature=2048, normalize=True, reset_real_features=False,
                                        feature_extractor_weights_path=weights_path)
    except Exception as err:  # no internet, a partial download, a file that is not these weights...
        reason = first_line(err)[:200]
        where = (f"the file {weights_path}" if weights_path else
                 f"torch hub's cache ({Path(torch.hub.get_dir()) / 'checkpoints' / WEIGHTS_FILE}) or a download")
        raise InceptionUnavailable(
            f"Inception FID: could not load InceptionV3 weights from {where} ({type(err).__name__}: {reason}). "
            f"Without internet, fetch torch-fidelity's {WEIGHTS_FILE} elsewhere and give it as eval.inception.weights_path=<file> "
            "(eval.py: inception_weights=<file>), or leave eval.inception.enabled=false (fid_mnist needs no download)."
        ) from None


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """Generator images (N, 1, H, W) in [-1, 1] -> (N, 3, H, W) in [0, 1], as the FID metric takes them."""
    return ((images + 1) / 2).clamp(0, 1).expand(-1, 3, -1, -1)


def add_images(fid, images: torch.Tensor, real: bool) -> None:
    """Feed generator images (in [-1, 1]) to an Inception FID metric, CHUNK at a time."""
    for chunk in to_inception_input(images).split(CHUNK):
        fid.update(chunk, real=real)
