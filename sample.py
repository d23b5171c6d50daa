"""Draw from a trained generator: `python sample.py ckpt_path=<file.ckpt> n=64`; `python sample.py --help`."""

from gan_lightning.sample import main

if __name__ == "__main__":
    main()
