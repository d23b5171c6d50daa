"""Draw from a trained generator: `python sample.py ckpt_path=<file.ckpt> n=64 [out_dir=<dir>] [interpolate=true]` (see gan_lightning/metrics/commands.py)."""

from gan_lightning.metrics.commands import sample_main

if __name__ == "__main__":
    sample_main()
