"""Sweeps at scale: failing jobs, up-front checks, resume, parallel jobs, SLURM settings, Optuna studies."""

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import read_write

from gan_lightning.report import write_report
from gan_lightning.sweeps import describe, read_status, run_sweep_job, summary_table, write_status
from gan_lightning.train import CONFIG_DIR
from hydra_plugins.gan_lightning_sweeps.launchers import DeviceSlots, ParallelLauncher
from hydra_plugins.gan_lightning_sweeps.optuna_sweeper import OptunaSweeper
from tests.conftest import FAST, TRAIN_PY, check, compose_config, run_train
from tests.test_experiments import groups, png_size, tensorboard_view

BATCHES = 256 // 32  # tiny MNIST, batch 32


def jobs(sweep: Path) -> dict[int, dict]:
    """job number -> its job_status.json."""
    statuses = [read_status(p.parent) for p in sweep.rglob("job_status.json") if ".submitit" not in p.parts]
    return {s["job"]: s for s in statuses}


def test_a_sweep_with_failing_and_diverging_jobs_goes_on_and_reports_them(mnist_root, tmp_path):
    sweep = tmp_path / "sweep"
    # seed=-1 passes the config check but is refused by seed_everything inside job 1. The planted D loss
    # is NaN at its 17th call in the sweep's process: jobs 0 and 2 make 8 calls each (8 batches),
    # job 1 none, so job 3 diverges at its first step.
    args = [f"data.root={mnist_root}", *FAST, "seed=1,-1,2,3", f"hydra.sweep.dir={sweep}",
            "loss.discriminator._target_=tests.planted.discriminator_loss_nan_at_call", "+loss.discriminator.call=17"]
    result = run_train(*args, multirun=True)

    assert result.returncode == 1, result.stderr[-2000:]
    status = jobs(sweep)
    assert [status[j]["status"] for j in (0, 1, 2, 3)] == ["completed", "failed", "completed", "diverged"]
    assert status[1]["error"].startswith("seed must be null or an integer in [0, 2**32 - 1], got -1")
    assert "non-finite" in status[3]["error"] and status[3]["value"] is None  # the job returned NaN to the sweeper
    summary = (sweep / "summary.txt").read_text()
    assert summary in result.stdout  # printed at the end of the sweep, and kept beside the runs
    rows = {line.split()[0]: line for line in summary.splitlines() if line.startswith("#") and "  " in line}
    assert "failed" in rows["#1"] and "seed=-1" in rows["#1"] and "data.root" not in rows["#1"]
    assert "completed" in rows["#0"] and f"{status[0]['value']:.2f}" in rows["#0"]
    assert "#1: seed must be null or an integer" in summary
    assert "diverged" in rows["#3"] and " - " in rows["#3"]
    # one folder per job, named by its number and the override that differs, holding that job's run
    folders = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert folders == ["0_seed=1", "1_seed=-1", "2_seed=2", "3_seed=3"]
    for job, seed in ((0, 1), (2, 2)):
        run = sweep / folders[job]
        assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["seed"] == seed
        assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == BATCHES
        assert len(list(run.rglob("events.out.tfevents.*"))) == 1
    assert all(result.stdout.count(f"#{job} :") == 1 for job in range(4))  # each job launched once
    assert summary.splitlines()[0].split()[:3] == ["job", "status", "eval/fid_mnist"]  # optimized_metric, what the jobs return

    # the report: the two finished seeds pooled, the failed and the diverged job listed with their errors
    text = write_report(sweep, early_steps=5).read_text()
    pooled = [line for line in text.splitlines() if line.startswith("| all runs |")]
    assert len(pooled) == 1 and "| 2 (1, 2) |" in pooled[0], text
    assert float(pooled[0].split("|")[3].split("±")[0]) > 0  # evaluated after their last epoch
    for seed, problem in (("-1", "failed: seed must be"), ("3", "diverged: non-finite")):
        line = next(line for line in text.splitlines() if f"seed={seed}" in line and line.startswith("| `"))
        assert "left out" in line and problem in line, line
    for name in ("early_steps.png", "training_curves.png", "samples.png", "fid_vs_epoch.png"):
        assert f"]({name})" in text
        width, height = png_size(sweep / name)
        assert width > 100 and height > 100

    # `tensorboard --logdir <sweep>`: what the dashboard shows, read by TensorBoard's own code
    runs, experiment = tensorboard_view(sweep)
    # runs named by the job folders, which hold the events and name only what differs between jobs
    assert {"0_seed=1", "2_seed=2"} <= set(runs) and not any(run.startswith("1_") for run in runs)  # job 1 crashed before logging
    for run in ("0_seed=1", "2_seed=2"):
        tags = runs[run]
        # Time Series groups cards by the tag's first part, in the order of the sorted tags, and opens
        # the first two groups: FID and coverage, then losses, D(x), D(G(z)) and samples; alarms after.
        assert groups(tags) == ["eval", "train", "wall_time", "warning"], tags  # no `epoch` staircase
        assert {"eval/fid_mnist", "eval/classes_covered"} <= set(tags)
        assert {"train/loss_d", "train/loss_g", "train/d_real", "train/d_fake", "train/samples"} <= set(tags)
        assert sorted(tag for tag in tags if tag.startswith("train/"))[-1] == "train/samples"  # the grids last
    # HPARAMS: the param that differs between the runs (the swept seed) is the first column, ticked
    # (the page ticks the first 5 params and the first 5 metrics), with the eval metrics beside it
    params = [(info.name, info.differs) for info in experiment.hparam_infos]
    assert params[0] == ("seed", True) and not any(differs for _, differs in params[1:]), params
    assert {"optim.lr_g", "optim.lr_d", "loss.name"} <= {name for name, _ in params}
    assert "eval/fid_mnist" in [info.name.tag for info in experiment.metric_infos[:5]]



def test_a_bad_value_in_any_job_refuses_the_sweep_before_the_first_job(mnist_root, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(f"data.root={mnist_root}", *FAST, "optim.lr_g=2e-4,-1,2e-4", f"hydra.sweep.dir={sweep}", multirun=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: sweep job #1 (optim.lr_g=-1): optim.lr_g must be a finite number > 0, got -1; no job was started"]
    assert not sweep.exists()  # not even the multirun.yaml Hydra writes before launching


def test_a_killed_sweep_run_again_skips_the_finished_job_and_continues_the_cut_one_from_its_checkpoint(mnist_root, tmp_path):
    sweep = tmp_path / "sweep"
    # 3 epochs: job 1 is killed after its first, with two left (time enough to notice the checkpoint)
    args = [f"data.root={mnist_root}", *FAST, "eval=none", "trainer.max_epochs=3", "seed=1,2", f"hydra.sweep.dir={sweep}"]
    cmd = [sys.executable, str(TRAIN_PY), "-m", *args]
    log = tmp_path / "sweep.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 120
            while not list(sweep.glob("1_*/checkpoints/last.ckpt")):  # job 0 has finished, job 1 an epoch
                assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
        finally:
            proc.kill()  # kill -9: nothing is saved on the way out
            proc.wait()
    before = jobs(sweep)
    assert [before[j]["status"] for j in (0, 1)] == ["completed", "running"]

    result = check(run_train(*args, multirun=True))

    status = jobs(sweep)
    assert [status[j]["status"] for j in (0, 1)] == ["completed", "completed"]
    assert "job #0 completed in an earlier run of this sweep: skipped" in result.stdout + result.stderr
    assert status[0]["started"] == before[0]["started"]  # not run again
    assert status[1]["resumed_from"].endswith(".ckpt") and before[1]["resumed_from"] is None
    for job in (0, 1):
        ckpt = torch.load(next(sweep.glob(f"{job}_*/checkpoints/last.ckpt")), map_location="cpu", weights_only=False)
        assert ckpt["global_step"] == 3 * BATCHES and ckpt["epoch"] == 2


@pytest.mark.parametrize("before, overrides, runs_again", [
    ("completed", ["seed=3"], False), ("diverged", ["seed=3"], False),  # finished: its result stands
    ("failed", ["seed=3"], True), ("interrupted", ["seed=3"], True), ("running", ["seed=3"], True),  # killed
    ("completed", ["seed=4"], True),  # the folder of another job (the sweep was changed): this one runs
])
def test_a_rerun_of_a_sweep_runs_again_only_the_jobs_that_did_not_finish(tmp_path, before, overrides, runs_again):
    cfg = compose_config("seed=3", output_dir=tmp_path)
    with read_write(HydraConfig.get()):
        HydraConfig.get().job.num = 2  # what Hydra's multirun sets for job #2
    write_status(tmp_path, job=2, overrides=overrides, run_dir=str(tmp_path), status=before, value=1.5 if before == "completed" else None)
    ran = []
    value = run_sweep_job(cfg, lambda cfg: ran.append(cfg.seed) or 0.5)
    assert ran == ([3] if runs_again else [])
    assert read_status(tmp_path)["status"] == ("completed" if runs_again else before)
    assert value == (0.5 if runs_again else 1.5) or (before == "diverged" and math.isnan(value))


@pytest.mark.parametrize("stop, said", [(SystemExit(1), "Ctrl-C"), (KeyboardInterrupt(), "Ctrl-C")])
def test_a_job_stopped_by_ctrl_c_is_recorded_as_interrupted_by_it(tmp_path, stop, said):
    cfg = compose_config("seed=3", output_dir=tmp_path)
    with read_write(HydraConfig.get()):
        HydraConfig.get().job.num = 2

    def stopped(cfg):  # Lightning ends a Ctrl-C with sys.exit(1)
        raise stop

    with pytest.raises(type(stop)):
        run_sweep_job(cfg, stopped)
    assert (read_status(tmp_path)["status"], read_status(tmp_path)["error"]) == ("interrupted", said)


def test_a_job_whose_process_outlived_its_killed_sweep_is_not_started_again_while_it_runs(tmp_path):
    # kill -9 of a parallel sweep leaves its jobs' processes running: a re-run must not train a second time in their folders
    cfg = compose_config("seed=3", output_dir=tmp_path)
    with read_write(HydraConfig.get()):
        HydraConfig.get().job.num = 2
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_status(tmp_path, job=2, overrides=["seed=3"], run_dir=str(tmp_path), status="running", value=None,
                     resources={"host": socket.gethostname(), "pid": job.pid})
        ran = []
        assert math.isnan(run_sweep_job(cfg, lambda cfg: ran.append(cfg.seed) or 0.5))
        assert ran == [] and read_status(tmp_path)["status"] == "running"  # its status is the running process's
        assert describe(read_status(tmp_path)) == "still running"
        table = summary_table([read_status(tmp_path)], "eval/fid_mnist", tmp_path)
        assert f"#2: its process {job.pid}, started by an earlier run of this sweep, still trains in its folder" in "\n".join(table)
    finally:
        job.kill()
        job.wait()
    assert describe(read_status(tmp_path)) == "killed"  # once it has ended: a killed job, which a re-run continues
    assert run_sweep_job(cfg, lambda cfg: ran.append(cfg.seed) or 0.5) == 0.5 and ran == [3]


def test_the_parallel_launcher_runs_jobs_at_once_on_shared_gpus_with_the_cores_split_and_survives_a_killed_job(mnist_root, tmp_path):
    sweep = tmp_path / "sweep"
    # One (faked) GPU taking the three jobs at once. Each job waits until all three have started: the
    # start-up of a job (seconds of imports) can outlast its tiny training, so without this two could
    # miss each other on a busy machine. The third job kills its own process at its first batch.
    result = run_train(f"data.root={mnist_root}", *FAST, "eval=none", "seed=1,2,3",
                       "+callbacks.wait._target_=tests.probes.WaitForJobs", "+callbacks.wait.jobs=3",
                       "+callbacks.die._target_=tests.probes.KillSelf", "+callbacks.die.seed=${seed}", "+callbacks.die.kill_seed=3",
                       "hydra/launcher=parallel", "hydra.launcher.jobs_per_gpu=3", "hydra.launcher.poll_s=0.1",
                       f"hydra.sweep.dir={sweep}", multirun=True, env={"GAN_FAKE_GPU_COUNT": "1"})
    assert result.returncode == 1, result.stderr[-3000:]
    status = jobs(sweep)
    assert [status[j]["status"] for j in (0, 1, 2)] == ["completed", "completed", "killed"]
    killed_log = next(log for log in (sweep / ".submitit").rglob("*_log.out") if not list(log.parent.glob("*_result.pkl")))
    said = f"#2: the job's process ended without a result (killed?); its output: {killed_log}"
    assert said in (sweep / "summary.txt").read_text()
    cores = len(os.sched_getaffinity(0))
    assert [status[j]["resources"]["torch_threads"] for j in (0, 1, 2)] == [max(cores // 3, 1)] * 3  # the cores split 3 ways
    assert [status[j]["resources"]["cuda_visible_devices"] for j in (0, 1, 2)] == ["0", "0", "0"]  # the slots of GPU 0
    assert len({status[j]["resources"]["pid"] for j in (0, 1, 2)}) == 3
    # jobs 0 and 1 ran at the same time: each started before the other finished
    assert status[0]["started"] < status[1]["updated"] and status[1]["started"] < status[0]["updated"]
    for job in (0, 1):
        run = next(sweep.glob(f"{job}_*"))
        assert (run / "checkpoints" / "last.ckpt").is_file() and len(list(run.rglob("events.out.tfevents.*"))) == 1
    assert len(list((sweep / ".submitit").rglob("*_log.out"))) == 3  # each job's own console output
    assert not (sweep / ".submitit" / "%j").exists()  # the executor's folder pattern, made as a folder of its own


def test_gpu_slots_give_each_job_its_own_gpu_then_share_them():
    slots = DeviceSlots(num_gpus=2, jobs_per_gpu=1)
    assert slots.take(1) == [0] and slots.take(1) == [1] and slots.take(1) is None
    slots.give_back([0])
    assert slots.take(1) == [0]

    shared = DeviceSlots(num_gpus=2, jobs_per_gpu=2)
    assert [shared.take(1) for _ in range(4)] == [[0], [1], [0], [1]]  # spread first, then share
    assert shared.take(1) is None
    ddp = DeviceSlots(num_gpus=3, jobs_per_gpu=1)
    assert ddp.take(2) == [0, 1] and ddp.take(2) is None and ddp.take(1) == [2]


def compose_slurm(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)


def test_the_slurm_launcher_off_a_cluster_is_one_line(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("")  # what Hydra writes before it launches
    launcher = instantiate(compose_slurm(f"hydra.sweep.dir={sweep}").hydra.launcher)
    launcher.config = compose_slurm(f"hydra.sweep.dir={sweep}")
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun on it
    with pytest.raises(SystemExit) as exit_:
        launcher.launch([["seed=1"], ["seed=2"]], initial_job_idx=0)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("error: hydra/launcher=slurm needs a SLURM cluster, and srun is not on this machine's PATH "
                                       "(hydra/launcher=parallel runs the jobs here)\n")
    assert not sweep.exists()


def test_slurm_launcher_submits_one_task_per_device_with_the_configured_resources(tmp_path, monkeypatch):
    fake_bin = tmp_path / "bin"  # submitit looks for srun before it writes a script
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    cfg = compose_slurm("trainer.devices=4", "trainer.num_nodes=2", "hydra.launcher.partition=gpu",
                        "hydra.launcher.timeout_min=90", f"hydra.sweep.dir={tmp_path}", "hydra.job.name=train")
    sbatch = instantiate(cfg.hydra.launcher).sbatch_script()
    for line in ("--ntasks-per-node=4", "--nodes=2", "--gpus-per-node=4", "--partition=gpu", "--time=90",
                 "--signal=USR1@90", "--requeue", "--cpus-per-task=4", "--mem=16GB", "--job-name=train"):
        assert f"#SBATCH {line}\n" in sbatch, sbatch
    assert "USR2" not in sbatch  # submitit's own timeout signal is replaced by Lightning's requeue signal


def test_lightning_sees_the_slurm_tasks_as_its_ddp_processes(monkeypatch):
    import lightning as L
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.pytorch.utilities import rank_zero_only

    # The Trainer sets the process-wide rank to 1; left so, every later run in this process would
    # believe it is not rank 0 and write no logs, samples or hparams.
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)

    for key, value in {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "42",
                       "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NODEID": "0", "SLURM_NODELIST": "node1"}.items():
        monkeypatch.setenv(key, value)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true", logger=False)
    env = trainer.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.creates_processes_externally
    assert (trainer.global_rank, trainer.world_size) == (1, 2)


def test_an_optuna_search_continues_its_study_after_a_crash(mnist_root, tmp_path):
    sweep = tmp_path / "search"
    fast = [o for o in FAST if not o.startswith("data.batch_size=")]  # the batch size is searched
    args = ["hparams_search=optuna", f"data.root={mnist_root}", *fast, f"hydra.sweep.dir={sweep}"]
    check(run_train(*args, "hydra.sweeper.n_trials=1", multirun=True))
    study = optuna.load_study(study_name="gan_mnist", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
    assert len(list(sweep.rglob(".hydra/config.yaml"))) == 1

    # a search killed in the middle of its second trial leaves it RUNNING, asked by a process now dead
    dead = subprocess.Popen(["true"])
    dead.wait()
    cut = study.ask({"optim.lr_g": optuna.distributions.FloatDistribution(1e-5, 3e-3, log=True)})
    cut.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")
    cut.set_user_attr("job", 1)

    result = check(run_train(*args, "hydra.sweeper.n_trials=3", multirun=True))
    study = optuna.load_study(study_name="gan_mnist", storage=f"sqlite:///{sweep / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    # 1 kept, the cut-off one failed and run again with its parameters, 1 new: the budget of 3 holds
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"], states
    assert study.trials[2].params["optim.lr_g"] == cut.params["optim.lr_g"]
    assert study.trials[2].user_attrs["job"] == 1
    assert study.trials[3].params != study.trials[0].params  # the seeded sampler moved on
    assert sorted(jobs(sweep)) == [0, 1, 2]
    assert "1 trial finished before, 2 to go (1 cut off, run again)" in result.stdout + result.stderr
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    finished = [t.value for t in study.trials if t.state.name == "COMPLETE"]
    assert results["best_value"] == min(finished) and math.isfinite(results["best_value"])  # the lowest final eval/fid_mnist
    assert set(results["best_params"]) == {"optim.lr_g", "optim.lr_d", "optim.d_steps", "data.batch_size"}
    report = write_report(sweep, early_steps=5).read_text()
    for png in ("optuna_history.png", "optuna_slice.png"):
        assert (sweep / png).stat().st_size > 1000 and f"]({png})" in report


@pytest.mark.parametrize("n_jobs, launcher, gpus, width", [
    (None, ParallelLauncher(), 0, 2), (None, ParallelLauncher(jobs=3), 0, 3), (None, ParallelLauncher(jobs_per_gpu=2), 4, 8),
    (1, ParallelLauncher(), 0, 1), (None, None, 0, 1),  # None: the sequential launcher
])
def test_an_optuna_search_asks_for_as_many_trials_at_once_as_its_launcher_runs_jobs(monkeypatch, n_jobs, launcher, gpus, width):
    monkeypatch.setenv("GAN_FAKE_GPU_COUNT", str(gpus))
    monkeypatch.setitem(ParallelLauncher.width.__globals__, "usable_cores", lambda: 2)  # the module the class came from
    sweeper = OptunaSweeper(n_jobs=n_jobs)
    sweeper.launcher = launcher
    assert sweeper.width() == width


def test_a_requeued_slurm_job_continues_in_its_own_folder(mnist_root, tmp_path):
    """Two starts of the same SLURM batch job (the first killed after an epoch, as a pre-emption
    does): one run folder, named by the job id, and the second start continues from its checkpoint."""
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_STEP_ID": "0"}
    cmd = [sys.executable, str(TRAIN_PY), f"data.root={mnist_root}", *FAST, "eval=none", "trainer.max_epochs=3"]
    env = {**os.environ, **slurm, "PYTHONWARNINGS": "ignore"}
    run = tmp_path / "outputs" / "runs" / "slurm-4242_0"
    log = tmp_path / "first.out"
    with open(log, "w") as out:
        first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 120
            while not (run / "checkpoints" / "last.ckpt").exists():
                assert first.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
        finally:
            first.kill()
            first.wait()

    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    check(second)
    assert "SLURM job 4242 started again: resuming from" in second.stdout + second.stderr
    assert [p.name for p in (tmp_path / "outputs" / "runs").iterdir()] == ["slurm-4242_0"]
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 3 * BATCHES


@pytest.mark.parametrize("procid", ["0", "1"])
def test_every_task_of_a_slurm_run_names_the_same_folder_and_rank_zero_alone_writes_the_config(monkeypatch, procid):
    for key, value in {"SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "train", "SLURM_PROCID": procid}.items():
        monkeypatch.setenv(key, value)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    assert cfg.hydra.run.dir == "outputs/runs/slurm-77"
    assert cfg.hydra.output_subdir == (".hydra" if procid == "0" else None)


def test_parallel_ddp_jobs_on_a_cpu_do_not_start_more_processes_than_cores(monkeypatch):
    launcher = ParallelLauncher()
    monkeypatch.setitem(ParallelLauncher.width.__globals__, "usable_cores", lambda: 2)  # Hydra's plugin scan may load the module again
    assert [launcher.width(0, devices) for devices in (1, 2, 4)] == [2, 1, 1]  # 2 jobs of 1 process, 1 job of 2 (or 4)
    monkeypatch.setitem(ParallelLauncher.width.__globals__, "usable_cores", lambda: 16)
    assert launcher.width(0, 2) == 2 and ParallelLauncher(jobs=3).width(0, 2) == 3  # jobs= is the user's to set
