"""A Hydra callback that refuses a run folder before Hydra writes into it: one that cannot be written
(one line instead of a traceback from Hydra's own mkdir or log file), or one that already holds
another run (its config, sample grids and TensorBoard events would be overwritten or mixed)."""

import os
import sys
import tempfile
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class RunFolderError(ValueError):
    pass


def is_extra_process() -> bool:
    """One of several processes of one run, other than the first: Lightning's DDP re-runs train.py for
    them with hydra.run.dir set to the first's folder (LOCAL_RANK set); torchrun and srun start every
    rank with RANK / SLURM_PROCID. Those use the folder the first process checked."""
    return "LOCAL_RANK" in os.environ or any(os.environ.get(name, "0") != "0" for name in ("RANK", "SLURM_PROCID"))


def holds_a_run(folder: Path) -> bool:
    return (folder / ".hydra" / "config.yaml").is_file() or (folder / "checkpoints").is_dir()


def check_run_folder(folder: Path, ckpt_path: str | None) -> None:
    """Raise RunFolderError unless folder can hold this run. An existing run's folder is allowed for a
    resume from a checkpoint inside it, and for a SLURM job requeued into its own folder (Lightning's
    auto-requeue left hpc_ckpt_*.ckpt there and resumes from it)."""
    folder = folder.resolve()
    if holds_a_run(folder):
        if ckpt_path == "last":
            from gan_lightning.checkpoint import CheckpointError, newest_last_checkpoint

            try:
                ckpt_path = str(newest_last_checkpoint(Path.cwd() / "outputs"))
            except CheckpointError:
                ckpt_path = None  # train.py says so in its own line
        resuming_here = ckpt_path is not None and Path(ckpt_path).resolve().is_relative_to(folder)
        requeued = "SLURM_JOB_ID" in os.environ and any(folder.glob("**/hpc_ckpt_*.ckpt"))
        if not (resuming_here or requeued):
            raise RunFolderError(f"hydra.run.dir={folder} already holds a run; choose a new folder, or resume into it with "
                                 f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # the permission bits are not the whole story: a read-only mount, a full disk
            pass
    except OSError as err:
        raise RunFolderError(f"cannot write the run folder {folder}: {err.strerror or err}; choose another hydra.run.dir") from None


class RunFolderCheck(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if is_extra_process():
            return
        HydraConfig.instance().set_config(config)  # so that ${hydra:...} in hydra.run.dir resolves, as in Hydra's own run_job
        try:
            check_run_folder(Path(config.hydra.run.dir), config.get("ckpt_path"))
        except RunFolderError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
