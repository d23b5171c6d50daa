"""Hydra entry point: compose the config, build everything from it, train."""

import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams as hparams_summary

from gan_lightning import compat, runfolder
from gan_lightning.alarms import CollapseAlarm, NonFiniteError
from gan_lightning.callbacks import InterruptCheckpoint, Interrupted, NetworkSummary
from gan_lightning.checkpoint import AtomicCheckpointIO, CheckpointError, check_resume, epochs_trained, newest_checkpoint_under, read_checkpoint
from gan_lightning.config import ConfigError, pick, validate
from gan_lightning.data import DataError, MNISTNotFoundError
from gan_lightning.loggers import GANTensorBoardLogger
from gan_lightning.metrics.inception import InceptionUnavailable
from gan_lightning.precision import Float32Precision, matmul_precision
from gan_lightning.runfolder import slurm_batch_job
from gan_lightning.summary import nothing_of_its_own, write_summary
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


compat.use_default_cuda_check_without_nvidia_driver()  # at import: Lightning sets the variable when imported


class DropLines(logging.Filter):
    """Drops the log records whose message starts with one of prefixes."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith(self.prefixes)


# Lines every run printed that are not about the run, silenced by their text (the rest stays): the
# tip to install Lightning's cloud logger, and a deprecation inside Lightning's own code (torch's
# LeafSpec, used by lightning/pytorch/utilities/_pytree.py, which a newer Lightning will change).
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(DropLines("💡 Tip: For seamless cloud logging"))
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
# A resume trains into a new run folder, by design; ModelCheckpoint then warns at every resume that
# its best-k records, which need a monitored metric (the project's checkpoints have none), are not reloaded.
warnings.filterwarnings("ignore", message=r"The dirpath has changed from")


def lightning_lines_to_the_run_log() -> None:
    """Lightning, imported before Hydra configures logging, gives its loggers a console handler of their
    own and stops their lines from reaching the root logger: Hydra's handlers (the console and the
    run folder's train.log) then never see them. Hand them back to the root logger; and Python's
    warnings too, so that train.log holds them with the other lines."""
    logging.captureWarnings(True)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True


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
    if cfg.trainer.get("enable_model_summary", True):
        callbacks = [*callbacks, NetworkSummary()]  # instead of Lightning's, whose FLOPs column reads 0 here
    kwargs["enable_model_summary"] = False  # Lightning's own
    if not cfg.trainer.get("enable_progress_bar", True):
        # trainer.enable_progress_bar=false wins over a configured bar (Lightning refuses the pair)
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=plugins, **kwargs)


@rank_zero_only
def log_hparams(loggers: list, params: dict) -> None:
    """Fill TensorBoard's HPARAMS tab with the run's params: its session start summary alone. Without
    an experiment summary TensorBoard builds the table from every run under --logdir: it marks the
    params whose values differ between runs (a sweep's swept ones), lists and ticks those first, and
    offers every scalar as a metric column. One experiment summary per run (torch's hparams() and
    Lightning's log_hyperparams write one) makes it take an arbitrary run's list instead, sorted by
    name, with the swept learning rates unticked among the last."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            _, session_start, _ = hparams_summary(params, {})
            compat.file_writer(logger.experiment).add_summary(session_start)


def resume_from(cfg: DictConfig, images_per_step: int) -> tuple[str, int] | None:
    """cfg.ckpt_path as a file (ckpt_path=last: the newest checkpoint under outputs/) and its step, checked before
    any training: a usable checkpoint whose stored state takes this config and the data module's
    images_per_step (checkpoint.check_resume)."""
    path = cfg.ckpt_path
    if path is None:
        own = newest_checkpoint(HydraConfig.get().runtime.output_dir) if slurm_batch_job() else None
        if own is None:
            return None
        path = own  # a requeued SLURM job in its own folder (conf/hydra/default.yaml names it by the job id)
        log.info("SLURM job %s started again: resuming from %s", os.environ["SLURM_JOB_ID"], path)
    if path == "last":
        path = newest_checkpoint_under(Path(HydraConfig.get().runtime.cwd) / "outputs")
        log.info("resume: ckpt_path=last is %s", path)
    checkpoint = read_checkpoint(path)
    max_epochs, done = cfg.trainer.get("max_epochs"), epochs_trained(checkpoint)
    if max_epochs not in (None, -1) and done > max_epochs:  # Lightning refuses it with a traceback, after building everything
        raise CheckpointError(f"cannot resume {path} with trainer.max_epochs={max_epochs}: its run has trained {done} epochs; "
                              f"give trainer.max_epochs={done} or more")
    settings = {key: value for key, value in OmegaConf.to_container(cfg.module, resolve=True).items() if key != "_target_"}
    for line in check_resume(path, checkpoint, settings, images_per_step=images_per_step):
        log.info("%s", line)
    return str(path), checkpoint.get("global_step", 0)


def train(cfg: DictConfig, extra_callbacks: list = ()) -> float | None:
    """Train from a composed config; returns cfg.optimized_metric's final value (for sweepers).
    extra_callbacks are added to the configured ones (benchmarks/throughput.py times steps so).
    A SIGTERM or SIGUSR1 ends it with Interrupted, after the checkpoint to resume from is saved."""
    validate(cfg)
    if cfg.optim.get("simultaneous") and (process_count(cfg.trainer) or 1) > 1:
        raise ConfigError("optim.simultaneous=true runs in one process (trainer.devices=1): its two backward passes over one "
                          "forward are more than DDP's gradient reducer takes")
    with matmul_precision(cfg.get("matmul_precision")):
        return train_validated(cfg, extra_callbacks)


@contextlib.contextmanager
def refused_as_one_line():
    """A value that the class it builds refuses (Lightning's Trainer: trainer.accelerator=gpu without
    a GPU, trainer.devices=abc) or a _target_ that does not import stops the run before training
    with one line, as the project's own checks do, instead of Hydra's wrapped traceback."""
    try:
        yield
    except InstantiationException as err:
        cause = err
        while isinstance(cause, InstantiationException) and isinstance(cause.__cause__, Exception):
            cause = cause.__cause__
        if isinstance(cause, EXPECTED_ERRORS):
            raise cause from None
        key = re.search(r"full_key: (\S+)", str(err))
        text = " ".join(line.strip() for line in str(cause).splitlines() if line.strip() and not line.startswith("full_key:"))
        text = re.sub(r",? set env var HYDRA_FULL_ERROR=1 to see chained exception\.?", "", text)
        raise ConfigError(f"{key.group(1) if key else 'config'}: {type(cause).__name__}: {text}") from err


def train_validated(cfg: DictConfig, extra_callbacks: list) -> float | None:
    compat.check()  # the internals the workarounds rely on are there
    with refused_as_one_line():
        datamodule = instantiate(cfg.data.datamodule)
    ckpt_path, resumed_step = resume_from(cfg, datamodule.images_per_step) or (None, None)
    datamodule.prepare_data()  # fail on missing data before launching processes or building models
    if cfg.seed is not None:
        try:
            L.seed_everything(cfg.seed, workers=True)
        except ValueError:  # out of numpy's range; refused here, not in validate(), so that a sweep's other jobs still run
            raise ConfigError(f"seed must be null or an integer in [0, 2**32 - 1], got {cfg.seed}") from None
    with refused_as_one_line():
        # plain dicts, so that checkpoints hold no omegaconf objects and load with weights_only=True
        module = instantiate(cfg.module, _recursive_=False, _convert_="all")
        callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None] + list(extra_callbacks)
        loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c is not None]
        for logger in loggers:
            if resumed_step is not None and isinstance(logger, GANTensorBoardLogger):
                logger.purge_from(resumed_step)
        trainer = build_trainer(cfg, callbacks, loggers)
    log_hparams(loggers, pick(cfg, cfg.hparams_to_log))

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        with compat.ddp_launch_scope(ckpt_path):
            try:
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
            except SIGTERMException:  # a SystemExit with code 0: a scheduler would think the run finished
                saver = next((c for c in callbacks if isinstance(c, InterruptCheckpoint)), None)
                saved = saver.path if saver is not None and saver.path.is_file() else None
                raise Interrupted(saver.signum if saver else signal.SIGTERM, saved, trainer.global_step) from None
    except NonFiniteError as err:
        write_summary(trainer, run_dir, "diverged", str(err), steps=err.step)
        raise
    except (Interrupted, KeyboardInterrupt, SystemExit):  # Lightning ends a Ctrl-C with sys.exit(1)
        write_summary(trainer, run_dir, "interrupted")
        raise
    except Exception as err:
        if trainer.global_step > 0:  # before the first step it was bad input, which main() reports in one line
            write_summary(trainer, run_dir, "failed", str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise
    stopped_by = [c for c in callbacks if isinstance(c, CollapseAlarm) and c.stop and any(c.raised.values())]
    write_summary(trainer, run_dir, "stopped by an alarm" if stopped_by else "completed")

    metric = trainer.callback_metrics.get(cfg.optimized_metric) if cfg.optimized_metric else None
    return None if metric is None else float(metric)


def remove_unused_run_folder(hydra_cfg) -> None:
    """A run stopped on bad input leaves no folder behind: the one this run made (never one that
    existed before it: a resume into it, a requeued SLURM job) goes again while it holds nothing but
    what Hydra wrote before the task started."""
    if runfolder.created_folder is None:
        return
    folder, outermost = runfolder.created_folder  # outermost: outputs/ or outputs/runs/ when this run made them
    if nothing_of_its_own(folder, f"{hydra_cfg.job.name}.log"):
        logging.shutdown()  # close train.log first
        shutil.rmtree(folder, ignore_errors=True)
        for parent in folder.parents[: len(folder.relative_to(outermost).parts)]:
            try:
                parent.rmdir()  # only while empty: another run may have started in it meanwhile
            except OSError:
                break


EXPECTED_ERRORS = (compat.CompatError, ConfigError, CheckpointError, DataError, MNISTNotFoundError, InceptionUnavailable)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    lightning_lines_to_the_run_log()
    OmegaConf.resolve(cfg)
    hydra_cfg = HydraConfig.get()
    try:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            # skip a finished job, resume an interrupted one, and never let one job end the sweep
            return run_sweep_job(cfg, train, EXPECTED_ERRORS)
        return train(cfg)
    except EXPECTED_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        remove_unused_run_folder(hydra_cfg)
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
    except NonFiniteError as err:  # the summary's first line has logged it (console and train.log)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
