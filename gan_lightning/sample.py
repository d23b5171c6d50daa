"""`sample.py` (gan-sample): draw images from a trained generator, given its checkpoint (config: conf/sample.yaml).

    python sample.py ckpt_path=<file> n=64                  # a PNG grid
    python sample.py ckpt_path=<file> n=10000 out_dir=<dir> # one PNG per sample (torch-fidelity/clean-fid format)
    python sample.py ckpt_path=<file> interpolate=true      # rows=8 lines of steps=10 latent interpolations
    python sample.py --help

Files go to the checkpoint's run folder (the folder above checkpoints/) unless out=/out_dir= says otherwise.
"""

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torchvision.utils import make_grid, save_image

from gan_lightning.evaluate import check_args, load_gan, pick_device, run_command, run_folder, writing
from gan_lightning.metrics.quality import fixed_noise, generated_batches
from gan_lightning.train import CONFIG_DIR


def to_png_range(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(-1, 1) + 1) / 2


def interpolation_noise(rows: int, steps: int, latent_dim: int, seed: int) -> torch.Tensor:
    """rows x steps latents: each row walks in a straight line between two random points."""
    ends = fixed_noise(2 * rows, latent_dim, seed).view(rows, 2, latent_dim)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    return (ends[:, :1] * (1 - t) + ends[:, 1:] * t).reshape(rows * steps, latent_dim)


def sample(cfg: DictConfig) -> Path:
    check_args(cfg, {"n": 1, "nrow": 1, "rows": 1, "steps": 1, "batch_size": 1, "seed": 0}, flags=("interpolate",))
    device = pick_device(cfg.device)
    gan = load_gan(cfg.ckpt_path, device)
    stem = Path(cfg.ckpt_path).stem
    if cfg.interpolate:
        noise = interpolation_noise(cfg.rows, cfg.steps, gan.latent_dim, cfg.seed)
        nrow, default_out = cfg.steps, f"interpolation_{stem}.png"
    else:
        noise = fixed_noise(cfg.n, gan.latent_dim, cfg.seed)
        nrow, default_out = cfg.nrow, f"samples_{stem}.png"
    images = torch.cat([x.cpu() for x in generated_batches(gan, noise, cfg.batch_size)])
    if cfg.out_dir and not cfg.interpolate:
        out = Path(cfg.out_dir)
        digits = len(str(len(images) - 1))
        with writing(out):
            out.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(to_png_range(images)):
                save_image(image, out / f"{i:0{digits}d}.png")
        print(f"{len(images)} PNGs written to {out}")
        return out
    out = Path(cfg.out) if cfg.out else run_folder(cfg.ckpt_path) / default_out
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        save_image(make_grid(to_png_range(images), nrow=nrow, pad_value=1.0), out)
    print(f"written to {out}")
    return out


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
def main(cfg: DictConfig) -> None:
    run_command(sample, cfg)


if __name__ == "__main__":
    main()
