"""Callbacks that let a researcher see the game (sample grids from fixed noise), and keep a stopped
run resumable (a checkpoint on Ctrl-C, SIGTERM and SIGUSR1), and the model summary without its
FLOPs."""

import logging
import signal
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary.model_summary import get_formatted_model_size, get_human_readable_count
from torchvision.utils import make_grid, save_image

from gan_lightning.compat import stop_after_this_batch
from gan_lightning.loggers import last_batch_step

log = logging.getLogger(__name__)


class SampleGrid(L.Callback):
    """At the end of every epoch: the generator's images for the fixed sample noise, as a
    TensorBoard image ("train/samples": one card per run, after the training scalars, so that the
    cards of a large sweep do not push the losses down) and as a PNG in dirpath. Rank 0 only."""

    def __init__(self, dirpath: str, nrow: int = 8):
        self.dirpath = Path(dirpath)
        self.nrow = nrow

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        images = pl_module.sample().cpu()
        grid = make_grid(images, nrow=self.nrow, normalize=True, value_range=pl_module.output_range, pad_value=1.0)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.dirpath / f"epoch_{trainer.current_epoch:03d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("train/samples", grid, global_step=last_batch_step(trainer))


class Interrupted(BaseException):
    """A run stopped by a signal, with the checkpoint it saved (None if none). A BaseException, like
    KeyboardInterrupt: it must end a Hydra sweep too, where failures of one job (Exceptions) do not."""

    def __init__(self, signum: int, ckpt_path: Path | None, step: int):
        super().__init__(signum, ckpt_path, step)
        self.signum, self.ckpt_path, self.step = signum, ckpt_path, step


class InterruptCheckpoint(L.Callback):
    """On Ctrl-C, SIGTERM or SIGUSR1 (what cluster schedulers send before stopping or pre-empting a
    job), save a checkpoint to resume from (dirpath/filename.ckpt).

    Lightning turns SIGTERM into a SIGTERMException at the end of the current batch; SIGUSR1 is made
    to do the same, unless Lightning claimed it (SLURM's auto-requeue saves its own hpc_ckpt and
    requeues the job). Unlike Lightning's OnExceptionCheckpoint this ignores other exceptions, whose
    state may be broken (a NaN loss, say), and it does not make fit() look for a checkpoint to resume from.

    Under DDP the signal handlers are its own: they note the signal (and pass it on, as Lightning's
    does), and at the end of every AGREE_EVERY-th step the processes agree by one all-reduce whether
    any was signalled, then all stop after that step. A signal during an epoch's end (checkpoint,
    grid, evaluation) is acted on in the next epoch; one after the last such step lets the run finish."""

    # Under DDP the processes agree on a signal every this many steps: the all-reduce took ~0.2 ms with 2
    # CPU processes (gloo), a few % of a step there, while a scheduler's grace period is many seconds.
    AGREE_EVERY = 10

    def __init__(self, dirpath: str, filename: str = "interrupted"):
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.signum = signal.SIGTERM  # the signal behind a SIGTERMException
        self.pending, self.launcher = None, None  # under DDP: the signal noted, and the launcher to pass it on with

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registers its signal handlers just before this hook and restores the previous
        # ones when fit() ends, these included.
        self.pending, self.launcher = None, trainer.strategy.launcher
        sigusr1_free = signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None)  # else SLURM's auto-requeue has it
        if trainer.world_size > 1:
            # Lightning's SIGTERM handler runs a collective, which deadlocks when the signal lands in
            # another one (compat.stop_after_this_batch): note the signal, agree at a batch's end.
            signal.signal(signal.SIGTERM, self._note)
            if sigusr1_free:
                signal.signal(signal.SIGUSR1, self._note)
        elif sigusr1_free:
            signal.signal(signal.SIGUSR1, self._stop_as_on_sigterm)

    def _stop_as_on_sigterm(self, signum, frame) -> None:
        self.signum = signum
        signal.getsignal(signal.SIGTERM)(signum, frame)  # Lightning's: stop after this batch

    def _note(self, signum, frame) -> None:
        """Under DDP: remember the signal and pass it on to the processes this one started (rank 0 of
        a script launch, as Lightning's handler does); the batch's end acts on it."""
        if self.pending is None:
            self.pending = signum
            if self.launcher is not None:
                self.launcher.kill(signum)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if trainer.world_size < 2 or trainer.global_step % self.AGREE_EVERY:
            return
        # every process is here, after the same batch: one small all-reduce says whether any was signalled
        signalled = int(trainer.strategy.reduce(torch.tensor(float(self.pending or 0), device=pl_module.device), reduce_op="max").item())
        if signalled:
            self.signum = signal.Signals(signalled)
            stop_after_this_batch(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            trainer.save_checkpoint(self.path, weights_only=False)  # the full state; said, so Lightning does not log its default


class NetworkSummary(ModelSummary):
    """Lightning's model summary (each network's class and parameter count) without its FLOPs column
    and total: Lightning counts FLOPs on the module's example_input_array, which a GAN (two networks,
    noise in) has not, so they read 0. One line per network."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, **kwargs) -> None:
        columns = dict(summary_data)
        for name, kind, params in zip(columns["Name"], columns["Type"], columns["Params"]):
            log.info("%s: %s, %s parameters", name, kind, params.strip())
        log.info("%s parameters in all (%s MB), %s trainable", get_human_readable_count(total_parameters),
                 get_formatted_model_size(model_size), get_human_readable_count(trainable_parameters))


class InitOutputBias(L.Callback):
    """Before training starts, set G's output bias from the training images' pixel means
    (generator.init_output_bias), as Goodfellow et al. 2014 did (pylearn2's
    init_sigmoid_bias_from_marginals). Runs in setup, after the data are loaded and before Lightning
    restores a checkpoint: a resumed run keeps its trained bias."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        images = trainer.datamodule.train_set.images  # scaled to G's output range
        lo, hi = pl_module.output_range
        pl_module.generator.init_output_bias(((images.mean(0) - lo) / (hi - lo)).to(pl_module.device))


class SGDSchedule(L.Callback):
    """The SGD schedule of Goodfellow et al. 2014 (pylearn2's ExponentialDecay and
    MomentumAdjustor), for both optimizers:

    - after every update each learning rate is divided by lr_decay, down to min_lr (after a training
      step of optim.iterations_per_step iterations, by lr_decay to that power: the same rates per update);
    - at the start of epoch e (counted from 0 here, from 1 in pylearn2) the momentum is
      momentum + (final_momentum - momentum) * min(1, e / saturate_epochs): linear from its
      initial value to final_momentum over saturate_epochs epochs, then constant.

    The rates live in the optimizers' state, so a resumed run goes on from its checkpoint's rates;
    the momentum depends on the epoch alone."""

    def __init__(self, momentum: float = 0.5, final_momentum: float = 0.7, saturate_epochs: int = 250, lr_decay: float = 1.000004,
                 min_lr: float = 1e-6):
        self.momentum, self.final_momentum, self.saturate_epochs = momentum, final_momentum, saturate_epochs
        self.lr_decay, self.min_lr = lr_decay, min_lr

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        progress = min(1.0, trainer.current_epoch / self.saturate_epochs)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["momentum"] = self.momentum + (self.final_momentum - self.momentum) * progress

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = max(group["lr"] / self.lr_decay ** getattr(pl_module, "iterations", 1), self.min_lr)
