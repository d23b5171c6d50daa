"""train.py end to end, as a user runs it: run folders, logs, DDP, sweeps, resume, seeds, errors."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import FAST, PROJECT, check, run_train

SCALARS = {"train/loss_d", "train/loss_g", "train/d_real", "train/d_fake", "train/grad_norm_g"}
BATCHES = 256 // 32  # tiny MNIST, batch 32 (conftest.FAST)


def events(run_dir: Path) -> EventAccumulator:
    files = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    return EventAccumulator(str(files[0]), size_guidance={"scalars": 0, "images": 0}).Reload()


def scalar_values(run_dir: Path, tag: str) -> list[float]:
    return [e.value for e in events(run_dir).Scalars(tag)]


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_a_run_writes_config_checkpoint_scalars_images_and_hparams(mnist_root, tmp_path):
    run = tmp_path / "run"
    check(run_train(f"data.root={mnist_root}", f"hydra.run.dir={run}", *FAST, "trainer.max_epochs=2"))
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["epoch_000.png", "epoch_001.png"]
    acc = events(run)
    assert SCALARS <= set(acc.Tags()["scalars"])
    assert len(acc.Images("samples")) == 2
    # TensorBoard's x-axis counts batches, one value per log_every_n_steps=1
    assert [e.step for e in acc.Scalars("train/loss_g")] == list(range(2 * BATCHES))
    d_real, d_fake = scalar_values(run, "train/d_real"), scalar_values(run, "train/d_fake")
    assert all(0 < v < 1 for v in d_real + d_fake)
    # the hparams tab: the run's loss, learning rates, batch size and seed
    hparams = acc.PluginTagToContent("hparams")
    session = b"".join(hparams.values())
    for key in (b"loss.name", b"optim.lr_g", b"optim.lr_d", b"data.batch_size", b"seed", b"non_saturating"):
        assert key in session


def test_steps_count_batches_for_max_steps_and_checkpoints(mnist_root, tmp_path):
    run = tmp_path / "run"
    check(run_train(f"data.root={mnist_root}", f"hydra.run.dir={run}", *FAST, "trainer.max_epochs=5", "trainer.max_steps=11", "optim.d_steps=2"))
    ckpt = checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 11  # 11 batches, although 33 optimizer steps were taken
    d_state, g_state = ckpt["optimizer_states"]
    assert d_state["state"][0]["step"].item() == 22 and g_state["state"][0]["step"].item() == 11
    assert len(scalar_values(run, "train/loss_d")) == 11


def test_runs_never_share_a_folder(mnist_root):
    outputs = PROJECT / "outputs" / "runs"
    before = set(outputs.glob("*")) if outputs.exists() else set()
    args = [f"data.root={mnist_root}", *FAST, "trainer.max_steps=1", "callbacks=none", "logger=csv"]
    first, second = run_train(*args), run_train(*args)
    check(first), check(second)
    new = set(outputs.glob("*")) - before
    try:
        assert len(new) == 2
    finally:
        for folder in new:
            subprocess.run(["rm", "-rf", str(folder)], check=True)


def test_minimax_on_two_cpu_processes_with_ddp(mnist_root, tmp_path):
    run, probe = tmp_path / "run", tmp_path / "probe"
    check(run_train(
        "loss=minimax", "trainer.devices=2", f"data.root={mnist_root}", f"hydra.run.dir={run}", *FAST,
        "+callbacks.probe._target_=tests.probes.RecordBatches", f"+callbacks.probe.path={probe}",
    ))
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


@pytest.mark.parametrize("devices", [1, 2])
def test_learning_rate_sweep_makes_one_folder_per_job(mnist_root, tmp_path, devices):
    sweep = tmp_path / "sweep"
    result = check(run_train(
        "optim.lr_g=1e-4,2e-4", f"trainer.devices={devices}", f"data.root={mnist_root}",
        f"hydra.sweep.dir={sweep}", *FAST, multirun=True, timeout=400,
    ))
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [j.name.split("_")[0] for j in jobs] == ["0", "1"]
    for job, lr in zip(jobs, (1e-4, 2e-4)):
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert checkpoint(job / "checkpoints" / "last.ckpt")["hyper_parameters"]["optim"]["lr_g"] == lr
        assert len(list(job.rglob("events.out.tfevents.*"))) == 1
    # the DDP ranks re-ran one job each, not the sweep again somewhere else
    assert result.stdout.count("#0 :") == 1 and result.stdout.count("#1 :") == 1
    assert len(jobs) == 2


def test_resume_restores_networks_optimizers_and_counters(mnist_root, tmp_path):
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    check(run_train(f"data.root={mnist_root}", f"hydra.run.dir={first}", *FAST))
    ckpt_path = first / "checkpoints" / "last.ckpt"
    check(run_train(f"data.root={mnist_root}", f"hydra.run.dir={resumed}", *FAST, "trainer.max_epochs=2", f"ckpt_path={ckpt_path}"))
    end = checkpoint(resumed / "checkpoints" / "last.ckpt")
    assert end["global_step"] == 2 * BATCHES
    # Adam's step counts continue from the checkpoint's: the optimizers were restored
    assert [s["state"][0]["step"].item() for s in end["optimizer_states"]] == [2 * BATCHES, 2 * BATCHES]
    # training continued at epoch 1 (no second epoch 0)
    assert [p.name for p in (resumed / "samples").glob("*.png")] == ["epoch_001.png"]
    # and from the checkpoint's weights: the first logged step continues the first run's x-axis
    assert [e.step for e in events(resumed).Scalars("train/loss_g")][0] == BATCHES


def test_same_seed_same_losses_other_seed_other_losses(mnist_root, tmp_path):
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        runs[name] = tmp_path / name
        check(run_train(f"data.root={mnist_root}", f"hydra.run.dir={runs[name]}", *FAST, f"seed={seed}"))
    losses = {name: scalar_values(run, "train/loss_d") + scalar_values(run, "train/loss_g") for name, run in runs.items()}
    assert losses["a"] == losses["b"]
    assert losses["a"] != losses["c"]


@pytest.mark.parametrize(
    "override,expected",
    [
        ("optim.lr_g=0", "optim.lr_g must be a finite number > 0, got 0"),
        ("optim.lr_d=-0.001", "optim.lr_d must be a finite number > 0, got -0.001"),
        ("data.batch_size=0", "data.batch_size must be an integer >= 1, got 0"),
        ("optim.d_steps=0", "optim.d_steps must be an integer >= 1, got 0"),
    ],
)
def test_impossible_values_fail_before_training_with_one_line(mnist_root, tmp_path, override, expected):
    result = run_train(f"data.root={mnist_root}", f"hydra.run.dir={tmp_path}", override)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"error: {expected}"]
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("group", ["loss", "model"])
def test_unknown_option_lists_the_available_choices(group):
    result = run_train(f"{group}=nope")
    assert result.returncode != 0
    assert f"Could not find '{group}/nope'" in result.stderr
    assert "Available options" in result.stderr
    assert ("minimax" if group == "loss" else "mlp") in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_mnist_and_no_network_is_one_clear_message(tmp_path):
    # a proxy on a closed local port stands in for "no network", on any machine
    proxy = "http://127.0.0.1:9"
    env = {"http_proxy": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "no_proxy": ""}
    result = run_train(f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: MNIST not found in ") and "downloading it failed" in line
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in line and "data.root=" in line


def test_ctrl_c_leaves_a_checkpoint_to_resume_from(mnist_root, tmp_path):
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    cmd = [sys.executable, str(PROJECT / "train.py"), f"data.root={mnist_root}", f"hydra.run.dir={run}", *FAST, "trainer.max_epochs=1000"]
    log = tmp_path / "train.out"
    with open(log, "w") as out:  # a file, not a pipe: nothing can block on a full pipe buffer
        # A suite started in the background (`pytest &`) inherits an ignored SIGINT, and Python then
        # never turns Ctrl-C into KeyboardInterrupt: give the run the default disposition a terminal gives.
        proc = subprocess.Popen(cmd, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT, text=True,
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
    assert "Detected KeyboardInterrupt" in log.read_text()
    interrupted = run / "checkpoints" / "interrupted.ckpt"
    assert interrupted.is_file()
    stopped_at = checkpoint(interrupted)["global_step"]
    assert stopped_at >= 3 * BATCHES
    check(run_train(f"data.root={mnist_root}", f"hydra.run.dir={resumed}", *FAST, f"trainer.max_epochs={stopped_at // BATCHES + 2}", f"ckpt_path={interrupted}"))
    assert checkpoint(resumed / "checkpoints" / "last.ckpt")["global_step"] > stopped_at
