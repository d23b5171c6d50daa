"""Callbacks that let a researcher see the game (sample grids from fixed noise), and keep a stopped
run resumable (a checkpoint on Ctrl-C, SIGTERM and SIGUSR1), and the model summary without its
FLOPs."""

import logging
import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary.model_summary import get_formatted_model_size, get_human_readable_count
from torchvision.utils import make_grid, save_image

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
        grid = make_grid(images, nrow=self.nrow, normalize=True, value_range=(-1, 1), pad_value=1.0)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.dirpath / f"epoch_{trainer.current_epoch:03d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("train/samples", grid, global_step=trainer.global_step)


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
    state may be broken (a NaN loss, say), and it does not make fit() look for a checkpoint to resume from."""

    def __init__(self, dirpath: str, filename: str = "interrupted"):
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.signum = signal.SIGTERM  # the signal behind a SIGTERMException

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registers its signal handlers just before this hook and restores the previous
        # ones when fit() ends, this one included.
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, self._stop_as_on_sigterm)

    def _stop_as_on_sigterm(self, signum, frame) -> None:
        self.signum = signum
        signal.getsignal(signal.SIGTERM)(signum, frame)  # Lightning's: stop after this batch, tell the DDP processes

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
