"""Faults and bad input: a stopped run leaves a checkpoint, a failed write leaves no partial one,
and every refusal is one line (issue 16)."""

import errno
import os
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch

from gan_lightning.callbacks import Interrupted
from gan_lightning.checkpoint import CheckpointError
from tests.conftest import FAST, PROJECT

BATCHES = 256 // 32  # tiny MNIST, batch 32 (conftest.FAST)


def checkpoint(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


class SignalAt(L.Callback):
    """Sends this process a signal after the given batch, as a scheduler would."""

    def __init__(self, signum: int, batch: int):
        self.signum, self.batch = signum, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.batch:
            os.kill(os.getpid(), self.signum)


def test_sigusr1_saves_a_checkpoint_at_the_step_reached(train_in_process, tmp_path):
    with pytest.raises(Interrupted) as stop:
        train_in_process("eval=none", "trainer.max_epochs=5", "logger=csv", extra_callbacks=[SignalAt(signal.SIGUSR1, batch=3)])
    saved = tmp_path / "run" / "checkpoints" / "interrupted.ckpt"
    assert (stop.value.signum, stop.value.ckpt_path, stop.value.step) == (signal.SIGUSR1, saved, 3)
    assert checkpoint(saved)["global_step"] == 3
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # the handler is gone with the run


def test_sigterm_saves_a_checkpoint_exits_143_and_says_how_to_resume(mnist_root, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, str(PROJECT / "train.py"), f"data.root={mnist_root}", f"hydra.run.dir={run}", *FAST, "eval=none", "trainer.max_epochs=1000"]
    log = tmp_path / "train.err"
    with open(log, "w") as err:  # a file, not a pipe: nothing can block on a full pipe buffer
        # the default SIGTERM disposition, whatever the suite was started with (see the Ctrl-C test)
        proc = subprocess.Popen(cmd, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
        try:
            deadline = time.time() + 180
            while not (run / "samples" / "epoch_002.png").exists():  # well into training
                assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()[-3000:]
            except subprocess.TimeoutExpired:
                pytest.fail("still running 120 s after SIGTERM:\n" + log.read_text()[-3000:])
        finally:
            proc.kill()
    interrupted = run / "checkpoints" / "interrupted.ckpt"
    step = checkpoint(interrupted)["global_step"]
    assert step >= 3 * BATCHES
    assert "Traceback" not in log.read_text()
    assert log.read_text().strip().splitlines()[-1] == f"error: stopped by SIGTERM at step {step}; resume with ckpt_path={interrupted}"


def test_a_failed_checkpoint_write_stops_with_one_line_and_leaves_no_partial_file(train_in_process, tmp_path, monkeypatch):
    def disk_full(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError) as err:
        train_in_process("eval=none", "logger=csv", "trainer.limit_train_batches=1")
    folder = tmp_path / "run" / "checkpoints"
    assert str(err.value).startswith(f"could not write checkpoint {folder}/epoch000-step0000001.ckpt: No space left on device; ")
    assert "\n" not in str(err.value)
    assert list(folder.iterdir()) == []


def test_checkpoints_are_written_under_a_temporary_name_then_renamed(train_in_process, tmp_path, monkeypatch):
    renamed = []
    monkeypatch.setattr(os, "replace", lambda src, dst, real=os.replace: (renamed.append((os.path.basename(src), os.path.basename(dst))), real(src, dst)))
    train_in_process("eval=none", "logger=csv", "trainer.limit_train_batches=1")
    assert renamed == [(".epoch000-step0000001.ckpt.tmp", "epoch000-step0000001.ckpt"), (".last.ckpt.tmp", "last.ckpt")]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["epoch000-step0000001.ckpt", "last.ckpt"]


@pytest.fixture
def first_run(train_in_process, tmp_path):
    """A finished 1-epoch run of 2 batches; returns its last.ckpt."""
    train_in_process("eval=none", "logger=csv", "trainer.limit_train_batches=2", run_dir=tmp_path / "first")
    return tmp_path / "first" / "checkpoints" / "last.ckpt"


def test_resume_applies_new_learning_rates_and_d_steps(first_run, train_in_process, tmp_path, caplog):
    with caplog.at_level("INFO", logger="gan_lightning.train"):
        train_in_process("eval=none", "logger=csv", "trainer.limit_train_batches=2", "trainer.max_epochs=2",
                         "optim.lr_d=1e-3", "optim.d_steps=2", f"ckpt_path={first_run}")
    assert "resume: optim.lr_d changed 0.0002 -> 0.001" in caplog.messages
    assert "resume: optim.d_steps changed 1 -> 2" in caplog.messages
    end = checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    d_state, g_state = end["optimizer_states"]
    assert [g["lr"] for g in d_state["param_groups"]] == [1e-3] and [g["lr"] for g in g_state["param_groups"]] == [2e-4]
    assert end["hyper_parameters"]["optim"]["lr_d"] == 1e-3
    assert d_state["state"][0]["step"].item() == 2 + 2 * 2  # the resumed epoch took two D steps per batch


@pytest.mark.parametrize("override, refused", [("loss=minimax", "loss.name 'non_saturating' -> 'minimax'"),
                                                ("model.hidden_dim=32", "model.hidden_dim 256 -> 32"),
                                                ("model=dcgan", "model.name 'mlp' -> 'dcgan'")])
def test_resume_refuses_what_the_checkpoint_cannot_take_in_one_line(first_run, train_in_process, tmp_path, override, refused):
    with pytest.raises(CheckpointError) as err:
        train_in_process("eval=none", "logger=csv", override, f"ckpt_path={first_run}")
    message = str(err.value)
    assert message.startswith(f"cannot resume {first_run} with other settings of what it stores: ") and refused in message
    assert "\n" not in message and not (tmp_path / "run").exists()
