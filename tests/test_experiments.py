"""Experiments as code: the sweep report (an Optuna search end to end: tests/test_sweeps.py)."""

import struct

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter

from tests.conftest import FAST, run_train
from gan_lightning.report import write_report


def png_size(path):
    """(width, height) from the PNG header: the file is a real image, not an empty placeholder."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_report_of_a_sweep_pools_seeds_and_lists_the_crashed_job(mnist_root, tmp_path):
    sweep = tmp_path / "sweep"
    # Seeds 1 and 2 train; seed=-1 makes seed_everything raise, so the third Hydra job crashes.
    result = run_train(f"data.root={mnist_root}", *FAST, "eval.num_samples=256", "seed=1,2,-1",
                       f"hydra.sweep.dir={sweep}", multirun=True)
    assert result.returncode != 0, "the seed=-1 job should have crashed the sweep"

    report = write_report(sweep, early_steps=5)

    text = report.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| all runs |")]
    assert len(rows) == 1, text  # one configuration, two seeds pooled
    assert "| 2 (1, 2) |" in rows[0]
    crashed = [line for line in text.splitlines() if "seed=-1" in line]
    assert crashed and "left out" in crashed[0] and "failed: ValueError" in crashed[0], text  # with its error line
    for name in ("early_steps.png", "training_curves.png", "samples.png"):
        assert f"]({name})" in text
        width, height = png_size(sweep / name)
        assert width > 100 and height > 100
    # the runs evaluated after their last epoch: the table has their FID, and there is a FID plot
    assert float(rows[0].split("|")[3].split("±")[0]) > 0
    assert png_size(sweep / "fid_vs_epoch.png")[0] > 100

    # `tensorboard --logdir <sweep>`: each run's hparams tab row has its seed, beside the logged FID.
    for seed in (1, 2):
        events = next(sweep.glob(f"*seed={seed}*/tensorboard"))
        hparams = hparams_tab(events)
        assert hparams["seed"] == seed and "eval/fid_mnist" in hparams["metrics"]
        assert "eval/fid_mnist" in hparams["scalars"]


def hparams_tab(folder):
    """What TensorBoard's hparams plugin reads from a run's events: hparams, metric columns, scalars."""
    acc = EventAccumulator(str(folder))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    values = {name: value.number_value if value.HasField("number_value") else value.string_value for name, value in start.hparams.items()}
    return {**values, "metrics": [m.name.tag for m in experiment.metric_infos], "scalars": acc.Tags()["scalars"]}


def fake_run(folder, overrides, epochs_logged, max_epochs=2, eval_metrics=False, csv=False):
    """A run folder as train.py leaves it: .hydra/ config and overrides, and its scalars."""
    (folder / ".hydra").mkdir(parents=True)
    seed = int(dict(o.split("=") for o in overrides).get("seed", 42))
    config = {"seed": seed, "trainer": {"max_epochs": max_epochs, "max_steps": -1, "log_every_n_steps": 10}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    points = [(epoch * 100 + step, epoch) for epoch in range(epochs_logged) for step in (9, 49, 99)]
    if csv:
        (folder / "csv").mkdir()
        lines = ["epoch,step,train/d_fake,train/grad_norm_g"] + [f"{e},{s},{0.5 / (1 + s)},{1 + e}" for s, e in points]
        (folder / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
        return
    writer = SummaryWriter(folder / "tensorboard")
    for step, epoch in points:
        writer.add_scalar("train/d_fake", 0.5 / (1 + step), step)
        writer.add_scalar("train/grad_norm_g", 1.0 + seed, step)
        writer.add_scalar("epoch", epoch, step)
    if eval_metrics:
        for epoch in range(epochs_logged):
            writer.add_scalar("eval/fid_mnist", 100.0 / (epoch + 1) + seed, epoch * 100 + 99)
            writer.add_scalar("eval/classes_covered", 10, epoch * 100 + 99)
    writer.close()


def test_report_tables_eval_metrics_per_configuration_and_skips_unfinished_runs(tmp_path):
    sweep, rest = tmp_path / "sweep", tmp_path / "rest_of_the_grid"
    fake_run(sweep / "0_loss=minimax,seed=1", ["loss=minimax", "seed=1"], 2, eval_metrics=True)
    fake_run(sweep / "1_loss=minimax,seed=2", ["loss=minimax", "seed=2"], 2, eval_metrics=True)
    fake_run(sweep / "2_loss=non_saturating,seed=1", ["loss=non_saturating", "seed=1"], 1, eval_metrics=True)
    fake_run(rest / "0_loss=non_saturating,seed=2", ["loss=non_saturating", "seed=2"], 2, csv=True)

    text = write_report(sweep, more_sweeps=(rest,)).read_text()

    minimax = next(line for line in text.splitlines() if line.startswith("| loss=minimax |"))
    # final FID: 100/2 + seed over seeds 1, 2 -> 51.5 ± 0.71; best = final here; 10 classes.
    assert minimax.split("|")[2:6] == [" 2 (1, 2) ", " 51.50 ± 0.71 ", " 51.50 ± 0.71 ", " 10.0 ± 0.0 "]
    non_saturating = next(line for line in text.splitlines() if line.startswith("| loss=non_saturating |"))
    assert non_saturating.split("|")[2:4] == [" 1 (2) ", " n/a "]  # the CSV-logged run, no eval metrics
    unfinished = next(line for line in text.splitlines() if "`2_loss=non_saturating,seed=1`" in line)
    assert "unfinished: 1 of 2 epochs done" in unfinished
    assert png_size(sweep / "fid_vs_epoch.png")[0] > 100
