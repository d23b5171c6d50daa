"""Hydra entry point: compose the config, build everything from it, train."""

import ctypes
import importlib.util
import logging
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, read_write
from torch.utils.tensorboard.summary import hparams as hparams_summary

from gan_lightning.alarms import NonFiniteError
from gan_lightning.callbacks import InterruptCheckpoint, Interrupted
from gan_lightning.checkpoint import AtomicCheckpointIO, CheckpointError, check_resume, newest_last_checkpoint, read_checkpoint
from gan_lightning.config import ConfigError, pick, validate
from gan_lightning.data import DataError, MNISTNotFoundError
from gan_lightning.metrics.inception import InceptionUnavailable
from gan_lightning.precision import Float32Precision
from gan_lightning.runfolder import slurm_batch_job
from gan_lightning.sweeps import newest_checkpoint, run_sweep_job

log = logging.getLogger(__name__)


def config_dir() -> str:
    """The Hydra configs: gan_lightning/conf/ in an installed wheel (pyproject.toml maps the
    repository's conf/ there), else the repository's conf/ beside this package (python train.py,
    editable install). The package's own copy comes first: a site-packages/conf/ left by some other
    package must never be taken for ours."""
    package = Path(__file__).resolve().parent
    installed = package / "conf"
    return str(installed if (installed / "train.yaml").is_file() else package.parent / "conf")


CONFIG_DIR = config_dir()


def use_default_cuda_check_without_nvidia_driver() -> None:
    """Undo Lightning's PYTORCH_NVML_BASED_CUDA_CHECK=1 on a machine without the NVIDIA driver.

    Lightning sets it when imported, so that torch.cuda.is_available() asks NVML instead of
    initialising CUDA before DDP forks. Without the driver, torch then tries to load NVML anew at
    every call, and Adam.step() makes that call at every step: the reference GAN lost ~6% of its
    images/s on this CPU machine (BENCHMARKS.md). Without a driver there is no CUDA to initialise,
    so torch's default check is as safe."""
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


use_default_cuda_check_without_nvidia_driver()


def process_count(trainer_cfg: DictConfig) -> int | None:
    """The processes a run starts: trainer.devices (a count, "2", a list of ids or "0,1") times
    trainer.num_nodes; None for devices=auto or -1 (every device the machine has)."""
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, str):
        if "," in devices:
            devices = [d for d in devices.split(",") if d.strip()]
        elif devices.strip().lstrip("-").isdigit():
            devices = int(devices)
        else:
            return None  # auto
    if isinstance(devices, int):
        if devices == -1:
            return None
        count = devices
    else:
        count = len(devices)  # a list of device ids
    return count * trainer_cfg.get("num_nodes", 1)


def several_processes(trainer_cfg: DictConfig) -> bool:
    count = process_count(trainer_cfg)
    return count is None or count > 1


def runs_on_cpu(trainer_cfg: DictConfig) -> bool:
    accelerator = trainer_cfg.get("accelerator", "auto")
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available() and not torch.backends.mps.is_available())


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    kwargs, plugins = {}, [AtomicCheckpointIO()]
    if str(cfg.trainer.get("precision")) in ("16-mixed", "16") and runs_on_cpu(cfg.trainer):
        # Lightning would train in bf16-mixed instead, with a warning, while config and hparams say
        # 16-mixed. torch does fp16 autocast and loss scaling on the CPU: give Lightning that.
        kwargs["precision"] = None
        plugins.append(MixedPrecision("16-mixed", "cpu"))
    elif str(cfg.trainer.get("precision")) in ("32-true", "32") and str(cfg.trainer.get("strategy", "auto")).startswith(("auto", "ddp")):
        # Lightning's fp32 plugin, without the per-backward hook calls nobody listens to
        kwargs["precision"] = None
        plugins.append(Float32Precision())
    if cfg.trainer.strategy == "auto" and several_processes(cfg.trainer):
        # Each GAN step leaves one network out of the backward pass (D's step does not need G's
        # gradients, G's step not D's), which plain DDP's unused-parameter check rejects.
        kwargs["strategy"] = "ddp_find_unused_parameters_true"
    if not cfg.trainer.get("enable_progress_bar", True):
        # trainer.enable_progress_bar=false wins over a configured bar (Lightning refuses the pair)
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=plugins, **kwargs)


DDP_LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextmanager
def ddp_launch_scope(ckpt_path: str | None = None):
    """Let each job of a Hydra multirun launch its own DDP processes, whatever process runs the job.

    Lightning's DDP launcher starts the other ranks by re-running sys.argv (as `python -m
    <__main__'s module>` when there is one) with hydra.run.dir=HydraConfig.run.dir. In a multirun
    that would start the whole sweep again, in a new folder, and in a job started by a launcher
    (submitit's `python -m submitit.core._submit`) it would run the launcher's program: point it
    at `python -m gan_lightning.train` with this job's overrides (and the checkpoint it resumes
    from), in this job's folder. The launcher also leaves its variables in os.environ (LOCAL_RANK
    makes the next job believe its processes are started externally) and a process group
    behind: undo both when the job ends. ckpt_path: the checkpoint this process resumes from, which
    the others must use too (ckpt_path=last could name a newer file by the time they look).
    """
    import __main__

    hydra_cfg = HydraConfig.get()
    saved_argv, saved_spec = sys.argv, getattr(__main__, "__spec__", None)
    saved_env = {key: os.environ.get(key) for key in DDP_LAUNCH_VARIABLES}
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
        __main__.__spec__ = importlib.util.find_spec("gan_lightning.train")
        with read_write(hydra_cfg):
            hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    if ckpt_path:  # quoted: a sweep job's folder name holds ',' and '=', which Hydra would parse
        quoted = str(ckpt_path).replace("\\", "\\\\").replace("'", "\\'")
        sys.argv = [*(arg for arg in sys.argv if not arg.startswith("ckpt_path=")), f"ckpt_path='{quoted}'"]
    try:
        yield
    finally:
        sys.argv = saved_argv
        __main__.__spec__ = saved_spec
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@rank_zero_only
def log_hparams(loggers: list, params: dict, metric_names: list[str]) -> None:
    """Fill TensorBoard's hparams tab, linking the run's params to scalars logged under metric_names.
    (Lightning's log_hyperparams would also write a placeholder value for each metric.)"""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment._get_file_writer()
            for summary in hparams_summary(params, {name: 0.0 for name in metric_names}):
                writer.add_summary(summary)


def resume_from(cfg: DictConfig) -> str | None:
    """cfg.ckpt_path as a file (ckpt_path=last: the newest last.ckpt under outputs/), checked before
    any training: a usable checkpoint whose stored state takes this config (checkpoint.check_resume)."""
    path = cfg.ckpt_path
    if path is None:
        own = newest_checkpoint(HydraConfig.get().runtime.output_dir) if slurm_batch_job() else None
        if own is None:
            return None
        path = own  # a requeued SLURM job in its own folder (conf/hydra/default.yaml names it by the job id)
        log.info("SLURM job %s started again: resuming from %s", os.environ["SLURM_JOB_ID"], path)
    if path == "last":
        path = newest_last_checkpoint(Path(HydraConfig.get().runtime.cwd) / "outputs")
        log.info("resume: ckpt_path=last is %s", path)
    checkpoint = read_checkpoint(path)
    settings = {key: value for key, value in OmegaConf.to_container(cfg.module, resolve=True).items() if key != "_target_"}
    for line in check_resume(path, checkpoint, settings):
        log.info("%s", line)
    return str(path)


def train(cfg: DictConfig, extra_callbacks: list = ()) -> float | None:
    """Train from a composed config; returns cfg.optimized_metric's final value (for sweepers).
    extra_callbacks are added to the configured ones (benchmarks/throughput.py times steps so).
    A SIGTERM or SIGUSR1 ends it with Interrupted, after the checkpoint to resume from is saved."""
    validate(cfg)
    ckpt_path = resume_from(cfg)
    datamodule = instantiate(cfg.data.datamodule)
    datamodule.prepare_data()  # fail on missing data before launching processes or building models
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True)
    # plain dicts, so that checkpoints hold no omegaconf objects and load with weights_only=True
    module = instantiate(cfg.module, _recursive_=False, _convert_="all")
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None] + list(extra_callbacks)
    loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c is not None]
    trainer = build_trainer(cfg, callbacks, loggers)
    log_hparams(loggers, pick(cfg, cfg.hparams_to_log), list(cfg.hparams_metrics))

    with ddp_launch_scope(ckpt_path):
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except SIGTERMException:  # a SystemExit with code 0: a scheduler would think the run finished
            saver = next((c for c in callbacks if isinstance(c, InterruptCheckpoint)), None)
            saved = saver.path if saver is not None and saver.path.is_file() else None
            raise Interrupted(saver.signum if saver else signal.SIGTERM, saved, trainer.global_step) from None

    metric = trainer.callback_metrics.get(cfg.optimized_metric) if cfg.optimized_metric else None
    return None if metric is None else float(metric)


EXPECTED_ERRORS = (ConfigError, CheckpointError, DataError, MNISTNotFoundError, InceptionUnavailable)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    OmegaConf.resolve(cfg)
    hydra_cfg = HydraConfig.get()
    try:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            # skip a finished job, resume an interrupted one, and never let one job end the sweep
            return run_sweep_job(cfg, train, EXPECTED_ERRORS)
        return train(cfg)
    except EXPECTED_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as stop:
        # exit 128 + signal, as a process killed by it, so that schedulers and sweeps see a stop, not success
        if rank_zero_only.rank == 0:
            name = signal.Signals(stop.signum).name
            resume = f"resume with ckpt_path={stop.ckpt_path}" if stop.ckpt_path else "no checkpoint was saved (callbacks.interrupt_checkpoint is off)"
            if hydra_cfg.mode == RunMode.MULTIRUN:
                resume = f"the sweep continues with this job when the same command is run with hydra.sweep.dir={hydra_cfg.sweep.dir}"
            print(f"error: stopped by {name} at step {stop.step}; {resume}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except NonFiniteError as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
