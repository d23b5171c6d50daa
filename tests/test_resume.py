"""Exact resume on CPU: a run interrupted and resumed ends with the weights of the run that was not."""

import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gan_lightning.callbacks import Interrupted
from gan_lightning.checkpoint import CheckpointError
from gan_lightning.summary import read_summary
from tests.conftest import FAST, train_here

BATCHES = 256 // 32  # tiny MNIST, batch 32: 8 batches per epoch
MID_EPOCH_STEP = BATCHES + 3  # epoch 1, after its third batch


class SaveAt(L.Callback):
    """Saves a checkpoint after step `step` and lets the run go on: what Ctrl-C/SIGTERM or
    callbacks.model_checkpoint.every_n_train_steps leave in the middle of an epoch."""

    def __init__(self, step: int, path: Path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


class StopAfterFirstEpoch(L.Callback):
    """Ends a run configured for 2 epochs after the first, so its schedule spans the 2 epochs."""

    def on_train_epoch_end(self, trainer, *args) -> None:
        trainer.should_stop = True


def run(tmp_path: Path, name: str, overrides: list[str], callbacks=()) -> dict:
    """Train in this process with the config train.py would compose; returns the last checkpoint."""
    out = tmp_path / name
    train_here(*FAST, "trainer.max_epochs=2", *overrides, run_dir=out, extra_callbacks=callbacks)
    return last(out)


def last(run_dir: Path) -> dict:
    """A run's last checkpoint."""
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def assert_same_training_state(resumed: dict, uninterrupted: dict, steps: int = 2 * BATCHES) -> None:
    assert resumed["global_step"] == uninterrupted["global_step"] == steps
    weights, expected = resumed["state_dict"], uninterrupted["state_dict"]
    assert weights.keys() == expected.keys()
    differ = [name for name in expected if not torch.equal(weights[name], expected[name])]
    assert not differ, f"after resuming these differ from the uninterrupted run: {differ}"
    for opt, opt_expected in zip(resumed["optimizer_states"], uninterrupted["optimizer_states"]):
        assert opt["param_groups"][0]["lr"] == opt_expected["param_groups"][0]["lr"]
        for state, state_expected in zip(opt["state"].values(), opt_expected["state"].values()):
            assert all(torch.equal(state[k], state_expected[k]) for k in state_expected)  # Adam's moments and steps
    assert resumed["lr_schedulers"] == uninterrupted["lr_schedulers"]


def logged_lr_g(run_dir: Path, from_step: int = 0) -> dict[int, float]:
    (events,) = run_dir.glob("events.out.tfevents.*")
    scalars = EventAccumulator(str(events), size_guidance={"scalars": 0}).Reload().Scalars("train/lr_g")
    return {e.step: e.value for e in scalars if e.step >= from_step}


def test_one_epoch_resumed_for_another_ends_as_two_epochs(mnist_root, tmp_path):
    """The default config, evaluation included (it runs after epoch 0 in the 1-epoch run only)."""
    data = [f"data.root={mnist_root}"]
    uninterrupted = run(tmp_path, "two_epochs", data)
    first = run(tmp_path, "one_epoch", [*data, "trainer.max_epochs=1"])
    assert first["global_step"] == BATCHES
    resumed = run(tmp_path, "resumed", [*data, f"ckpt_path={tmp_path / 'one_epoch' / 'checkpoints' / 'last.ckpt'}"])
    assert_same_training_state(resumed, uninterrupted)


def test_resume_at_an_epoch_end_and_within_an_epoch_with_ema_lr_schedule_and_instance_noise(mnist_root, tmp_path):
    # 2 D steps per batch, each on 16 real images of its own: still 8 batches of 32 images per epoch
    overrides = [f"data.root={mnist_root}", "eval=none", "ema=enabled", "ema.start_step=4", "optim.lr_schedule=cosine",
                 "regularization.instance_noise.sigma=0.1", "optim.d_steps=2", "data.batch_size=16"]
    mid_epoch = tmp_path / "mid_epoch.ckpt"
    uninterrupted = run(tmp_path, "two_epochs", overrides, callbacks=[SaveAt(MID_EPOCH_STEP, mid_epoch)])
    assert 0 < uninterrupted["state_dict"]["generator_ema.n_averaged"] < 2 * BATCHES  # the EMA is on, from step 4

    run(tmp_path, "one_epoch", overrides, callbacks=[StopAfterFirstEpoch()])
    resumed = run(tmp_path, "resumed", [*overrides, f"ckpt_path={tmp_path / 'one_epoch' / 'checkpoints' / 'last.ckpt'}"])
    assert_same_training_state(resumed, uninterrupted)
    # the learning rate of every step after the resume is the uninterrupted run's
    assert logged_lr_g(tmp_path / "resumed") == logged_lr_g(tmp_path / "two_epochs", from_step=BATCHES)

    mid = torch.load(mid_epoch, weights_only=True)
    assert mid["global_step"] == MID_EPOCH_STEP
    assert 0 < mid["optimizer_states"][1]["param_groups"][0]["lr"] < 2e-4  # the schedule is on, halfway down
    resumed_mid_epoch = run(tmp_path, "resumed_mid_epoch", [*overrides, f"ckpt_path={mid_epoch}"])
    assert_same_training_state(resumed_mid_epoch, uninterrupted)
    assert logged_lr_g(tmp_path / "resumed_mid_epoch") == logged_lr_g(tmp_path / "two_epochs", from_step=MID_EPOCH_STEP)


@pytest.mark.parametrize("key", ["d_steps", "iterations_per_step"])
def test_another_number_of_minibatches_per_step_is_refused_only_for_a_checkpoint_from_the_middle_of_an_epoch(key):
    from gan_lightning.checkpoint import check_resume

    settings = lambda n: {"optim": {key: n, "lr_d": 2e-4}}  # noqa: E731
    def saved(ready, last):
        progress = {"current": {"ready": ready}, "is_last_batch": last}
        return {"hyper_parameters": settings(1), "loops": {"fit_loop": {"epoch_loop.batch_progress": progress}}}

    assert check_resume("end.ckpt", saved(8, True), settings(2)) == [f"resume: optim.{key} changed 1 -> 2"]
    with pytest.raises(CheckpointError, match=rf"mid.ckpt, saved in the middle of an epoch, with another optim.{key} \(1 -> 2\)"):
        check_resume("mid.ckpt", saved(3, False), settings(2))
    assert check_resume("mid.ckpt", saved(3, False), settings(1)) == []


def test_a_checkpoint_from_before_iterations_per_step_resumes_as_one_iteration_per_step():
    from gan_lightning.checkpoint import check_resume

    old = {"hyper_parameters": {"optim": {"d_steps": 1}}}
    assert check_resume("old.ckpt", old, {"optim": {"d_steps": 1, "iterations_per_step": 1}}) == []
    assert check_resume("old.ckpt", old, {"optim": {"d_steps": 1, "iterations_per_step": 4}}) == ["resume: optim.iterations_per_step changed 1 -> 4"]


# d_steps=2, batch 16: a training step of one iteration reads 32 images (8 steps an epoch), of two 64 (4 steps)
STEPS = ["eval=none", "optim.d_steps=2", "data.batch_size=16", "trainer.max_epochs=3"]


@pytest.fixture(scope="module")
def ten_steps(mnist_root, tmp_path_factory) -> Path:
    """An uninterrupted run of 10 steps (into its second epoch): what the runs below must end as."""
    run_dir = tmp_path_factory.mktemp("ten_steps")
    train_here(f"data.root={mnist_root}", *FAST, *STEPS, "trainer.max_steps=10", run_dir=run_dir)
    return run_dir


def test_a_run_that_max_steps_stopped_within_an_epoch_goes_on_from_there_with_a_larger_max_steps(mnist_root, tmp_path, ten_steps):
    # Lightning ends the epoch at max_steps anyway: resumed as such, the rest of epoch 0 went untrained
    common = [f"data.root={mnist_root}", *FAST, *STEPS]
    train_here(*common, "trainer.max_steps=3", run_dir=tmp_path / "first")
    train_here(*common, "trainer.max_steps=10", f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}", run_dir=tmp_path / "resumed")
    resumed = last(tmp_path / "resumed")
    assert resumed["epoch"] == 1
    assert_same_training_state(resumed, last(ten_steps), steps=10)


def test_iterations_per_step_regroup_the_same_updates_into_fewer_steps_also_across_a_resume_at_an_epoch_end(mnist_root, tmp_path, ten_steps):
    two = [f"data.root={mnist_root}", *FAST, *STEPS, "optim.iterations_per_step=2"]
    train_here(*two, "trainer.max_steps=4", run_dir=tmp_path / "first")  # max_steps at the end of epoch 0
    train_here(*two, "trainer.max_steps=5", f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}", run_dir=tmp_path / "resumed")
    resumed, one = last(tmp_path / "resumed"), last(ten_steps)
    assert resumed["epoch"] == 1  # not an empty epoch 1 and step 5 in epoch 2 (Lightning's restart at an epoch end with max_steps)
    d_state, g_state = resumed["optimizer_states"]
    assert d_state["state"][0]["step"].item() == 20 and g_state["state"][0]["step"].item() == 10  # 10 iterations of 2 D updates + 1 G update
    # the same updates, on the same minibatches and noise, in the same order: the same weights and optimizer states
    one["global_step"] = resumed["global_step"]
    assert_same_training_state(resumed, one, steps=5)
    # a step logs its last iteration's scalars: step s of two iterations is step 2s+1 of one
    logged = lambda run: [e.value for e in EventAccumulator(str(next(run.glob("events.out.tfevents.*")))).Reload().Scalars("train/loss_d")]  # noqa: E731
    assert logged(tmp_path / "first") == logged(ten_steps)[1:8:2]


def test_another_batch_size_is_refused_for_a_checkpoint_from_the_middle_of_an_epoch(train_in_process, tmp_path):
    # 256 images, batch 32: the checkpoint of step 3 is in the middle of the first epoch
    train_in_process("trainer.max_steps=3", "eval=none", run_dir=tmp_path / "first")
    mid = tmp_path / "first" / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"saved in the middle of an epoch, with another number of images per training step "
                                              r"\(data.batch_size x optim.d_steps x optim.iterations_per_step: 32 -> 64\)"):
        train_in_process(f"ckpt_path={mid}", "data.batch_size=64", "eval=none", run_dir=tmp_path / "second")
    assert not (tmp_path / "second").exists()  # refused before anything was written


def test_a_resume_with_nothing_left_to_train_ends_with_the_final_metrics_of_the_run_that_saved_it(train_in_process, tmp_path):
    # A sweep job cut off during its last evaluation, continued by the sweep: its checkpoint is at max_steps,
    # so the resumed fit runs no epoch. Without an evaluation of its own it ended "completed" with no result.
    first = train_in_process("trainer.max_steps=3", run_dir=tmp_path / "first")
    again = train_in_process("trainer.max_steps=3", f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}", run_dir=tmp_path / "again")
    assert first is not None and again == first  # the same weights, noise and reference images
    summary = read_summary(tmp_path / "again")
    assert summary["status"] == "completed" and summary["steps"] == 3 and summary["metrics"]["eval/fid_mnist"] == pytest.approx(first)
    points = {run: [(e.step, e.value) for e in EventAccumulator(str(next((tmp_path / run).glob("events.out.tfevents.*")))).Reload().Scalars("eval/fid_mnist")]
              for run in ("first", "again")}
    assert points["again"] == [(2, pytest.approx(first))] == points["first"]  # where the first run shows it: "link by step" lines them up


def test_a_resume_longer_than_the_learning_rate_schedule_is_refused(train_in_process, tmp_path):
    # The restored schedule keeps its length: past it cosine's rates would rise back to the start, linear's stay 0.
    train_in_process("eval=none", "optim.lr_schedule=cosine", "trainer.max_steps=4", run_dir=tmp_path / "first")
    last_ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"^cannot resume a run whose optim.lr_schedule=cosine spans 4 steps for 8 steps: "
                                              r"past its end the rates would rise again; resume with the first run's trainer.max_steps"):
        train_in_process("eval=none", "optim.lr_schedule=cosine", "trainer.max_steps=8", f"ckpt_path={last_ckpt}", run_dir=tmp_path / "longer")
    assert not (tmp_path / "longer" / "checkpoints").exists()  # refused before any step


def test_a_resume_with_fewer_epochs_than_the_checkpoint_trained_is_refused_in_one_line(train_in_process, tmp_path):
    train_in_process("eval=none", "trainer.max_epochs=2", run_dir=tmp_path / "first")
    last_ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=rf"^cannot resume {last_ckpt} with trainer.max_epochs=1: its run has trained 2 epochs; "
                                              r"give trainer.max_epochs=2 or more$"):
        train_in_process("eval=none", "trainer.max_epochs=1", f"ckpt_path={last_ckpt}", run_dir=tmp_path / "shorter")
    train_in_process("eval=none", "trainer.max_epochs=2", f"ckpt_path={last_ckpt}", run_dir=tmp_path / "same")  # nothing left: allowed


class SigtermAtEpochEnd(L.Callback):
    """SIGTERM while the epoch's end hooks run (its checkpoint, grid, evaluation): Lightning stops after
    counting the epoch completed, and InterruptCheckpoint saves then."""

    def __init__(self, step: int):
        self.step = step

    def on_train_epoch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_sigterm_during_the_epoch_end_hooks_of_a_max_steps_run_resumes_exactly(mnist_root, tmp_path):
    data = [f"data.root={mnist_root}", "eval=none", "trainer.max_epochs=-1"]
    uninterrupted = run(tmp_path, "straight", [*data, f"trainer.max_steps={2 * BATCHES}"])
    # at the end of the first of two epochs; at the run's end, max_steps cutting its second epoch short
    for stop_at, max_steps in ((BATCHES, 2 * BATCHES), (BATCHES + 3, BATCHES + 3)):
        with pytest.raises(Interrupted):
            run(tmp_path, f"stopped_{stop_at}", [*data, f"trainer.max_steps={max_steps}"], callbacks=[SigtermAtEpochEnd(stop_at)])
        interrupted = tmp_path / f"stopped_{stop_at}" / "checkpoints" / "interrupted.ckpt"
        assert torch.load(interrupted, weights_only=True)["global_step"] == stop_at
        resumed = run(tmp_path, f"resumed_{stop_at}", [*data, f"trainer.max_steps={2 * BATCHES}", f"ckpt_path={interrupted}"])
        assert_same_training_state(resumed, uninterrupted)


class CtrlCInBatch(L.Callback):
    """Ctrl-C in the middle of a batch: after its D update, before its G update."""

    def __init__(self, step: int):
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.step and optimizer is trainer.optimizers[1]:
            signal.raise_signal(signal.SIGINT)


def test_a_run_resumed_after_ctrl_c_inside_a_batch_logs_its_training_scalars(mnist_root, tmp_path):
    data = [f"data.root={mnist_root}", "eval=none"]
    straight = run(tmp_path, "straight", data)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (pytest-xdist workers ignore it)
    try:
        with pytest.raises((SystemExit, Interrupted, KeyboardInterrupt)):
            run(tmp_path, "stopped", data, callbacks=[CtrlCInBatch(MID_EPOCH_STEP)])
    finally:
        signal.signal(signal.SIGINT, previous)
    interrupted = tmp_path / "stopped" / "checkpoints" / "interrupted.ckpt"
    resumed = run(tmp_path, "resumed", [*data, f"ckpt_path={interrupted}"])
    assert resumed["global_step"] == straight["global_step"]
    scalars = lambda name: [e.step for e in EventAccumulator(str(next((tmp_path / name).glob("events.out.tfevents.*"))),
                                                                  size_guidance={"scalars": 0}).Reload().Scalars("train/loss_g")]
    # every step after the stop has its point (FAST logs every step), as in the run that was not stopped
    assert scalars("resumed") == [s for s in scalars("straight") if s >= MID_EPOCH_STEP]


def test_a_run_resumed_in_its_own_folder_from_an_older_checkpoint_has_each_point_once(mnist_root, tmp_path):
    # A sweep job killed after it had logged past its last checkpoint is continued from it, in its folder:
    # TensorBoard must show each step once, not two overlapping curves that run back at the resumed step.
    data = [f"data.root={mnist_root}", "eval=none"]
    older = tmp_path / "older.ckpt"
    first = run(tmp_path, "job", data, callbacks=[SaveAt(MID_EPOCH_STEP, older)])
    run(tmp_path, "job", [*data, f"ckpt_path={older}"])
    events = EventAccumulator(str(tmp_path / "job"), size_guidance={"scalars": 0}).Reload()
    assert [e.step for e in events.Scalars("train/loss_g")] == list(range(first["global_step"]))
