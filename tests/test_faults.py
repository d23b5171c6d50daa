"""Faults and bad input: a stopped run leaves a checkpoint, a failed write leaves no partial one,
and every refusal is one line (issue 16)."""

import errno
import io
import json
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
from tests.conftest import FAST, TRAIN_PY

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
    cmd = [sys.executable, str(TRAIN_PY), f"data.root={mnist_root}", f"hydra.run.dir={run}", *FAST, "eval=none", "trainer.max_epochs=1000"]
    log = tmp_path / "train.err"
    with open(log, "w") as err:  # a file, not a pipe: nothing can block on a full pipe buffer
        # the default SIGTERM disposition, whatever the suite was started with (see the Ctrl-C test)
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err,
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


class FillsUp(io.FileIO):
    """A file on a disk with room for `room` more bytes: then short writes, then ENOSPC, as the kernel does."""

    room = 100_000

    def write(self, data):
        if FillsUp.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(data), FillsUp.room)
        FillsUp.room -= n
        return super().write(bytes(data)[:n])


def test_a_disk_that_fills_up_in_the_middle_of_a_write_is_the_same_one_line(train_in_process, tmp_path, monkeypatch):
    # torch.save straight into such a file raises its zip writer's RuntimeError ("unexpected pos"), not the OSError
    import gan_lightning.checkpoint

    monkeypatch.setattr(FillsUp, "room", 100_000)  # part of the first checkpoint
    monkeypatch.setattr(gan_lightning.checkpoint, "open", lambda path, mode: io.BufferedWriter(FillsUp(path, "w")), raising=False)
    with pytest.raises(CheckpointError) as err:
        train_in_process("eval=none", "logger=csv", "trainer.limit_train_batches=1")
    assert ": No space left on device; " in str(err.value) and "\n" not in str(err.value)
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []


def test_checkpoints_are_written_under_a_temporary_name_then_renamed(train_in_process, tmp_path, monkeypatch):
    renamed = []
    monkeypatch.setattr(os, "replace", lambda src, dst, real=os.replace: (renamed.append((os.path.basename(src), os.path.basename(dst))), real(src, dst)))
    train_in_process("eval=none", "logger=csv", "trainer.limit_train_batches=1")
    assert renamed == [(".epoch000-step0000001.ckpt.tmp", "epoch000-step0000001.ckpt"), (".last.ckpt.tmp", "last.ckpt")]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["epoch000-step0000001.ckpt", "last.ckpt"]


def test_the_partial_file_of_a_save_killed_earlier_is_removed_at_the_next_run_s_first_save(tmp_path):
    from gan_lightning.checkpoint import AtomicCheckpointIO

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / ".epoch003-step0000400.ckpt.tmp").write_bytes(b"half a checkpoint")  # kill -9 during a save
    (folder / "notes.txt").write_text("not ours to remove")
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, folder / "last.ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "notes.txt"]


def test_ctrl_c_while_a_checkpoint_is_written_interrupts_the_run_after_the_write(train_in_process, tmp_path, monkeypatch):
    real_save = torch.save

    def pressed_during_the_write(obj, f, *args, **kwargs):
        f.write(b"the first bytes")
        signal.raise_signal(signal.SIGINT)  # Ctrl-C now, with the checkpoint half written
        f.seek(0)
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", pressed_during_the_write)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (pytest-xdist workers ignore it)
    try:
        with pytest.raises((SystemExit, Interrupted, KeyboardInterrupt)):
            train_in_process("eval=none", "logger=csv", "trainer.limit_train_batches=1")
    finally:
        signal.signal(signal.SIGINT, previous)
    folder = tmp_path / "run" / "checkpoints"
    # the checkpoint being written when Ctrl-C came is whole; the run then stopped as interrupted
    assert sorted(p.name for p in folder.iterdir()) == ["epoch000-step0000001.ckpt", "interrupted.ckpt"]
    assert [checkpoint(folder / name)["global_step"] for name in ("epoch000-step0000001.ckpt", "interrupted.ckpt")] == [1, 1]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "interrupted"


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


def bad_mnist(root, damage) -> str:
    from tests.conftest import make_tiny_mnist

    raw = make_tiny_mnist(root) / "MNIST" / "raw"
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(damage(images.read_bytes()))
    return str(images)


@pytest.mark.parametrize("damage, problem", [(lambda b: b[:1000], "is truncated or corrupt (1000 bytes, its header says 200720)"),
                                             (lambda b: b"garbage" * 100, "is not an MNIST IDX file (corrupt)")])
def test_damaged_mnist_files_are_named_in_one_line(tmp_path, damage, problem):
    from gan_lightning.data import MNISTNotFoundError, load_mnist_images

    images = bad_mnist(tmp_path, damage)
    with pytest.raises(MNISTNotFoundError) as err:
        load_mnist_images(str(tmp_path), train=True)
    assert str(err.value) == f"MNIST file {images} {problem}; delete it to download it again, or point data.root at a good copy"


@pytest.mark.parametrize("override, message", [
    ("data.batch_size=1000", "data.batch_size=1000 is larger than the 256 training images: not one full batch to train on"),
    ("eval.data_root=/nowhere", "eval.data_root: MNIST not found in /nowhere/MNIST/raw"),
])
def test_runs_that_could_not_train_or_evaluate_stop_before_the_first_step(train_in_process, tmp_path, override, message):
    from gan_lightning.data import DataError, MNISTNotFoundError

    with pytest.raises((DataError, MNISTNotFoundError)) as err:
        train_in_process("logger=csv", override)
    assert str(err.value) == message
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("command, arg, message", [
    ("sample", "n=0", "error: n must be an integer >= 1, got 0"),
    ("sample", "n=-1", "error: n must be an integer >= 1, got -1"),
    ("sample", "n=many", "error: n must be an integer >= 1, got many"),
    ("sample", "interpolate=maybe", "error: interpolate must be true or false, got maybe"),
    ("evaluate", "num_samples=1", "error: num_samples must be an integer >= 2, got 1"),
    ("evaluate", "parzen_valid_size=0", "error: parzen_valid_size must be an integer >= 1, got 0"),
])
def test_eval_and_sample_refuse_impossible_counts_in_one_line(command, arg, message, monkeypatch, capsys):
    import importlib

    monkeypatch.setattr(sys, "argv", ["cmd", "ckpt_path=x.ckpt", arg])
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(f"gan_lightning.{command}").main()  # the Hydra app, as its command line starts it
    assert exit_.value.code == 2 and capsys.readouterr().err == message + "\n"


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", None])
def test_unusable_checkpoints_are_one_check_for_train_eval_and_sample(tmp_path, content):
    from gan_lightning.checkpoint import read_checkpoint

    path = tmp_path / "x.ckpt"
    if content is None:
        torch.save({"state_dict": {}}, path)  # a checkpoint, but not of this project
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"^{path} is not a usable gan-lightning checkpoint(, truncated or damaged)? \(.+\)$"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"^checkpoint not found: "):
        read_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match=rf"^ckpt_path is a folder, not a checkpoint: {tmp_path}; give a file in it, e.g. {tmp_path}/checkpoints/last.ckpt$"):
        read_checkpoint(tmp_path)


def test_a_bad_ckpt_path_stops_train_before_it_writes_anything(train_in_process, tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        train_in_process(f"ckpt_path={garbage}")
    assert str(err.value).startswith(f"{garbage} is not a usable gan-lightning checkpoint, truncated or damaged (")
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_report_on_a_folder_it_cannot_write_is_one_line(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from gan_lightning import report

    def read_only(self, *args, **kwargs):  # root writes through chmod, so fail the write itself
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "write_text", read_only)
    with pytest.raises(SystemExit) as exit_:
        report.main([str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: cannot write report.md and its plots into {tmp_path}: Permission denied ({tmp_path / 'report.md'})\n"


def a_finished_run(folder):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (folder / "checkpoints").mkdir()
    return folder


def test_a_folder_that_holds_a_run_is_refused_unless_resumed_into_or_requeued(tmp_path, monkeypatch):
    from gan_lightning.runfolder import RunFolderCheck, RunFolderError, check_run_folder

    for name in ("LOCAL_RANK", "RANK", "SLURM_PROCID", "SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_STEP_ID"):
        monkeypatch.delenv(name, raising=False)
    run = a_finished_run(tmp_path / "run")
    with pytest.raises(RunFolderError, match=rf"^hydra.run.dir={run} already holds a run; choose a new folder, or resume into it with ckpt_path={run}/checkpoints/last.ckpt$"):
        check_run_folder(run, None)
    with pytest.raises(RunFolderError):
        check_run_folder(run, str(tmp_path / "elsewhere" / "last.ckpt"))
    check_run_folder(run, str(run / "checkpoints" / "last.ckpt"))  # a resume into it
    check_run_folder(tmp_path / "new", None)
    slurm_run = a_finished_run(tmp_path / "slurm-123_0")  # a SLURM batch job's folder (conf/hydra/default.yaml)
    (slurm_run / "hpc_ckpt_1.ckpt").write_bytes(b"")
    with pytest.raises(RunFolderError):
        check_run_folder(slurm_run, None)  # not a SLURM job
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    check_run_folder(slurm_run, None)  # the same job requeued into its own folder
    with pytest.raises(RunFolderError):
        check_run_folder(run, None)  # but not into another run's
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP process of the run that made the folder
    RunFolderCheck().on_run_start({"hydra": {"run": {"dir": str(run)}}, "ckpt_path": None})


def test_a_run_folder_that_cannot_be_written_is_one_line(mnist_root, tmp_path):
    # root writes through chmod; a folder under a regular file fails for everyone
    (tmp_path / "file").write_text("")
    result = subprocess.run([sys.executable, str(TRAIN_PY), f"data.root={mnist_root}", f"hydra.run.dir={tmp_path / 'file' / 'run'}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "LOCAL_RANK"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: cannot write the run folder {tmp_path / 'file' / 'run'}: Not a directory; choose another hydra.run.dir"]


def test_ckpt_path_last_is_the_newest_checkpoint_of_any_run_interrupted_ones_included(tmp_path):
    from gan_lightning.checkpoint import newest_checkpoint_under

    with pytest.raises(CheckpointError, match=rf"^ckpt_path=last: no checkpoint under {tmp_path}; "):
        newest_checkpoint_under(tmp_path)
    for age, name in ((100, "runs/a/checkpoints/last.ckpt"), (0, "multirun/b/0_x/checkpoints/last.ckpt"), (50, "runs/c/checkpoints/last.ckpt"),
                      (-5, "runs/d/checkpoints/.last.ckpt.tmp"), (-5, "runs/d/classifier.ckpt")):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        os.utime(path, (time.time() - age, time.time() - age))
    assert newest_checkpoint_under(tmp_path) == tmp_path / "multirun/b/0_x/checkpoints/last.ckpt"
    # a run stopped by Ctrl-C or SIGTERM in its first epoch has no last.ckpt: its interrupted.ckpt, not an older run's
    interrupted = tmp_path / "runs/e/checkpoints/interrupted.ckpt"
    interrupted.parent.mkdir(parents=True)
    interrupted.write_bytes(b"")
    assert newest_checkpoint_under(tmp_path) == interrupted
