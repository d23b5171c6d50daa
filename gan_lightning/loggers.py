"""The TensorBoard logger of gan-lightning (conf/logger/tensorboard.yaml)."""

from lightning.pytorch.loggers import TensorBoardLogger


class GANTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger without the `epoch` scalar that Lightning's logger connector adds
    to every logged dict: in TensorBoard it is one more card group (a staircase) that sorts before
    `train`, so Time Series would open on it instead of the losses. The x-axis counts batches; the
    epoch of a sample grid or an evaluation is where the grid's step is (gan_lightning/report.py)."""

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        metrics = {name: value for name, value in metrics.items() if name != "epoch"}
        if metrics:
            super().log_metrics(metrics, step)
