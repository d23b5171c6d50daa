"""Every workaround of Lightning, Hydra or torch internals, in one place.

Each one relies on something private (an attribute, a function, a command line its upstream
builds) and says what upstream behaviour it works around. check() runs once when training starts
(the sweep launchers run SWEEP_CHECKS before a sweep's first job) and raises CompatError, naming
the supported releases, when one of those internals is gone or has
changed, instead of letting a workaround silently do the wrong thing. tests/test_compat.py has a
test per workaround that fails when upstream changes under it.
"""

import ctypes
import functools
import importlib.util
import inspect
import os
import sys
from contextlib import contextmanager, nullcontext

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write

try:  # the sequential sweep launcher's base (see "the sweep launchers" below); checked, not assumed, by check()
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher
except ImportError:
    BasicLauncher = None

SUPPORTED = "torch>=2.6, lightning>=2.4, hydra-core>=1.3, submitit>=1.5 (pyproject.toml)"


class CompatError(RuntimeError):
    pass


def do_nothing() -> None:
    pass


# --- Lightning: global_step under manual optimization --------------------------------------------
# Lightning counts every optimizer.step() in trainer.global_step under manual optimization
# (Lightning issue #17958, "global_step incremented by each optimizer in manual optimization"), so
# with d_steps D updates and one G update a batch would count d_steps + 1 steps, and max_steps,
# log_every_n_steps and checkpoint intervals would no longer count batches. The manual loop re-arms
# the counting hooks on the LightningOptimizer before every batch (loops/optimization/manual.py);
# disarming D's leaves one count per batch, G's.
def count_generator_steps_only(opt_d) -> None:
    opt_d._on_before_step = opt_d._on_after_step = do_nothing


@contextmanager
def uncounted(opt):
    """Steps of opt inside do not count in trainer.global_step: with optim.iterations_per_step > 1
    only a training step's last G update counts, so that global_step still counts batches."""
    counting = opt._on_before_step, opt._on_after_step
    opt._on_before_step = opt._on_after_step = do_nothing
    try:
        yield
    finally:
        opt._on_before_step, opt._on_after_step = counting


def _check_step_hooks() -> None:
    from lightning.pytorch.core.optimizer import LightningOptimizer
    from lightning.pytorch.loops.optimization.manual import _ManualOptimization

    step = inspect.getsource(LightningOptimizer.step)
    run = inspect.getsource(_ManualOptimization)
    if not ("self._on_before_step()" in step and "self._on_after_step()" in step and "lightning_optimizer._on_before_step" in run):
        raise CompatError("LightningOptimizer no longer counts steps through _on_before_step/_on_after_step")


# --- Hydra: partial objects -----------------------------------------------------------------------
# Since Hydra PR #3413 ("Backport instantiate target authorization hardening to 1.3"; the installed
# 1.3.8 has it) a `_partial_: true` node instantiates to a private functools.partial subclass,
# _DeferredTarget, that authorizes every invocation again; it now lives in
# hydra/_internal/target_policy.py, the policy module that PR #3418 shared with logging config.
# No upstream issue asks for a cheaper call or a public way to unwrap such an object: bare() relies
# on _DeferredTarget staying a functools.partial.
def bare(fn):
    """The function inside a Hydra `_partial_` object, as a plain functools.partial.

    Hydra's _DeferredTarget.__call__ (hydra/_internal/target_policy.py) first re-validates the
    whole target policy: _validated_target_policy() rebuilds the policy snapshot, type-checking
    every entry of its sets, and recomputes the SHA-256 of its canonical JSON against the expected
    digest. It then re-authorizes the call (_authorize_target_invocation, _authorize_discovery_path)
    and its result (_mediate_target_result). Measured with timeit on a 2-core CPU
    (hinge_discriminator_loss at batch 64): 143 us through the partial against 22 us called
    directly, ~72 us of the difference in the policy re-validation alone; about 0.1-0.3 ms per
    call over runs, not ~1 ms, and a step calls a loss d_steps + 1 times. The target and its
    config arguments were authorized when the node was instantiated, and the losses are called
    with tensors only, so the function is called directly."""
    if isinstance(fn, functools.partial):
        return functools.partial(fn.func, *fn.args, **fn.keywords)
    return fn


def _check_partial() -> None:
    from hydra.utils import instantiate

    made = instantiate({"_target_": "builtins.max", "_partial_": True, "default": 0})
    if not isinstance(made, functools.partial) or made.keywords.get("default") != 0:
        raise CompatError(f"hydra's _partial_ no longer gives a functools.partial (got {type(made).__name__})")


# --- torch + Lightning: the NVML-based CUDA check, on machines without the NVIDIA driver ----------
# Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 when imported (lightning/fabric/__init__.py), which
# torch.cuda.is_available() reads (torch PR #85951, torch.cuda._nvml_based_avail).
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


def _check_nvml() -> None:
    if "PYTORCH_NVML_BASED_CUDA_CHECK" not in inspect.getsource(torch.cuda._nvml_based_avail):
        raise CompatError("torch.cuda no longer reads PYTORCH_NVML_BASED_CUDA_CHECK")


# --- Lightning + Hydra: DDP inside a multirun -------------------------------------------------------
# Lightning's _hydra_subprocess_cmd (lightning/fabric/strategies/launchers/subprocess_script.py)
# starts the other ranks as sys.argv[1:] + hydra.run.dir=HydraConfig.run.dir (Hydra issue #2070,
# Lightning PR #18175, open): in a multirun that re-runs the whole sweep.
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


def _check_ddp_command() -> None:
    from lightning.fabric.strategies.launchers import subprocess_script

    source = inspect.getsource(subprocess_script._hydra_subprocess_cmd)
    if not all(part in source for part in ("sys.argv[1:]", "__main__.__spec__", "HydraConfig.get().run.dir")):
        raise CompatError("Lightning's DDP launcher no longer builds its command from sys.argv, __main__.__spec__ and hydra.run.dir")


# --- TensorBoard: the hparams tab without placeholder values ----------------------------------------
# Lightning's TensorBoardLogger.log_hyperparams writes a placeholder value for every metric
# (default_hp_metric; Lightning issues #2971 and #12494), and SummaryWriter.add_hparams writes into
# a new sub-folder, a second run in TensorBoard (torch issue #32651, open; PRs #32663 and #40574,
# both closed and not in torch 2.14, would have written through self._get_file_writer() instead).
# The hparams summaries go to the run's own event file through that private
# SummaryWriter._get_file_writer() (torch/utils/tensorboard/writer.py), as those PRs did; no
# upstream issue asks to make it public.
def file_writer(summary_writer):
    return summary_writer._get_file_writer()


def _check_file_writer() -> None:
    from torch.utils.tensorboard import SummaryWriter

    if not callable(getattr(SummaryWriter, "_get_file_writer", None)):
        raise CompatError("torch's SummaryWriter has no _get_file_writer()")


# --- torch AMP: the gradient scaler's state, read without a host sync ------------------------------
# GradScaler.get_scale() returns a Python float (a device-to-host sync per call), and the inf/NaN
# findings of unscale_ are kept only in its private per-optimizer state; the non-finite alarm reads
# both as device tensors, and uses AMP's fused inf/NaN kernel on the gradients (torch 2.x).
# Upstream: torch issue #152279 ("Make scaler.step() return if step was skipped or not", closed)
# and PR #142472 ("Extend GradScaler.step to return found_inf", closed) asked for the findings;
# torch issue #67590 (OptState.UPDATED, open) for a skipped-step signal. None is in torch 2.14, so
# GradScaler._scale and _per_optimizer_states[id(opt)]["found_inf_per_device"]
# (torch/amp/grad_scaler.py) stay private. No upstream issue asks for a public form of the kernel
# torch._amp_foreach_non_finite_check_and_unscale_ (a private ATen op, called by
# GradScaler._unscale_grads_; its multi-tensor form came with torch PR #44778, "Use MTA for amp
# grad unscaling").
def loss_scale(scaler) -> torch.Tensor:
    """The scaler's current loss scale as a tensor on its device (no sync)."""
    return scaler._scale


def scaler_found_inf(scaler, optimizer) -> torch.Tensor | None:
    """1. where the gradient scaler's unscale_ found inf/NaN gradients for this optimizer, 0. where
    not; None before unscale_."""
    state = scaler._per_optimizer_states.get(id(optimizer)) or {}
    found = state.get("found_inf_per_device")  # set by unscale_, cleared by update()
    if not found:
        return None
    return sum(v.to(scaler._scale.device) for v in found.values()).clamp(max=1).reshape(1)


def add_non_finite(grads: list[torch.Tensor], found: torch.Tensor) -> None:
    """found (a float32 tensor of one element) set to 1. if a gradient holds inf/NaN, else left as
    it was, in one fused pass (AMP's kernel, with a scale of 1 it leaves the gradients unchanged)."""
    torch._amp_foreach_non_finite_check_and_unscale_(grads, found, one(found.device))


@functools.cache
def one(device: torch.device) -> torch.Tensor:
    """A 1. kept per device: the kernel above reads it at every optimizer step, and making a new
    one each time took ~8 us of the check's ~150 in a training step."""
    return torch.ones(1, device=device)


def _check_amp() -> None:
    if not callable(getattr(torch, "_amp_foreach_non_finite_check_and_unscale_", None)):
        raise CompatError("torch._amp_foreach_non_finite_check_and_unscale_ is gone")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scaler.scale(weight.sum() * float("inf")).backward()
    scaler.unscale_(optimizer)
    if not (isinstance(loss_scale(scaler), torch.Tensor) and scaler_found_inf(scaler, optimizer).item() == 1.0):
        raise CompatError("torch's GradScaler no longer keeps _scale and _per_optimizer_states[...]['found_inf_per_device']")


# --- torch: EMA updates grouped by device and dtype ---------------------------------------------------
# torch.optim.swa_utils.AveragedModel groups tensors with the private
# torch.utils._foreach_utils._group_tensors_by_device_and_dtype (torch/utils/_foreach_utils.py,
# backed by torch._C since torch PR #100007, "Move tensor grouping to ATen", whose review chose to
# keep it private "because we don't intend for users to use this explicitly") for its multi_avg_fn
# (added after torch PR #94820, "Optimized EMA implementation"); module.EMA does the same. No
# upstream issue asks for a public grouping API. It groups by the first list's tensors and returns
# {(device, dtype): ([that group of each list], indices)}, the very tensors, so that multi_avg_fn
# updates the averages in place.
def group_by_device_and_dtype(tensorlists: list[list[torch.Tensor]]):
    from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

    return _group_tensors_by_device_and_dtype(tensorlists)


def _check_grouping() -> None:
    a, b = torch.zeros(2), torch.ones(2)
    grouped = group_by_device_and_dtype([[a], [b]])
    ((_, ([[ga], [gb]], _)),) = grouped.items()  # {(device, dtype): ([group of a's list, of b's], indices)}
    if not (ga is a and gb is b):
        raise CompatError("torch.utils._foreach_utils._group_tensors_by_device_and_dtype changed its result")


# --- Lightning: the batch counter of the running epoch -------------------------------------------------
# data.ResumableLoader skips the batches a resumed epoch already trained; Lightning restores its own
# count of them (fit_loop.epoch_loop.batch_progress) but not a loader's state when
# configure_optimizers asks for estimated_stepping_batches (Lightning issue #20550, "stateful
# dataloaders do not load their state_dict if self.trainer.estimated_stepping_batches called
# beforehand", open; fixes proposed in PRs #21765 and #21770, open). The count is private:
# _TrainingEpochLoop.batch_progress, a _BatchProgress (lightning/pytorch/loops/progress.py), whose
# current.ready Lightning itself uses on resume (training_epoch_loop.py: data_fetcher.fetched +=
# batch_progress.current.ready); no upstream issue asks for a public count of the batches trained
# in the running epoch. A checkpoint saved in on_train_batch_end stores completed one short of
# ready (Lightning issue #18060, open); the restart reset re-counts that batch, which
# tests/test_compat.py checks.
def batches_trained_this_epoch(trainer) -> int:
    return trainer.fit_loop.epoch_loop.batch_progress.current.ready


def _check_batch_progress() -> None:
    from lightning.pytorch.loops.progress import _BatchProgress

    if not hasattr(_BatchProgress().current, "ready"):
        raise CompatError("Lightning's batch progress has no current.ready")


# --- Lightning: resuming a run that max_steps stopped -----------------------------------------------
# With trainer.max_steps set, Lightning's fit loop mis-resumes from the last.ckpt that
# on_train_epoch_end saved (lightning/pytorch/loops/fit_loop.py):
# - max_steps within an epoch: the loop still ends that epoch (on_advance_end counts it processed
#   and calls on_train_epoch_end, where ModelCheckpoint saves), so the checkpoint reads as saved at
#   the epoch's end while its batch counter stops mid-epoch; the resumed run starts the next epoch
#   and the rest of this one goes untrained (update_restart_stage: RESTARTED_ON_EPOCH_END).
# - max_steps (or max_epochs) at an epoch's end, resumed with max_steps set: the `restarting`
#   setter keeps restarting for iteration-based training even though the epoch ended, and the next
#   epoch starts with the last one's batch counter: it trains no batch and counts as done
#   (Lightning issue #19617, open, for the max_steps case).
# Seen with Lightning 2.6.6 on tiny MNIST: 8 of 10 steps trained, or 11 of 16; tests/test_resume.py
# resumes from both kinds of checkpoint.
# Two more states that signals leave (InterruptCheckpoint saves in on_exception):
# - SIGTERM/SIGUSR1 during an epoch's end hooks (its checkpoint, grid or evaluation): Lightning raises
#   after counting the epoch completed (fit_loop.on_advance_end), so the checkpoint's epoch progress
#   reads as a finished epoch that was never started again, its batch counter still at that epoch's
#   batches: resumed as is, a max_steps run re-entered the epoch and trained one batch in it.
#   Read as saved in on_train_epoch_end, the case above.
# - Ctrl-C inside a batch: batches ready and started one ahead of completed and processed. The
#   restart counts that batch as stepped (training_epoch_loop.reset: _batches_that_stepped += 1), so
#   Lightning's logging steps fell one off the module's for the rest of the run and the resumed run
#   wrote no step scalars. Read as saved before that batch, which the resumed run trains again (as
#   Lightning's restart does anyway: ready goes back to completed).
def resume_where_training_stopped(checkpoint: dict) -> None:
    """Make the fit loop's progress in a checkpoint read as Lightning's restart logic needs to go on
    where the run stopped (see above): an epoch that max_steps cut short reads as still running
    (processed one back), an epoch that ended reads as completed, a batch that Ctrl-C cut short as
    not begun."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    batches, epochs = loop.get("epoch_loop.batch_progress"), loop.get("epoch_progress")
    if not batches or not epochs:
        return
    if all(batches[k]["ready"] == batches[k]["started"] == batches[k]["completed"] + 1 == batches[k]["processed"] + 1 for k in ("total", "current")):
        for k in ("total", "current"):  # Ctrl-C inside a batch
            batches[k]["ready"] = batches[k]["started"] = batches[k]["completed"]
        return
    if batches["current"]["ready"] > 0 and all(epochs[k]["processed"] == epochs[k]["started"] == epochs[k]["completed"] for k in ("total", "current")):
        for k in ("total", "current"):  # a signal during the epoch's end hooks: as saved in on_train_epoch_end
            epochs[k]["completed"] -= 1
        checkpoint["epoch"] = epochs["current"]["completed"]
    if not all(epochs[k]["processed"] == epochs[k]["started"] == epochs[k]["completed"] + 1 for k in ("total", "current")):
        return  # not saved in on_train_epoch_end
    if batches["current"]["ready"] > 0 and not batches["is_last_batch"]:  # max_steps cut the epoch short
        for k in ("total", "current"):
            epochs[k]["processed"] -= 1
        return
    for k in ("total", "current"):  # the epoch ended: completed, and the next one has trained no batch yet
        epochs[k]["completed"] += 1
    batches["current"] = {key: 0 for key in batches["current"]}
    batches["is_last_batch"] = False


def _check_epoch_restart() -> None:
    from lightning.pytorch.loops.fit_loop import _FitLoop

    source = inspect.getsource(_FitLoop.update_restart_stage)
    if "self._restart_stage = RestartStage.RESTARTED_MID_EPOCH" not in source or "self.epoch_progress.total.processed == self.epoch_progress.total.started - 1" not in source:
        raise CompatError("Lightning's fit loop no longer tells a mid-epoch restart by epoch_progress.processed == started - 1")


# --- Lightning: per-step hooks called only on those who define them -------------------------------
# Lightning's trainer/call.py calls a hook on every callback (_call_callback_hooks), Lightning's
# no-ops included, then on the module (_call_lightning_module_hook): each call inside a profiler
# context, with the module's private _current_fx_name set to the hook's name, which
# LightningModule.log reads to check that the hook may log. Calling only the callbacks that override
# a hook was suggested in the review of Lightning PR #10575 ("Re-design call_hook interface",
# merged) and left for later; no upstream issue asks for it. (TorchTNT made the change for its loops,
# meta-pytorch/tnt PR #455, "Only run callback methods that implement something".)
def call_hook_on_listeners(trainer, hook: str, listeners: list, module_listens: bool, *args, profiled: bool = True) -> None:
    """Call `hook` as Lightning's trainer/call.py would (callbacks in order, then the module), on
    the given listening callbacks and, when module_listens, on the module; each call inside the
    trainer's profiler context when profiled (False: the caller knows that profiler records nothing)."""
    module = trainer.lightning_module
    previous = module._current_fx_name
    module._current_fx_name = hook
    try:
        for callback in listeners:
            with trainer.profiler.profile(f"[Callback]{callback.state_key}.{hook}") if profiled else NOT_PROFILED:
                getattr(callback, hook)(trainer, module, *args)
        if module_listens:
            with trainer.profiler.profile(f"[LightningModule]{type(module).__name__}.{hook}") if profiled else NOT_PROFILED:
                getattr(module, hook)(*args)
    finally:
        module._current_fx_name = previous


NOT_PROFILED = nullcontext()


def _check_hook_calls() -> None:
    from lightning.pytorch.trainer import call

    for name in ("_call_callback_hooks", "_call_lightning_module_hook"):
        if "pl_module._current_fx_name = hook_name" not in inspect.getsource(getattr(call, name)):
            raise CompatError(f"Lightning's {name} no longer sets the module's _current_fx_name")


# --- Lightning: values logged in training_step, read again at every batch ---------------------------
# Lightning's logger connector reads every value logged in training_step at the end of every batch,
# until the epoch ends (_LoggerConnector.on_batch_end: the trainer's private _results, a
# _ResultCollection, and its metrics(on_step=True) over valid_items()), although a value logged
# on_step only changes when it is logged again. The module logs its 9 scalars every
# log_every_n_steps steps, and reading them back cost ~0.1 ms at every batch of the reference GAN,
# 1.5 % of its step at batch 64 (BENCHMARKS.md). Resetting them once written, as Lightning does at
# an epoch's end, takes them out of valid_items(); trainer.callback_metrics, logged_metrics and
# progress_bar_metrics keep their last values (Lightning updates these dicts and clears them only
# when a run starts). No upstream issue asks for on_step values to be read only when logged.
def forget_logged_step_values(trainer) -> None:
    """Lightning stops reading the values training_step has logged until they are logged again."""
    trainer._results.reset(metrics=False, fx="training_step")


def _check_result_reset() -> None:
    from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection

    if "has_reset" not in inspect.getsource(_ResultCollection.valid_items) or "fx" not in inspect.signature(_ResultCollection.reset).parameters:
        raise CompatError("Lightning's result collection no longer skips the values reset since they were logged")


# --- Hydra and submitit: the sweep launchers ------------------------------------------------------
# hydra_plugins/gan_lightning_sweeps/launchers.py builds on three private pieces:
# - Hydra's BasicLauncher (hydra._internal.core_plugins.basic_launcher, imported at the top): the
#   sequential launcher is it plus the up-front check of every job; Hydra has no public base class
#   for an in-process launcher.
# - submitit's LocalJob keeps its process as _process (submitit/local/local.py): a stopped sweep
#   sends its running jobs SIGTERM through it, so that each saves a checkpoint, and waits on it;
#   LocalJob.cancel() always sends SIGINT. No upstream issue asks for a choice of signal or a public
#   handle on the process; the nearest, submitit issue #1766 ("How to retrieve a running job and
#   cancel it", open), only notes that a local job's job_id is its PID.
# - submitit builds a SLURM job's sbatch script in SlurmExecutor._make_submission_file_text
#   (submitit/slurm/slurm.py; the abstract hook is in submitit/core/core.py):
#   SlurmLauncher.sbatch_script() shows it without a cluster. No upstream issue asks for a public
#   way to render the script without submitting it.
def job_process(submitted):
    """The Popen of a job submitted to submitit's local executor."""
    return submitted._process


def sbatch_text(executor, command: str) -> str:
    """The sbatch script submitit would submit for command; executor: a submitit.AutoExecutor for SLURM."""
    return executor._executor._make_submission_file_text(command, "<job uid>")


def _check_sweep_launchers() -> None:
    from hydra.plugins.launcher import Launcher
    from submitit.local.local import LocalJob
    from submitit.slurm.slurm import SlurmExecutor

    if BasicLauncher is None:
        raise CompatError("Hydra has no hydra._internal.core_plugins.basic_launcher.BasicLauncher")
    if not (issubclass(BasicLauncher, Launcher) and "def launch" in inspect.getsource(BasicLauncher)):
        raise CompatError("Hydra's BasicLauncher is no longer a Launcher with its own launch()")
    if "self._process" not in inspect.getsource(LocalJob.__init__):
        raise CompatError("submitit's LocalJob no longer keeps its process as _process")
    if not callable(getattr(SlurmExecutor, "_make_submission_file_text", None)):
        raise CompatError("submitit's SlurmExecutor has no _make_submission_file_text")


# --- Lightning: a stop signal under DDP, without a collective inside the signal handler ----------------
# Lightning 2.6's SIGTERM handler (trainer/connectors/signal_connector.py, _sigterm_notifier_fn, "New
# broadcast logic") calls torch.distributed.broadcast inside the handler. A handler runs wherever the
# main thread is; when that is inside another collective (the barrier of Trainer.save_checkpoint at
# an epoch's end), the two processes wait on different collectives for ever (seen with 2 CPU
# processes and gloo: both hung, no checkpoint saved). callbacks.InterruptCheckpoint handles the signal
# itself under DDP and agrees on the stop at a batch's end, where every process is; then it sets the
# flag Lightning's loop reads there to stop after that batch (training_epoch_loop.on_advance_end).
def stop_after_this_batch(trainer) -> None:
    trainer._signal_connector.received_sigterm = True


def _check_signal_flag() -> None:
    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    if "received_sigterm" not in inspect.getsource(_SignalConnector.__init__) or "self.trainer.received_sigterm" not in inspect.getsource(_TrainingEpochLoop.on_advance_end):
        raise CompatError("Lightning's loop no longer stops after a batch on its signal connector's received_sigterm")


CHECKS = [_check_signal_flag, _check_step_hooks, _check_partial, _check_nvml, _check_ddp_command, _check_file_writer, _check_amp, _check_grouping,
          _check_batch_progress, _check_hook_calls, _check_result_reset, _check_epoch_restart]
SWEEP_CHECKS = [_check_sweep_launchers]  # run by the launchers before a sweep's first job


def check(checks: list = CHECKS) -> None:
    """Raise CompatError if an internal a workaround here relies on has changed."""
    for one in checks:
        try:
            one()
        except CompatError as err:
            raise CompatError(f"{err}: gan_lightning's workaround (gan_lightning/compat.py) does not fit the installed release; supported: {SUPPORTED}") from None
        except Exception as err:  # an internal that moved or changed shape fails in any way; say which check, not a traceback
            raise CompatError(f"{one.__name__}: {type(err).__name__}: {err}: gan_lightning/compat.py does not fit the installed release; supported: {SUPPORTED}") from None
