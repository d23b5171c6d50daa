"""train.py end to end: run folders, logs, DDP, sweeps, resume, seeds, errors.

What Hydra or several processes do (run folders, the command line's one-line errors, DDP, sweeps,
Ctrl-C) is tested by starting train.py; the rest calls train(cfg) in this process."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gan_lightning.callbacks import InterruptCheckpoint
from gan_lightning.config import ConfigError
from gan_lightning.data import MNISTNotFoundError
from gan_lightning.evaluate import evaluate
from tests.conftest import FAST, TRAIN_PY, check, command_config, compose_config, run_train

SCALARS = {"train/loss_d", "train/loss_g", "train/d_real", "train/d_fake", "train/grad_norm_g"}
BATCHES = 256 // 32  # tiny MNIST, batch 32 (conftest.FAST)


def events(run_dir: Path) -> EventAccumulator:
    files = list(run_dir.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    return EventAccumulator(str(files[0]), size_guidance={"scalars": 0, "images": 0}).Reload()


def scalar_values(run_dir: Path, tag: str) -> list[float]:
    return [e.value for e in events(run_dir).Scalars(tag)]


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_a_run_writes_config_checkpoint_scalars_images_and_hparams(mnist_root, tmp_path):
    run = tmp_path / "run"
    # min_classes_covered=11, min_steps=0: the coverage alarm (at most 10 classes) warns after the last epoch.
    # With the model summary, and Python's default warnings: what a user's console shows.
    fast = [o for o in FAST if not o.startswith("trainer.enable_model_summary")]
    result = check(run_train(f"data.root={mnist_root}", f"hydra.run.dir={run}", *fast, "trainer.max_epochs=2",
                             "callbacks.collapse_alarm.min_classes_covered=11", "callbacks.collapse_alarm.min_steps=0",
                             "+callbacks.warn._target_=tests.probes.Warn", "+callbacks.warn.message=a planted warning",
                             env={"PYTHONWARNINGS": "default"}))
    assert (run / ".hydra" / "config.yaml").is_file()
    # the project's warnings and Lightning's lines reach the run's log file (Hydra's file handler)
    log = (run / "train.log").read_text()
    assert "[gan_lightning.alarms][WARNING] - warning/low_coverage: step 15" in log
    assert "`Trainer.fit` stopped: `max_epochs=2` reached." in log
    assert "[py.warnings][WARNING]" in log and "UserWarning: a planted warning" in log  # Python's warnings too
    # the end of the run: where it is, its final metrics, what to resume from, how to watch it
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 2 * BATCHES and summary["run_dir"] == str(run)
    assert summary["checkpoint"] == str(run / "checkpoints" / "last.ckpt")
    assert {"eval/fid_mnist", "eval/classes_covered", "train/loss_d", "train/loss_g"} <= set(summary["metrics"])
    console = result.stdout + result.stderr
    for line in (f"run completed at step {2 * BATCHES}: {run}", f"resume: ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                 f"tensorboard --logdir {run}", "final: fid_mnist "):
        assert line in console and line in log
    # the model summary, one line per network, and none of the lines that are not about the run
    assert "generator: MLPGenerator, 293 K parameters" in console
    for noise in ("FLOPs", "litlogger", "LeafSpec"):
        assert noise not in console
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["epoch_000.png", "epoch_001.png"]
    acc = events(run)
    assert SCALARS <= set(acc.Tags()["scalars"])
    # an epoch's sample grid at the step of its last losses and its evaluation (Time Series links them by step)
    assert [e.step for e in acc.Images("train/samples")] == [BATCHES - 1, 2 * BATCHES - 1]
    assert [e.step for e in acc.Scalars("eval/fid_mnist")] == [2 * BATCHES - 1]
    # TensorBoard's x-axis counts batches, one value per log_every_n_steps=1
    assert [e.step for e in acc.Scalars("train/loss_g")] == list(range(2 * BATCHES))
    d_real, d_fake = scalar_values(run, "train/d_real"), scalar_values(run, "train/d_fake")
    assert all(0 < v < 1 for v in d_real + d_fake)
    # the hparams tab: the run's loss, learning rates, batch size and seed
    hparams = acc.PluginTagToContent("hparams")
    session = b"".join(hparams.values())
    for key in (b"loss.name", b"optim.lr_g", b"optim.lr_d", b"data.batch_size", b"seed", b"non_saturating"):
        assert key in session


class StepHookListener(L.Callback):
    """Counts the per-step hooks it gets (fp32 training calls them only on those who define them)
    and logs from one, as a user's callback may."""

    def __init__(self):
        self.calls = {"on_before_backward": 0, "on_after_backward": 0, "on_before_optimizer_step": 0}

    def on_before_backward(self, trainer, pl_module, loss):
        self.calls["on_before_backward"] += 1

    def on_after_backward(self, trainer, pl_module):
        self.calls["on_after_backward"] += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.calls["on_before_optimizer_step"] += 1
        pl_module.log("listener/optimizer_steps", float(self.calls["on_before_optimizer_step"]), on_step=True)

    def on_train_end(self, trainer, pl_module):
        self.logged = trainer.callback_metrics["listener/optimizer_steps"].item()


def test_steps_count_batches_for_max_steps_and_checkpoints(train_in_process, tmp_path):
    listener = StepHookListener()
    train_in_process("trainer.max_epochs=5", "trainer.max_steps=11", "optim.d_steps=2", extra_callbacks=[listener])
    # a callback's own per-step hooks run at every backward and every optimizer step, and can log
    assert listener.calls == {"on_before_backward": 33, "on_after_backward": 33, "on_before_optimizer_step": 33}
    assert listener.logged == 33
    run = tmp_path / "run"
    ckpt = checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 11  # 11 batches, although 33 optimizer steps were taken
    # an epoch is every image once through D: 256 / (2 D steps x 32) = 4 batches, so step 11 is in epoch 2
    assert ckpt["epoch"] == 2
    d_state, g_state = ckpt["optimizer_states"]
    assert d_state["state"][0]["step"].item() == 22 and g_state["state"][0]["step"].item() == 11
    assert len(scalar_values(run, "train/loss_d")) == 11


def test_the_last_step_of_every_epoch_is_logged_between_log_every_n_steps(train_in_process, tmp_path):
    # Lightning writes step scalars at every 5th batch (indices 4, 9, 14); an epoch (8 batches) ends
    # between them, at 7 and 15: a run or an epoch shorter than log_every_n_steps still has its curves
    train_in_process("trainer.max_epochs=2", "trainer.log_every_n_steps=5")
    run = tmp_path / "run"
    for tag in SCALARS:
        assert [e.step for e in events(run).Scalars(tag)] == [4, 7, 9, 14, 15], tag
    # the values written there are the step's own, as Lightning reduced them: the run's last loss_g
    summary = json.loads((run / "summary.json").read_text())
    assert events(run).Scalars("train/loss_g")[-1].value == pytest.approx(summary["metrics"]["train/loss_g"])


def test_runs_started_together_never_share_a_folder(mnist_root, tmp_path):
    # started in tmp_path, so that the default run folders land in tmp_path/outputs, not the project's
    cmd = [sys.executable, str(TRAIN_PY), f"data.root={mnist_root}", *FAST, "trainer.max_steps=1", "callbacks=none", "logger=csv"]
    logs = [tmp_path / f"run{i}.out" for i in range(2)]
    procs = []
    for log in logs:  # files, not pipes: nothing can block on a full pipe buffer
        with open(log, "w") as out:
            procs.append(subprocess.Popen(cmd, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"}))
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 2
    assert all((run / ".hydra" / "config.yaml").is_file() for run in runs)


def test_minimax_on_two_cpu_processes_with_ddp(mnist_root, tmp_path):
    run, probe = tmp_path / "run", tmp_path / "probe"
    # + the step timer of the throughput benchmark's DDP comparison (benchmarks/throughput.py ddp_run),
    # which times such runs: checked here rather than in two more runs of its own
    result = check(run_train(
        "loss=minimax", "trainer.devices=2", f"data.root={mnist_root}", f"hydra.run.dir={run}", *FAST,
        "+callbacks.probe._target_=tests.probes.RecordBatches", f"+callbacks.probe.path={probe}", "trainer.log_every_n_steps=3",
        "eval.batch_size=64", "+callbacks.step_timer._target_=benchmarks.throughput.StepTimer",
        f"+callbacks.step_timer.path={tmp_path / 'step_times.json'}", env={"PYTHONWARNINGS": "default"},
    ))
    timed = json.loads((tmp_path / "step_times.json").read_text())  # rank 0's
    assert timed["world_size"] == 2 and len(timed["times"]) == BATCHES // 2 and sorted(timed["times"]) == timed["times"]
    assert "self.log('eval/" not in result.stdout + result.stderr  # no Lightning warning per metric and evaluation
    # the two processes split the evaluation; eval.py on one process finds the same numbers for the same weights
    printed = evaluate(command_config("evaluate", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"data.root={mnist_root}",
                                      "num_samples=256", "batch_size=64", "device=cpu", f"out={tmp_path / 'eval.json'}"))
    logged = events(run)
    for name in ("fid_mnist", "classes_covered", "kl_uniform", "classifier_score"):
        assert printed[name] == pytest.approx(logged.Scalars(f"eval/{name}")[-1].value, rel=1e-4), name
    # 4 steps: Lightning writes the scalars of step 2, the module those of the epoch's last step,
    # reduced over both processes like Lightning's (a collective: every process takes part)
    assert [e.step for e in events(run).Scalars("train/loss_d")] == [2, 3]
    # rank 0 alone writes the config, checkpoints, samples and logs
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / ".hydra" / "config.yaml").is_file()
    assert len(list((run / "samples").glob("*.png"))) == 1
    assert len(list(run.rglob("events.out.tfevents.*"))) == 1
    ckpt = checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["hyper_parameters"]["loss"]["name"] == "minimax"
    assert ckpt["global_step"] == BATCHES // 2  # each process takes half of the batches
    # each process trained on its own shard of the data, together all of it
    seen = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 128
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == 256


def test_sigterm_while_ddp_saves_a_checkpoint_stops_both_processes_after_the_next_batch(mnist_root, tmp_path):
    # Lightning's own SIGTERM handler runs a collective; landing in the save's barrier it hung both processes.
    run = tmp_path / "run"
    result = run_train("trainer.devices=2", f"data.root={mnist_root}", f"hydra.run.dir={run}", *FAST, "trainer.max_epochs=5", "eval=none",
                       "+callbacks.sigterm._target_=tests.probes.SigtermDuringSave", f"+callbacks.sigterm.step={BATCHES // 2}", timeout=240)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    stopped_at = InterruptCheckpoint.AGREE_EVERY  # the first step after it at which the processes agree on a signal
    assert f"error: stopped by SIGTERM at step {stopped_at}; resume with ckpt_path={run / 'checkpoints' / 'interrupted.ckpt'}" in result.stderr
    assert checkpoint(run / "checkpoints" / "interrupted.ckpt")["global_step"] == stopped_at
    assert not list((run / "checkpoints").glob(".*.tmp"))  # every save finished, the one the signal came into too


def test_a_ddp_job_of_a_parallel_sweep_runs_in_its_own_folder(mnist_root, tmp_path):
    # Each job's second DDP process is started from the job's own process (a submitit job under the
    # parallel launcher) and must re-run that job alone, in its folder (one job is enough to see that;
    # several jobs at once: tests/test_sweeps.py, one folder per job of a sequential sweep: there too).
    # The job makes 2 GAN iterations per training step: several D and G updates in one DDP forward.
    sweep = tmp_path / "sweep"
    result = check(run_train(
        "optim.iterations_per_step=2", "trainer.devices=2", f"data.root={mnist_root}", "hydra/launcher=parallel",
        f"hydra.sweep.dir={sweep}", *FAST, multirun=True, timeout=400,
    ))
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.name.split("_")[0] for j in jobs] == ["0"]
    ckpt = checkpoint(jobs[0] / "checkpoints" / "last.ckpt")
    assert ckpt["hyper_parameters"]["optim"]["iterations_per_step"] == 2
    assert ckpt["global_step"] == BATCHES // 4  # each process half the images, 2 minibatches a step
    assert [s["state"][0]["step"].item() for s in ckpt["optimizer_states"]] == [BATCHES // 2] * 2  # as many updates as 1 iteration a step
    assert len(list(jobs[0].rglob("events.out.tfevents.*"))) == 1
    # the DDP ranks re-ran the job, not the sweep again somewhere else
    assert result.stdout.count("#0 :") == 1


def test_resume_restores_networks_optimizers_and_counters(train_in_process, tmp_path):
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    train_in_process(run_dir=first)
    ckpt_path = first / "checkpoints" / "last.ckpt"
    train_in_process("trainer.max_epochs=2", f"ckpt_path={ckpt_path}", run_dir=resumed)
    end = checkpoint(resumed / "checkpoints" / "last.ckpt")
    assert end["global_step"] == 2 * BATCHES
    # Adam's step counts continue from the checkpoint's: the optimizers were restored
    assert [s["state"][0]["step"].item() for s in end["optimizer_states"]] == [2 * BATCHES, 2 * BATCHES]
    # training continued at epoch 1 (no second epoch 0)
    assert [p.name for p in (resumed / "samples").glob("*.png")] == ["epoch_001.png"]
    # and from the checkpoint's weights: the first logged step continues the first run's x-axis
    assert [e.step for e in events(resumed).Scalars("train/loss_g")][0] == BATCHES


def test_same_seed_same_losses_other_seed_other_losses(train_in_process, tmp_path):
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        runs[name] = tmp_path / name
        train_in_process("eval=none", f"seed={seed}", run_dir=runs[name])
    losses = {name: scalar_values(run, "train/loss_d") + scalar_values(run, "train/loss_g") for name, run in runs.items()}
    assert len(losses["a"]) == 2 * BATCHES
    assert losses["a"] == losses["b"]
    assert losses["a"] != losses["c"]


class MatmulPrecisionProbe(L.Callback):
    """torch's precision of fp32 matrix products where the training steps run."""

    def __init__(self):
        self.seen = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen["training"] = torch.get_float32_matmul_precision()


def test_matmul_precision_holds_for_the_training_steps_not_for_the_evaluation_nor_after_the_run(train_in_process, monkeypatch):
    from gan_lightning.metrics.callback import EvaluateGenerator

    probe, evaluate = MatmulPrecisionProbe(), EvaluateGenerator.evaluate

    def probed_evaluate(self, trainer, pl_module):
        probe.seen["evaluation"] = torch.get_float32_matmul_precision()
        return evaluate(self, trainer, pl_module)

    monkeypatch.setattr(EvaluateGenerator, "evaluate", probed_evaluate)
    before = torch.get_float32_matmul_precision()
    fid = train_in_process("matmul_precision=medium", extra_callbacks=[probe])
    assert fid is not None  # the evaluation ran
    assert probe.seen == {"training": "medium", "evaluation": "highest"}  # fid_mnist measured as in any other run
    assert torch.get_float32_matmul_precision() == before  # not left to the next job of a sweep


@pytest.mark.skipif(not hasattr(torch.backends.mkldnn.matmul, "fp32_precision"), reason="torch < 2.9 has no per-backend setting")
def test_matmul_precision_keeps_a_setting_made_with_torchs_per_backend_api():
    from gan_lightning.precision import matmul_precision

    cuda = torch.backends.cuda.matmul.fp32_precision
    try:
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"  # only the CPU's: get_float32_matmul_precision() now raises
        with matmul_precision("highest"):  # as the evaluation callback does
            assert torch.get_float32_matmul_precision() == "highest"
        assert (torch.backends.mkldnn.matmul.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == ("bf16", cuda)
    finally:
        torch.set_float32_matmul_precision("highest")


def test_an_impossible_value_fails_before_training_with_one_line(mnist_root, tmp_path):
    """The command line's side of every refused value (the values themselves: tests/test_config.py)."""
    result = run_train(f"data.root={mnist_root}", f"hydra.run.dir={tmp_path / 'outputs' / 'runs' / 'run'}", "optim.lr_g=0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: optim.lr_g must be a finite number > 0, got 0"]
    assert list(tmp_path.iterdir()) == []  # no empty run folder (nor outputs/runs/) left behind


@pytest.mark.parametrize("override", ["optim.lr_d=-0.001", "data.batch_size=0", "optim.d_steps=0"])
def test_impossible_values_stop_train_before_it_writes_anything(train_in_process, tmp_path, override):
    with pytest.raises(ConfigError):
        train_in_process(override)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("group, choices", [("loss", ("minimax", "non_saturating")), ("model", ("mlp", "dcgan"))])
def test_an_unknown_option_of_any_group_lists_that_groups_choices(group, choices):
    # what Hydra's command line prints, one message without a traceback (HYDRA_FULL_ERROR unset)
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as err:
        compose_config(f"{group}=nope")
    assert f"Could not find '{group}/nope'" in str(err.value)
    assert "Available options" in str(err.value) and all(choice in str(err.value) for choice in choices)


def test_missing_mnist_and_no_network_is_one_clear_message(train_in_process, tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # a closed local port: "no network", on any machine
    with pytest.raises(MNISTNotFoundError) as err:
        train_in_process(f"data.root={tmp_path / 'nowhere'}")
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("MNIST not found in ") and "downloading it failed" in line
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in line and "data.root=" in line
    assert not (tmp_path / "run").exists()


def test_ctrl_c_leaves_a_checkpoint_to_resume_from(mnist_root, tmp_path, train_in_process):
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    cmd = [sys.executable, str(TRAIN_PY), f"data.root={mnist_root}", f"hydra.run.dir={run}", *FAST, "trainer.max_epochs=1000"]
    log = tmp_path / "train.out"
    with open(log, "w") as out:  # a file, not a pipe: nothing can block on a full pipe buffer
        # A suite started in the background (`pytest &`) inherits an ignored SIGINT, and Python then
        # never turns Ctrl-C into KeyboardInterrupt: give the run the default disposition a terminal gives.
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.time() + 180
            while not (run / "samples" / "epoch_002.png").exists():  # well into training
                assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            try:
                assert proc.wait(timeout=120) != 0
            except subprocess.TimeoutExpired:
                pytest.fail("still running 120 s after Ctrl-C:\n" + log.read_text()[-3000:])
        finally:
            proc.kill()
    assert "Detected KeyboardInterrupt" in log.read_text() and "weights_only" not in log.read_text()
    interrupted = run / "checkpoints" / "interrupted.ckpt"
    assert interrupted.is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["checkpoint"] == str(interrupted)
    stopped_at = checkpoint(interrupted)["global_step"]
    assert stopped_at >= 3 * BATCHES
    train_in_process(f"trainer.max_epochs={stopped_at // BATCHES + 2}", f"ckpt_path={interrupted}", run_dir=resumed)
    assert checkpoint(resumed / "checkpoints" / "last.ckpt")["global_step"] > stopped_at


@pytest.mark.parametrize("override, message", [
    ("trainer.devices=abc", "trainer: TypeError: `devices` selected with `CPUAccelerator` should be an int > 0."),
    ("trainer.max_time=abc", "trainer: MisconfigurationException: `Timer(duration='abc')` is not a valid duration. Expected a string in the format DD:HH:MM:SS."),
    ("loss.generator._target_=nowhere.loss", "module: ImportError: Error loading 'nowhere.loss': "
                                             "ModuleNotFoundError(\"No module named 'nowhere'\") Are you sure that module 'nowhere' is installed?"),
])
def test_a_value_that_lightning_or_an_import_refuses_is_one_line_too(train_in_process, tmp_path, override, message):
    # a ConfigError: train.py prints it as one line, exits 2 and removes the run folder, as for the project's own checks
    with pytest.raises(ConfigError) as err:
        train_in_process(override)
    assert str(err.value) == message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_seed_that_numpy_cannot_take_is_one_line(train_in_process):
    with pytest.raises(ConfigError) as err:
        train_in_process("seed=-1")
    assert str(err.value) == "seed must be null or an integer in [0, 2**32 - 1], got -1"


def test_a_resume_into_a_new_folder_does_not_warn_about_modelcheckpoints_dirpath(mnist_root, train_in_process, tmp_path):
    train_in_process("eval=none", run_dir=tmp_path / "first")
    resumed = check(run_train(f"data.root={mnist_root}", *FAST, "eval=none", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'resumed'}",
                              f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}", env={"PYTHONWARNINGS": "default"}))
    assert "dirpath has changed" not in resumed.stdout + resumed.stderr  # ModelCheckpoint's, at every resume into a new folder


def test_a_run_without_tensorboard_points_at_its_csv_scalars_not_at_tensorboard(train_in_process, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        train_in_process("eval=none", "logger=csv", "trainer.limit_train_batches=1")
    run = tmp_path / "run"
    assert json.loads((run / "summary.json").read_text())["tensorboard"] is None
    assert f"watch: the scalars are in {run / 'csv' / 'metrics.csv'}" in caplog.text and "tensorboard --logdir" not in caplog.text
    assert (run / "csv" / "metrics.csv").is_file()
