"""Score a trained generator: `python eval.py ckpt_path=<file.ckpt> data.root=<mnist root>`; `python eval.py --help`."""

from gan_lightning.evaluate import main

if __name__ == "__main__":
    main()
