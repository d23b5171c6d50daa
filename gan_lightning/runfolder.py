"""A Hydra callback that refuses a run folder before Hydra writes into it: one that cannot be written
(one line instead of a traceback from Hydra's own mkdir or log file), or one that already holds
another run (its config, sample grids and TensorBoard events would be overwritten or mixed)."""

import os
import sys
import tempfile
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


class RunFolderError(ValueError):
    pass


def slurm_batch_job() -> bool:
    """Started by a SLURM batch job (sbatch), which SLURM may requeue: not an interactive allocation
    (job name bash or interactive, as Lightning's SLURM detection has it), where a user starts run
    after run by hand."""
    return "SLURM_JOB_ID" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def run_folder_name(default: str) -> str:
    """The run folder's name: under a SLURM batch job `slurm-<job id>[_<step>]`, the same in every
    task of the run (each of them runs Hydra) and in the job's next start after a requeue (which
    then resumes from the checkpoints there); otherwise default (the start time)."""
    if not slurm_batch_job():
        return default
    step = os.environ.get("SLURM_STEP_ID", "")
    return f"slurm-{os.environ['SLURM_JOB_ID']}" + (f"_{step}" if step.isdigit() and int(step) < 1 << 31 else "")


def started_as_other_rank() -> bool:
    """Started by torchrun or srun as a rank other than 0 (they give every rank RANK / SLURM_PROCID)."""
    return any(os.environ.get(name, "0") != "0" for name in ("RANK", "SLURM_PROCID"))


def rank_zero_subdir(subdir: str) -> str | None:
    """hydra.output_subdir for this process: None (Hydra writes no .hydra/ folder) on the other
    tasks of a multi-task SLURM or torchrun run, so that one process writes the run's config."""
    return None if started_as_other_rank() else subdir


OmegaConf.register_new_resolver("run_folder_name", run_folder_name, replace=True)
OmegaConf.register_new_resolver("rank_zero_subdir", rank_zero_subdir, replace=True)


def is_extra_process() -> bool:
    """One of several processes of one run, other than the first: Lightning's DDP re-runs train.py for
    them with hydra.run.dir set to the first's folder (LOCAL_RANK set); torchrun and srun start every
    rank with RANK / SLURM_PROCID. Those use the folder the first process checked."""
    return "LOCAL_RANK" in os.environ or started_as_other_rank()


def holds_a_run(folder: Path) -> bool:
    return (folder / ".hydra" / "config.yaml").is_file() or (folder / "checkpoints").is_dir()


def check_run_folder(folder: Path, ckpt_path: str | None) -> None:
    """Raise RunFolderError unless folder can hold this run. An existing run's folder is allowed for a
    resume from a checkpoint inside it, and for a SLURM job requeued into its own folder (Lightning's
    auto-requeue left hpc_ckpt_*.ckpt there and resumes from it)."""
    folder = folder.resolve()
    if holds_a_run(folder):
        if ckpt_path == "last":
            from gan_lightning.checkpoint import CheckpointError, newest_checkpoint_under

            try:
                ckpt_path = str(newest_checkpoint_under(Path.cwd() / "outputs"))
            except CheckpointError:
                ckpt_path = None  # train.py says so in its own line
        resuming_here = ckpt_path is not None and Path(ckpt_path).resolve().is_relative_to(folder)
        # the same SLURM batch job started again (requeued after a pre-emption or the time limit): it
        # continues from the checkpoints it left there (train.resume_from)
        requeued = slurm_batch_job() and folder.name.startswith(f"slurm-{os.environ['SLURM_JOB_ID']}") and (
            any(folder.glob("hpc_ckpt_*.ckpt")) or any(folder.glob("checkpoints/*.ckpt")))
        if not (resuming_here or requeued):
            raise RunFolderError(f"hydra.run.dir={folder} already holds a run; choose a new folder, or resume into it with "
                                 f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # the permission bits are not the whole story: a read-only mount, a full disk
            pass
    except OSError as err:
        raise RunFolderError(f"cannot write the run folder {folder}: {err.strerror or err}; choose another hydra.run.dir") from None


# The run folder this process made, and the outermost folder made with it (outputs/ on a first run),
# or None when the run folder existed before (a resume into it, a requeued SLURM job): train.py
# removes them again when the run stops on bad input before it wrote anything of its own.
created_folder: tuple[Path, Path] | None = None


class RunFolderCheck(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        global created_folder
        if is_extra_process():
            return
        HydraConfig.instance().set_config(config)  # so that ${hydra:...} in hydra.run.dir resolves, as in Hydra's own run_job
        folder = Path(config.hydra.run.dir).resolve()
        outermost_new = next((f for f in reversed([folder, *folder.parents]) if not f.exists()), None)
        try:
            check_run_folder(folder, config.get("ckpt_path"))
            created_folder = None if outermost_new is None else (folder, outermost_new)
        except RunFolderError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
