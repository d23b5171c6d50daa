"""The TensorBoard logger of gan-lightning (conf/logger/tensorboard.yaml)."""

from lightning.pytorch.loggers import TensorBoardLogger


def last_batch_step(trainer) -> int:
    """The x-axis value of what is written after a batch: Lightning logs a batch's scalars (and an
    epoch's, at its last batch) at the batch's 0-based index, while trainer.global_step has already
    counted it. Sample grids, alarm texts and the scalars the module writes itself use this, so
    that TensorBoard shows an epoch's grid, evaluation and last losses at one step."""
    return max(trainer.global_step - 1, 0)


class GANTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger without the `epoch` scalar that Lightning's logger connector adds
    to every logged dict: in TensorBoard it is one more card group (a staircase) that sorts before
    `train`, so Time Series would open on it instead of the losses. The x-axis counts batches; the
    epoch of a sample grid or an evaluation is where the grid's step is (gan_lightning/report.py)."""

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        metrics = {name: value for name, value in metrics.items() if name != "epoch"}
        if metrics:
            super().log_metrics(metrics, step)

    def purge_from(self, step: int) -> None:
        """A run resumed at `step` into a folder whose event files may hold points from `step` on (a
        sweep job killed after its last checkpoint, continued from it in its folder): TensorBoard
        drops those (SummaryWriter's purge_step), so that the curves do not run back. Before the
        writer is made, i.e. before anything is logged."""
        self._kwargs["purge_step"] = step
