"""Checkpoints that are whole or absent, one check of a ckpt_path for train/eval/sample, and what a
resume may change."""

import io
import logging
import os
import signal
import threading
from contextlib import contextmanager, suppress
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gan_lightning.compat import resume_where_training_stopped
from gan_lightning.summary import first_line, newest_checkpoint_of

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    pass


@contextmanager
def ctrl_c_held_back():
    """Ctrl-C delivered after the block instead of inside it. A KeyboardInterrupt in the middle of
    torch.save stops the write half-way and surfaces as a torch error, so a run interrupted while it
    saves would end as failed, not interrupted. (Signals reach Python's handlers in the main thread
    only; SIGTERM and SIGUSR1 only set a flag there, so they need no holding back.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
        if pressed:
            signal.raise_signal(signal.SIGINT)  # to the handler that was there: KeyboardInterrupt, as a user expects


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write a checkpoint to a temporary name in its folder, then rename it: a full disk or a killed
    process leaves the previous checkpoint and no partial file that looks like a checkpoint.
    (Lightning's own writer serialises to memory first, but then writes straight to the final name.)
    Run folders are local, so this writes with open(), not fsspec."""

    swept = False  # whether this writer has removed the partial files a killed save left in its folder (at its first save)

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        if not self.swept:  # what a process killed during a save left (kill -9): one run writes a folder
            self.swept = True
            for stale in path.parent.glob(".*.ckpt.tmp"):
                with suppress(OSError):
                    stale.unlink()
        try:
            with ctrl_c_held_back():
                path.parent.mkdir(parents=True, exist_ok=True)
                # Serialised to memory first: torch's zip writer turns a full disk under it into a
                # RuntimeError ("unexpected pos"); a plain write raises the OSError that says so.
                data = io.BytesIO()
                torch.save(checkpoint, data)
                with open(tmp, "wb") as f:
                    f.write(data.getbuffer())
                    f.flush()
                    os.fsync(f.fileno())  # a disk that fills up late (delayed allocation) fails here, not after the rename
                os.replace(tmp, path)
        except OSError as err:
            raise CheckpointError(f"could not write checkpoint {path}: {err.strerror or err}; the run stopped and left no partial file "
                                  "(free space or choose a writable hydra.run.dir, then resume from the last checkpoint)") from None
        finally:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)  # what a failed write left (none after a rename)


def read_checkpoint(path) -> dict:
    """The checkpoint at path, or CheckpointError in one line if it is missing or not one of ours
    (empty, truncated, another project's). train.py, eval.py and sample.py all check with this."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"ckpt_path is a folder, not a checkpoint: {path}; give a file in it, e.g. {path / 'checkpoints' / 'last.ckpt'}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        # Checkpoints written before train.py stored plain dicts hold omegaconf objects in their
        # hyperparameters, which torch's weights-only unpickler refuses: like Lightning's own
        # resuming, trust the file (your own runs).
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or empty file, a pickle of something else...
        reason = first_line(err).split(". ")[0][:200]  # torch adds advice on weights_only
        raise CheckpointError(f"{path} is not a usable gan-lightning checkpoint, truncated or damaged ({type(err).__name__}: {reason})") from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or not {"model", "loss", "optim"} <= set(hparams) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a usable gan-lightning checkpoint (no GAN hyperparameters or weights in it)")
    return checkpoint


def newest_checkpoint_under(outputs: Path) -> Path:
    """ckpt_path=last: the most recently written checkpoint of any run under outputs/ (in a run's
    checkpoints/ folder): last.ckpt, an epoch checkpoint, or interrupted.ckpt, so that a run stopped
    by Ctrl-C or a signal goes on from where it stopped, not from its last epoch's end (or from an
    older run, when it was stopped in its first epoch)."""
    found = newest_checkpoint_of(p for p in Path(outputs).rglob("checkpoints/*.ckpt") if p.is_file())
    if found is None:
        raise CheckpointError(f"ckpt_path=last: no checkpoint under {outputs}; give the file, ckpt_path=<run>/checkpoints/last.ckpt")
    return found


def epochs_trained(checkpoint: dict) -> int:
    """The epochs a checkpoint's run completed, as Lightning counts them when it resumes (its
    current_epoch), after the module's correction of the loops' progress (compat.resume_where_training_stopped,
    which it applies to this dict: the module applies it again, to no effect, to the copy Lightning loads)."""
    resume_where_training_stopped(checkpoint)
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    return progress.get("completed", checkpoint.get("epoch", 0))


def flat(tree, prefix: str = "") -> dict:
    """{"optim": {"lr_d": 1}} -> {"optim.lr_d": 1}; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    items = {}
    for key, value in tree.items():
        items.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return items


# Settings whose state lives in the checkpoint in a form the new value cannot take: network shapes
# and layers (weights), spectral norm and EMA (extra parameters), the optimizer class and betas
# (Adam's moments were accumulated with them), the schedule (its restored state), the objective
# (D was trained as another game's player). The objective is its name: its functions' targets and
# weights may change (a fixed implementation, another gradient-penalty weight) and are applied.
FIXED = ("model.", "loss.name", "optim.optimizer.", "optim.betas", "optim.lr_schedule", "regularization.spectral_norm", "ema.decay")
# the value of a key that older checkpoints lack, which they were trained with
DEFAULTS = {"optim.iterations_per_step": 1}
# what matters of these is whether they are on: another EMA decay is applied, a missing key is off
ON = {"regularization.spectral_norm": bool, "ema.decay": lambda v: v is not None}


def check_resume(path, checkpoint: dict, new: dict, images_per_step: int | None = None) -> list[str]:
    """Compare the checkpoint's hyperparameters with the new run's (cfg.module). Raise CheckpointError
    for a change the restored state cannot take; return a line for each change that is applied
    (learning rates through GAN.on_load_checkpoint, the rest by building the module from the new config).
    images_per_step: the new run's data.batch_size x optim.d_steps x optim.iterations_per_step, which a checkpoint saved in the
    middle of an epoch must be resumed with (its epoch goes on by skipping the steps it trained)."""
    old = checkpoint["hyper_parameters"]
    if not isinstance(old, dict):  # omegaconf objects of older checkpoints
        from omegaconf import OmegaConf

        old = OmegaConf.to_container(old, resolve=True)
    old, new = {**DEFAULTS, **flat({k: old.get(k) for k in new})}, {**DEFAULTS, **flat(new)}
    changed = [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    on = lambda key, value: ON[key](value) if key in ON else value  # noqa: E731
    refused = [key for key in changed if key.startswith(FIXED) and on(key, old.get(key)) != on(key, new.get(key))]
    if refused:
        # loss.name 'minimax' says more than a _target_, model.hidden_dim more than the generator's copy of it
        refused.sort(key=lambda key: (not key.endswith(".name"), key.count(".")))
        what = ", ".join(f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in refused[:3]) + (" ..." if len(refused) > 3 else "")
        raise CheckpointError(f"cannot resume {path} with other settings of what it stores: {what}; "
                              "resume with the checkpoint's values, or start a new run without ckpt_path")
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
    mid_epoch = progress.get("current", {}).get("ready", 0) > 0 and not progress.get("is_last_batch")
    saved = checkpoint.get("MNISTDataModule", {}).get("images_per_step")  # Lightning keeps a DataModule's state under its class name
    if mid_epoch and None not in (saved, images_per_step) and saved != images_per_step:
        raise CheckpointError(f"cannot resume {path}, saved in the middle of an epoch, with another number of images per training step "
                              f"(data.batch_size x optim.d_steps x optim.iterations_per_step: {saved} -> {images_per_step}): resume with the checkpoint's values, or from an epoch's last.ckpt")
    for key in ("optim.d_steps", "optim.iterations_per_step"):
        if key in changed and mid_epoch:  # also for checkpoints from before images_per_step was saved
            # a step reads d_steps x iterations_per_step real minibatches: the resumed epoch would skip its trained steps in other units
            raise CheckpointError(f"cannot resume {path}, saved in the middle of an epoch, with another {key} "
                                  f"({old.get(key)} -> {new.get(key)}): resume with the checkpoint's value, or from an epoch's last.ckpt")
    return [f"resume: {key} changed {old.get(key)!r} -> {new.get(key)!r}" for key in changed]
