"""Alarms: a planted NaN stops the run and leaves the last good checkpoint; D-won and coverage alarms."""

import json
import logging
import types

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import FAST, run_train
from gan_lightning.alarms import CollapseAlarm, NonFiniteAlarm, NonFiniteError


def test_planted_nan_stops_the_run_naming_step_and_loss_and_keeps_the_last_good_checkpoint(mnist_root, tmp_path, train_in_process):
    # 256 images / 32 = 8 batches per epoch: epoch 0 ends at step 8 with a checkpoint, and the
    # 12th D loss (epoch 1, step 11) is NaN.
    result = run_train(*FAST, "eval=none", f"data.root={mnist_root}", f"hydra.run.dir={tmp_path}", "trainer.max_epochs=3",
                       "loss.discriminator._target_=tests.planted.discriminator_loss_nan_at_call", "+loss.discriminator.call=12")
    assert result.returncode == 3, result.stderr[-3000:]
    assert "non-finite training at step 11 (epoch 1): loss_d is nan" in result.stderr
    assert "last good checkpoint is" in result.stderr
    # said twice: in the summary's first line (console and train.log) and as the one-line error, no more
    assert (result.stdout + result.stderr).count("non-finite training at step 11") == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: non-finite training at step 11")
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert checkpoints == ["epoch000-step0000008.ckpt", "last.ckpt"]  # nothing saved after the NaN
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["steps"]) == ("diverged", 11)  # the step the alarm names: 11 done before it
    assert f"run diverged at step 11: {tmp_path}" in result.stdout + result.stderr
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 8
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    # ... and it resumes from there, with the plain loss.
    train_in_process("eval=none", "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}", run_dir=tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 16


def test_in_a_step_of_several_iterations_the_alarm_names_the_bad_update_and_its_iteration(train_in_process, monkeypatch):
    # optim.d_steps=2 x optim.iterations_per_step=2: a step is the updates D D G D D G. The 7th D
    # loss is the second step's third: its update 4 of 6, in iteration 2.
    monkeypatch.setattr("tests.planted.calls", 0)
    with pytest.raises(NonFiniteError, match=r"non-finite training at step 1 \(epoch 0\), update 4 of the step's 6 \(iteration 2 of 2\): "
                                             r"loss_d is nan\. Training stopped before this update"):
        train_in_process("eval=none", "optim.d_steps=2", "optim.iterations_per_step=2",
                         "loss.discriminator._target_=tests.planted.discriminator_loss_nan_at_call", "+loss.discriminator.call=7")


def fake_trainer(**metrics):
    return types.SimpleNamespace(global_step=40, current_epoch=2, checkpoint_callbacks=[], loggers=[], log_every_n_steps=10,
                                 is_global_zero=True, should_stop=False, lightning_module=None, callbacks=[],
                                 callback_metrics={k.replace("__", "/"): torch.tensor(v) for k, v in metrics.items()})


def test_a_non_finite_gradient_behind_a_finite_loss_is_caught_before_the_step():
    weight = torch.nn.Parameter(torch.ones(3))
    weight.grad = torch.tensor([0.0, float("inf"), 1.0])
    optimizer = torch.optim.SGD([weight], lr=1.0)
    module = types.SimpleNamespace(last_loss=("loss_g", torch.tensor(0.7)), device=torch.device("cpu"))
    with pytest.raises(NonFiniteError, match=r"step 40 \(epoch 2\): loss_g is finite \(0.7\) but its gradient norm is inf"):
        NonFiniteAlarm().on_before_optimizer_step(fake_trainer(), module, optimizer)
    weight.grad = torch.tensor([0.0, float("nan"), 1.0])
    with pytest.raises(NonFiniteError, match=r"loss_g is finite \(0.7\) but its gradient norm is nan"):
        NonFiniteAlarm().on_before_optimizer_step(fake_trainer(), module, optimizer)
    weight.grad = torch.tensor([0.0, 2.0, 1.0e-30])
    NonFiniteAlarm().on_before_optimizer_step(fake_trainer(), module, optimizer)  # finite: passes
    for value in ("inf", "-inf", "nan"):  # a non-finite loss behind finite gradients
        module.last_loss = ("loss_g", torch.tensor(float(value)))
        with pytest.raises(NonFiniteError, match=rf"loss_g is {value}\. Training stopped before this update"):
            NonFiniteAlarm().on_before_optimizer_step(fake_trainer(), module, optimizer)
    module.last_loss = ("loss_g", torch.tensor(0.7))
    assert torch.equal(weight.grad, torch.tensor([0.0, 2.0, 1.0e-30]))  # and the check left the gradient as it was


def test_with_fused_adam_a_bad_update_is_skipped_on_the_device_and_the_step_stops_at_its_end():
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([weight], lr=0.1, fused=True)  # the default optimizer
    module = types.SimpleNamespace(last_loss=("loss_d", torch.tensor(0.7)), device=torch.device("cpu"))
    alarm, trainer = NonFiniteAlarm(), fake_trainer()

    def update(loss_name: str, loss: float, grad: list[float]) -> None:
        module.last_loss, weight.grad = (loss_name, torch.tensor(loss)), torch.tensor(grad)
        alarm.on_before_optimizer_step(trainer, module, optimizer)  # reads nothing from the device: no error yet
        optimizer.step()

    update("loss_d", 0.7, [1.0, 2.0, 3.0])
    alarm.on_train_batch_end(trainer, module)  # a good step ends quietly, its update applied
    assert not torch.equal(weight, torch.ones(3))
    good, adam = weight.detach().clone(), {k: v.clone() for k, v in optimizer.state[weight].items()}

    update("loss_d", 0.7, [0.0, float("inf"), 1.0])
    assert torch.equal(weight, good) and all(torch.equal(optimizer.state[weight][k], v) for k, v in adam.items())  # skipped: weights and Adam's state
    trainer.global_step = 41
    update("loss_g", 0.5, [1.0, 1.0, 1.0])  # a later update of the same step, with finite gradients
    with pytest.raises(NonFiniteError, match=r"step 40 \(epoch 2\): loss_d is finite \(0.7\) but a gradient behind it is inf or NaN\. "
                                             r"Training stopped before this update"):
        alarm.on_train_batch_end(trainer, module)  # names the first bad update
    for value in ("inf", "-inf", "nan"):  # a non-finite loss behind finite gradients
        before = weight.detach().clone()
        update("loss_g", float(value), [1.0, 1.0, 1.0])
        assert torch.equal(weight, before)
        with pytest.raises(NonFiniteError, match=rf"step 41 \(epoch 2\): loss_g is {value}\. Training stopped before this update"):
            alarm.on_train_batch_end(trainer, module)
    update("loss_g", 0.5, [1.0, 1.0, 1.0])
    alarm.on_train_batch_end(trainer, module)  # after a caught error, a good step passes again
    # A step of more updates than the flags first kept (35 here; d_steps=5 with iterations_per_step=6
    # makes 36): bad updates past them are still skipped, the first one named.
    bad = (NonFiniteAlarm.FIRST_FLAGS + 1, 2 * NonFiniteAlarm.FIRST_FLAGS + 1)
    for i in range(2 * NonFiniteAlarm.FIRST_FLAGS + 3):
        trainer.global_step = 100 + i
        before = weight.detach().clone()
        update("loss_d", 0.7, [1.0, float("nan"), 1.0] if i in bad else [1.0, 1.0, 1.0])
        assert torch.equal(weight, before) is (i in bad)
    with pytest.raises(NonFiniteError, match=rf"step {100 + bad[0]} \(epoch 2\), update {bad[0] + 1} of the step's {2 * NonFiniteAlarm.FIRST_FLAGS + 3}: loss_d is finite"):
        alarm.on_train_batch_end(trainer, module)
    update("loss_g", 0.5, [1.0, 1.0, 1.0])
    alarm.on_train_batch_end(trainer, module)


def test_d_won_alarm_needs_a_sustained_window_and_can_stop(caplog):
    alarm = CollapseAlarm(window_steps=100, stop=True)
    trainer = fake_trainer(train__d_real=0.999, train__d_fake=0.001)
    with caplog.at_level(logging.WARNING):
        for step in (40, 90, 140):
            trainer.global_step = step
            alarm.check(trainer)
            assert trainer.should_stop is (step - 40 >= 100)
    assert "warning/d_won" in caplog.text and "D has won since step 39" in caplog.text  # the x-axis value of step 40's scalars
    # One ordinary check resets the window.
    alarm = CollapseAlarm(window_steps=100)
    for step, d_fake in ((40, 0.001), (90, 0.3), (150, 0.001), (200, 0.001)):
        trainer.global_step, trainer.callback_metrics["train/d_fake"] = step, torch.tensor(d_fake)
        alarm.check(trainer)
    assert alarm.d_won_since == 149 and not alarm.raised["d_won"]


def test_d_won_under_label_smoothing_is_measured_against_the_smoothed_real_label():
    # With regularization.real_label=0.9 D's best D(x) is 0.9: 0.99 could never be passed.
    trainer = fake_trainer(train__d_real=0.895, train__d_fake=0.001)
    alarm = CollapseAlarm(window_steps=0)
    alarm.check(trainer)
    assert not alarm.raised["d_won"]  # without smoothing 0.895 is far from a won game
    trainer.lightning_module = types.SimpleNamespace(real_label=0.9)
    alarm.check(trainer)
    assert alarm.raised["d_won"]
    trainer.callback_metrics["train/d_real"] = torch.tensor(0.85)
    alarm.check(trainer)
    assert not alarm.raised["d_won"]


def test_d_won_reads_the_hinge_margins_and_is_off_for_raw_scores():
    alarm = CollapseAlarm(window_steps=0)
    trainer = fake_trainer(train__d_margins_met=0.98)  # hinge: a few samples still inside the margin
    alarm.check(trainer)
    assert not alarm.raised["d_won"]
    trainer.callback_metrics["train/d_margins_met"] = torch.tensor(1.0)  # every one past it: D's loss is 0
    alarm.check(trainer)
    assert alarm.raised["d_won"]
    # least-squares and Wasserstein log raw scores only: no D-won criterion, whatever their values
    alarm = CollapseAlarm(window_steps=0)
    trainer = fake_trainer(train__d_real_score=50.0, train__d_fake_score=-50.0)
    alarm.check(trainer)
    assert alarm.d_won_since is None and not alarm.raised["d_won"]


def test_low_coverage_alarm_reads_the_evaluation_metric_once_the_run_is_old_enough(caplog):
    alarm = CollapseAlarm(min_classes_covered=8, min_steps=100)
    trainer = fake_trainer(eval__classes_covered=1.0)
    alarm.check(trainer, coverage=True)  # step 40: too early to call it a collapse
    assert not alarm.raised["low_coverage"]
    trainer.global_step = 100
    trainer.callback_metrics["eval/classes_covered"] = torch.tensor(10.0)
    alarm.check(trainer, coverage=True)
    assert not alarm.raised["low_coverage"]
    trainer.callback_metrics["eval/classes_covered"] = torch.tensor(1.0)
    with caplog.at_level(logging.WARNING):
        alarm.check(trainer, coverage=True)
    assert alarm.raised["low_coverage"] and trainer.should_stop is False
    assert "step 99: mode collapse: the samples cover 1 of the 10 digit classes, fewer than 8." in caplog.text
    assert float(trainer.callback_metrics["warning/low_coverage"]) == 1.0  # for the run's summary


def test_low_coverage_is_judged_at_the_end_of_an_epoch_that_evaluated_never_on_an_older_evaluation():
    # An evaluation at step 99 (before min_steps) left eval/classes_covered = 1 in callback_metrics;
    # the logging steps and epoch ends after it, past min_steps, must not judge that old value.
    alarm = CollapseAlarm(min_classes_covered=8, min_steps=150)
    evaluation = types.SimpleNamespace(evaluated_step=99)
    trainer = fake_trainer(eval__classes_covered=1.0, train__d_real=0.5, train__d_fake=0.5)
    trainer.callbacks = [evaluation]
    for step in (99, 160, 180):
        trainer.global_step = step
        alarm.on_train_batch_end(trainer, None)
        alarm.on_train_epoch_end(trainer, None)
        assert not alarm.raised["low_coverage"] and "warning/low_coverage" not in trainer.callback_metrics
    trainer.global_step = evaluation.evaluated_step = 199  # an evaluation past min_steps: judged
    alarm.on_train_epoch_end(trainer, None)
    assert alarm.raised["low_coverage"]


def test_alarms_fire_in_a_real_run_with_flags_and_text_entries(train_in_process, tmp_path, caplog):
    # Thresholds every state satisfies: D-won must fire after its window of 4 steps, and
    # low coverage when the evaluation callback logs eval/classes_covered (at most 10 < 11).
    with caplog.at_level(logging.INFO):  # the run's last lines too
        train_in_process("callbacks.collapse_alarm.d_real_above=0", "callbacks.collapse_alarm.d_fake_below=1",
                         "callbacks.collapse_alarm.window_steps=4", "callbacks.collapse_alarm.min_classes_covered=11",
                         "callbacks.collapse_alarm.min_steps=0",
                         "eval.num_samples=200", "eval.batch_size=100")
    run = tmp_path / "run"
    events = EventAccumulator(str(next(run.glob("events*"))), size_guidance={"tensors": 0})
    events.Reload()
    flags = [(e.step, e.value) for e in events.Scalars("warning/d_won")]
    assert flags[:6] == [(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0), (4, 1.0), (5, 1.0)]  # at the batches' indices, as the losses
    assert [step for step, _ in flags] == list(range(8))  # once each: the last batch's flag not again at the epoch's end
    assert [e.value for e in events.Scalars("warning/low_coverage")] == [1.0]
    assert {"warning/d_won/text_summary", "warning/low_coverage/text_summary"} <= set(events.Tags()["tensors"])
    # the warnings go to the run's log (train.log in a run of train.py: Hydra's file handler on the root logger)
    assert "warning/d_won" in caplog.text and "warning/low_coverage: step 7: mode collapse" in caplog.text  # on the x-axis
    summary = json.loads((run / "summary.json").read_text())  # the flags as they ended, for scripts and sweep tables
    assert summary["metrics"]["warning/d_won"] == summary["metrics"]["warning/low_coverage"] == 1.0
    assert "alarms on at the end: d_won, low_coverage" in caplog.text
