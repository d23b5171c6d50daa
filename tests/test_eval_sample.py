"""Metrics during training, and eval.py / sample.py on the checkpoints it leaves (each script is
started once as a user starts it; the rest calls the same functions in this process)."""

import json
import subprocess
import sys

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import FAST, PROJECT, check, run_train, train_here
from gan_lightning.metrics import commands

TAGS = ["eval/fid_mnist", "eval/classes_covered", "eval/kl_uniform", "eval/classifier_score"]
pytestmark = pytest.mark.xdist_group("trained_run")  # one worker under xdist: the module's run is trained once
EVAL = ["eval.num_samples=200", "eval.every_n_epochs=1", "eval.batch_size=64"]


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT / script), *args], cwd=PROJECT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained_run(mnist_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train_here(f"data.root={mnist_root}", *FAST, "trainer.max_epochs=2", *EVAL, run_dir=run_dir)
    return run_dir


def test_training_logs_the_four_eval_scalars_every_epoch(trained_run):
    logged = scalars(trained_run)
    for tag in TAGS:
        assert len(logged[tag]) == 2, tag  # epochs 1 and 2 (every_n_epochs=1)
    assert all(1 <= value <= 10 for _, value in logged["eval/classes_covered"] + logged["eval/classifier_score"])
    assert all(value > 0 for _, value in logged["eval/fid_mnist"])


def test_eval_reproduces_the_logged_metrics_and_writes_json(trained_run, mnist_root):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    result = run_script("eval.py", f"ckpt_path={ckpt}", f"data.root={mnist_root}", "num_samples=200", "device=cpu")
    check(result)
    printed = json.loads(result.stdout)
    assert json.loads((trained_run / "eval_last.json").read_text()) == printed
    logged = scalars(trained_run)
    for tag in TAGS:  # the same fixed noise and weights as the last epoch's evaluation
        assert printed[tag.removeprefix("eval/")] == pytest.approx(logged[tag][-1][1], rel=1e-4)


def test_sample_writes_a_grid_a_folder_and_an_interpolation(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    check(run_script("sample.py", f"ckpt_path={ckpt}", "n=16", "nrow=4"))
    assert Image.open(trained_run / "samples_last.png").size == (4 * 30 + 2, 4 * 30 + 2)  # make_grid: 28 px + 2 px padding
    # the other two forms in this process (the command line above already showed the entry point)
    commands.sample(commands.parse([f"ckpt_path={ckpt}", "n=12", f"out_dir={tmp_path / 'pngs'}"], commands.SAMPLE_ARGS))
    pngs = sorted((tmp_path / "pngs").iterdir())
    assert len(pngs) == 12 and Image.open(pngs[0]).size == (28, 28)
    commands.sample(commands.parse([f"ckpt_path={ckpt}", "interpolate=true", "rows=3", "steps=5", f"out={tmp_path / 'lerp.png'}"], commands.SAMPLE_ARGS))
    assert Image.open(tmp_path / "lerp.png").size == (5 * 30 + 2, 3 * 30 + 2)


@pytest.mark.parametrize("main", [commands.eval_main, commands.sample_main])
def test_a_broken_checkpoint_gives_a_one_line_error(main, tmp_path, monkeypatch, capsys):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    monkeypatch.setattr(sys, "argv", ["cmd", f"ckpt_path={garbage}"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {garbage} is not a usable gan-lightning checkpoint")


@pytest.mark.parametrize("main", [commands.eval_main, commands.sample_main])
@pytest.mark.parametrize("args, message", [(["ckpt_path=missing.ckpt"], "error: checkpoint not found: missing.ckpt"),
                                           ([], "error: ckpt_path=<file.ckpt> is required"),
                                           (["ckpt_path=x.ckpt", "colour=red"], "error: unknown argument 'colour=red'")])
def test_bad_arguments_give_a_one_line_error(main, args, message, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["cmd", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(message)


def test_ddp_evaluation_equals_one_process(mnist_root, tmp_path, capsys):
    """Two CPU processes split the evaluation; eval.py's evaluation on one process must find the same
    numbers for the same weights (the last checkpoint). Uses the minimax variant's checkpoint on purpose."""
    run_dir = tmp_path / "ddp"
    ddp = check(run_train(*FAST, f"data.root={mnist_root}", f"hydra.run.dir={run_dir}", "trainer.devices=2", "loss=minimax",
                          "trainer.limit_train_batches=2", *EVAL, timeout=400, env={"PYTHONWARNINGS": "default"}))
    assert "self.log('eval/" not in ddp.stdout + ddp.stderr  # no Lightning warning per metric and evaluation
    printed = commands.evaluate(commands.parse([f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"data.root={mnist_root}",
                                                "num_samples=200", "device=cpu"], commands.EVAL_ARGS))
    logged = scalars(run_dir)
    for tag in TAGS:
        assert printed[tag.removeprefix("eval/")] == pytest.approx(logged[tag][-1][1], rel=1e-4)


def test_eval_none_switches_evaluation_off(train_in_process, tmp_path):
    train_in_process("trainer.limit_train_batches=2", "eval=none")
    assert not any(tag.startswith("eval/") for tag in scalars(tmp_path / "run"))
