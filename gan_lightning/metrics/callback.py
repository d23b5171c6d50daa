"""Measure the generator during training: fid_mnist and mode coverage every few epochs and at the end."""

import time

import lightning as L
import torch

from gan_lightning.data import MNISTNotFoundError, load_mnist_images
from gan_lightning.loggers import last_batch_step
from gan_lightning.metrics.inception import inception_fid
from gan_lightning.metrics.parzen import generator_parzen, mnist_valid_test
from gan_lightning.metrics.quality import SampleQuality, fixed_noise, generated_batches
from gan_lightning.precision import matmul_precision


class EvaluateGenerator(L.Callback):
    """Every every_n_epochs epochs and after the last one: num_samples images of GAN.sample(z) for
    fixed noise (seed), scored against the MNIST test set of data_root, logged as eval/<metric>
    (with inception=true also eval/fid_inception, on Inception weights from inception_weights or torch hub;
    with parzen=true the Parzen-window estimate of Goodfellow et al. 2014, eval/parzen_ll and eval/parzen_ll_stderr)
    (TensorBoard scalars, trainer.callback_metrics, hence train.py's return value).

    Under DDP each process generates and scores its share of the noise and of the test set;
    torchmetrics sums the states over processes, so every process logs the single-process values.

    A fit that trains nothing ends with an evaluation too: a resume from a checkpoint already at
    the run's end (a job cut off during its final evaluation, continued by its sweep) would
    otherwise end with no final metrics, and its sweep job with no result.
    """

    def __init__(self, data_root: str, every_n_epochs: int = 5, num_samples: int = 10000, batch_size: int = 1000, seed: int = 0,
                 inception: bool = False, inception_weights: str | None = None, parzen: bool = False,
                 parzen_valid_size: int = 1000):
        if every_n_epochs < 1 or num_samples < 2:
            raise ValueError(f"eval.every_n_epochs must be >= 1 and eval.num_samples >= 2, got {every_n_epochs} and {num_samples}")
        self.data_root = data_root
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.inception = inception
        self.inception_weights = inception_weights
        self.inception_metric = None
        self.parzen = parzen  # + eval/parzen_ll, eval/parzen_ll_stderr, eval/parzen_sigma (parzen.py)
        self.parzen_valid_size = parzen_valid_size
        self.parzen_data: tuple[torch.Tensor, torch.Tensor] | None = None  # validation and test images in [0, 1]
        self.quality: SampleQuality | None = None  # built at the first evaluation, kept for the run
        self.reference: torch.Tensor | None = None  # the MNIST test images, read in setup
        self.evaluated_step: int | None = None  # the global step of this fit's last evaluation

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Both now, not at the first evaluation: missing weights or reference images stop the run
        # before any training instead of after its last epoch.
        if self.inception and self.inception_metric is None:
            self.inception_metric = inception_fid(self.inception_weights)
        if self.reference is None:
            try:
                self.reference = load_mnist_images(self.data_root, train=False)
            except MNISTNotFoundError as err:
                raise MNISTNotFoundError(f"eval.data_root: {err}") from None
        if self.parzen and self.parzen_data is None:
            self.parzen_data = mnist_valid_test(self.data_root, self.parzen_valid_size)

    def _share(self, tensor: torch.Tensor, trainer: L.Trainer) -> torch.Tensor:
        return torch.tensor_split(tensor, trainer.world_size)[trainer.global_rank]

    def is_last_epoch(self, trainer: L.Trainer) -> bool:
        epochs_done = trainer.current_epoch + 1 >= (trainer.max_epochs if trainer.max_epochs not in (None, -1) else float("inf"))
        steps_done = trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps
        return epochs_done or steps_done or trainer.should_stop

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0 or self.is_last_epoch(trainer):
            start = time.perf_counter()
            metrics = self.evaluate_here(trainer, pl_module)
            # The metrics are the same value on every process already (see the class docstring);
            # sync_dist averages those identical values (exactly) and keeps Lightning from warning.
            for name, value in metrics.items():
                pl_module.log(f"eval/{name}", float(value), on_step=False, on_epoch=True, sync_dist=True)
            # a group of its own, sorted after train: TensorBoard opens the eval and train groups alone
            pl_module.log("wall_time/eval_seconds", time.perf_counter() - start, on_step=False, on_epoch=True, sync_dist=True)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluated_step = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A fit that ran no epoch (resumed at its max_steps or max_epochs): evaluate what it restored.
        Lightning allows no self.log here, so the values go to the loggers and callback_metrics
        directly, at the step the run's last evaluation would have had."""
        if self.evaluated_step is not None:
            return
        start = time.perf_counter()
        metrics = {f"eval/{name}": float(value) for name, value in self.evaluate_here(trainer, pl_module).items()}
        metrics["wall_time/eval_seconds"] = time.perf_counter() - start
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=last_batch_step(trainer))  # rank 0 alone writes (rank_zero_only)
        trainer.callback_metrics.update({name: torch.tensor(value) for name, value in metrics.items()})

    def evaluate_here(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """evaluate(), leaving the training run as it was."""
        self.evaluated_step = trainer.global_step
        # Leave the training noise stream as it was (building the classifier initialises its
        # layers from the global RNG): a run evaluated after epoch k, being the last, and
        # resumed from there draws the noise of a run that went on without evaluating.
        cuda = [pl_module.device] if pl_module.device.type == "cuda" else []
        # Exact fp32 products whatever matmul_precision trains with: fid_mnist of runs with
        # different settings stays comparable (the classifier's features are matrix products).
        with torch.random.fork_rng(devices=cuda), matmul_precision("highest"):
            return self.evaluate(trainer, pl_module)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        if self.quality is None:
            reference = self._share(self.reference, trainer)
            self.quality = SampleQuality(reference, device=pl_module.device, batch_size=self.batch_size, inception=self.inception_metric)
        noise = fixed_noise(self.num_samples, pl_module.latent_dim, self.seed)
        metrics = self.quality(generated_batches(pl_module, self._share(noise, trainer), self.batch_size))
        if self.parzen:  # on all samples in every process (the same value everywhere)
            metrics.update(generator_parzen(pl_module, *self.parzen_data, noise, self.batch_size))
        return metrics
