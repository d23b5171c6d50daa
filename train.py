"""Train a GAN on MNIST: `python train.py --help` lists the config groups and options."""

from gan_lightning.train import main

if __name__ == "__main__":
    main()
