"""Score a trained generator: `python eval.py ckpt_path=<file.ckpt> data.root=<mnist root>` (see gan_lightning/metrics/commands.py)."""

from gan_lightning.metrics.commands import eval_main

if __name__ == "__main__":
    eval_main()
