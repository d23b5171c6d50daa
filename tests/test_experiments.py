"""Experiments as code: the sweep report on synthetic runs, and what TensorBoard makes of a run folder
(a real sweep's report and dashboard, and an Optuna search end to end: tests/test_sweeps.py)."""

import struct

import numpy as np
import yaml
from torch.utils.tensorboard import SummaryWriter

from gan_lightning.report import write_report
from gan_lightning.sweeps import write_status


def png_size(path):
    """(width, height) from the PNG header: the file is a real image, not an empty placeholder."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def tensorboard_view(logdir):
    """The runs (name -> its scalar and image tags) and the HPARAMS experiment that TensorBoard's
    backend makes of logdir."""
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.context import RequestContext
    from tensorboard.plugins.base_plugin import TBContext
    from tensorboard.plugins.hparams.backend_context import Context

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    runs = {run: [] for run in mux.Runs()}
    for plugin in ("scalars", "images"):
        for run, tags in mux.PluginRunToTagToContent(plugin).items():
            runs[run] += list(tags)
    hparams = Context(TBContext(logdir=str(logdir), data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir))))
    ctx = RequestContext()
    experiment = hparams.experiment_from_metadata(ctx, "", True, hparams.hparams_metadata(ctx, ""), None)
    return runs, experiment


def groups(tags):
    """Time Series' card groups, in its order: the tags' first parts, in the order of the sorted tags
    (TensorBoard's own sort also puts '/' and digits first, and compares numbers by value)."""
    return list(dict.fromkeys(tag.split("/", 1)[0] for tag in sorted(tags)))


def fake_run(folder, overrides, epochs_logged, max_epochs=2, eval_metrics=False, csv=False, max_steps=-1):
    """A run folder as train.py leaves it: .hydra/ config and overrides, and its scalars."""
    (folder / ".hydra").mkdir(parents=True)
    seed = int(dict(o.split("=") for o in overrides).get("seed", 42))
    config = {"seed": seed, "trainer": {"max_epochs": max_epochs, "max_steps": max_steps, "log_every_n_steps": 10}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    points = [(epoch * 100 + step, epoch) for epoch in range(epochs_logged) for step in (9, 49, 99)]
    if csv:
        (folder / "csv").mkdir()
        lines = ["epoch,step,train/d_fake,train/grad_norm_g"] + [f"{e},{s},{0.5 / (1 + s)},{1 + e}" for s, e in points]
        (folder / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
        return
    writer = SummaryWriter(folder)
    for step, epoch in points:
        writer.add_scalar("train/d_fake", 0.5 / (1 + step), step)
        writer.add_scalar("train/grad_norm_g", 1.0 + seed, step)
    for epoch in range(epochs_logged):  # the sample grid at the end of every epoch, the eval just before it
        writer.add_image("train/samples", np.zeros((1, 4, 4)), epoch * 100 + 99)
        if eval_metrics:
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


def test_report_counts_a_run_that_max_epochs_ended_before_max_steps_as_finished(tmp_path):
    sweep = tmp_path / "sweep"  # 100 steps an epoch: 2 epochs end at step 199 of max_steps=1000
    fake_run(sweep / "0_seed=1", ["seed=1"], 2, eval_metrics=True, max_steps=1000)
    fake_run(sweep / "1_seed=2", ["seed=2"], 1, eval_metrics=True, max_steps=1000)
    fake_run(sweep / "2_seed=3", ["seed=3"], 1, eval_metrics=True, max_steps=1000)
    write_status(sweep / "2_seed=3", status="completed", value=103.0)  # its job's own record says so
    text = write_report(sweep).read_text()
    left_out = [line for line in text.splitlines() if "unfinished" in line]
    assert len(left_out) == 1 and "`1_seed=2`" in left_out[0]  # 1 of 2 epochs, 99 of 1000 steps
