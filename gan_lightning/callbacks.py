"""Callbacks that let a researcher see the game: sample grids from fixed noise."""

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid, save_image


class SampleGrid(L.Callback):
    """At the end of every epoch: the generator's images for the fixed sample noise, as a
    TensorBoard image ("samples") and as a PNG in dirpath. Rank 0 only."""

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
                logger.experiment.add_image("samples", grid, global_step=trainer.global_step)


class InterruptCheckpoint(L.Callback):
    """On Ctrl-C, save a checkpoint to resume from (dirpath/filename.ckpt).

    Unlike Lightning's OnExceptionCheckpoint this ignores other exceptions, whose state may be
    broken (a NaN loss, say), and it does not make fit() look for a checkpoint to resume from."""

    def __init__(self, dirpath: str, filename: str = "interrupted"):
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            trainer.save_checkpoint(self.path)
