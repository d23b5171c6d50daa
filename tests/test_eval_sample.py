"""Metrics during training, and eval.py / sample.py on the checkpoints it leaves (eval.py is started
once as a user starts it; the rest runs the same Hydra apps and functions in this process)."""

import json
import subprocess
import sys

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import FAST, PROJECT, check, command_config, train_here
from gan_lightning import evaluate, sample

TAGS = ["eval/fid_mnist", "eval/classes_covered", "eval/kl_uniform", "eval/classifier_score"]
pytestmark = pytest.mark.xdist_group("trained_run")  # one worker under xdist, so the run is trained once (not under pytest 9.2: pytest-xdist#1386)
EVAL = ["eval.num_samples=200", "eval.every_n_epochs=1", "eval.batch_size=64"]


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def run_script(script: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT / script), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


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


def test_eval_reproduces_the_logged_metrics_and_writes_json(trained_run, mnist_root, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    result = run_script("eval.py", f"ckpt_path={ckpt}", f"data.root={mnist_root}", "num_samples=200", "device=cpu", cwd=tmp_path)
    check(result)
    assert list(tmp_path.iterdir()) == []  # no Hydra output folder or log where the command started
    printed = json.loads(result.stdout)
    assert json.loads((trained_run / "eval_last.json").read_text()) == printed
    logged = scalars(trained_run)
    for tag in TAGS:  # the same fixed noise and weights as the last epoch's evaluation
        assert printed[tag.removeprefix("eval/")] == pytest.approx(logged[tag][-1][1], rel=1e-4)


def test_sample_writes_a_grid_a_folder_and_an_interpolation(trained_run, tmp_path, monkeypatch):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    monkeypatch.chdir(tmp_path)  # Hydra must leave nothing in the folder the command starts from
    monkeypatch.setattr(sys, "argv", ["sample.py", f"ckpt_path={ckpt}", "n=16", "nrow=4"])
    sample.main()  # the Hydra app, as its command line starts it
    assert list(tmp_path.iterdir()) == []
    assert Image.open(trained_run / "samples_last.png").size == (4 * 30 + 2, 4 * 30 + 2)  # make_grid: 28 px + 2 px padding
    sample.sample(command_config("sample", f"ckpt_path={ckpt}", "n=12", f"out_dir={tmp_path / 'pngs'}"))
    pngs = sorted((tmp_path / "pngs").iterdir())
    assert len(pngs) == 12 and Image.open(pngs[0]).size == (28, 28)
    sample.sample(command_config("sample", f"ckpt_path={ckpt}", "interpolate=true", "rows=3", "steps=5", f"out={tmp_path / 'lerp.png'}"))
    assert Image.open(tmp_path / "lerp.png").size == (5 * 30 + 2, 3 * 30 + 2)


@pytest.mark.parametrize("main, says", [(evaluate.main, "data:\n  root: data"), (sample.main, "interpolate: false")])
def test_help_lists_the_commands_options(main, says, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["cmd", "--help"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "ckpt_path: null" in out and says in out and "Configuration groups" not in out  # train.py's groups are not its options


@pytest.mark.parametrize("main", [evaluate.main, sample.main])
def test_a_broken_checkpoint_gives_a_one_line_error(main, tmp_path, monkeypatch, capsys):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    monkeypatch.setattr(sys, "argv", ["cmd", f"ckpt_path={garbage}"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {garbage} is not a usable gan-lightning checkpoint")


def test_eval_scores_real_training_images_as_the_yardstick(trained_run, mnist_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "real.json"
    real = evaluate.evaluate(command_config("evaluate", "real_images=true", "parzen=true", f"data.root={mnist_root}",
                                            "num_samples=200", "batch_size=64", f"out={out}"))
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out)
    assert real["samples"] == "the first 200 MNIST training images" and "ckpt_path" not in real
    # the scores a trained generator gets, for real images: a lower FID and a higher Parzen estimate than its samples'
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    generated = evaluate.evaluate(command_config("evaluate", f"ckpt_path={ckpt}", "parzen=true", f"data.root={mnist_root}",
                                                 "num_samples=200", "batch_size=64", f"out={tmp_path / 'gen.json'}"))
    assert real["fid_mnist"] < generated["fid_mnist"] and real["parzen_ll"] > generated["parzen_ll"]
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["cmd", "real_images=true", f"ckpt_path={ckpt}"])
    with pytest.raises(SystemExit):
        evaluate.main()
    assert capsys.readouterr().err == "error: real_images=true scores MNIST training images, not a generator: leave out ckpt_path\n"


@pytest.mark.parametrize("main", [evaluate.main, sample.main])
@pytest.mark.parametrize("args, message", [(["ckpt_path=missing.ckpt"], "error: checkpoint not found: missing.ckpt"),
                                           ([], "error: ckpt_path=<file.ckpt> is required"),
                                           (["ckpt_path=x.ckpt", "device=gpu"], "error: device must be auto, cpu, cuda or cuda:<index>, got gpu")])
def test_bad_arguments_give_a_one_line_error(main, args, message, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["cmd", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(message)


def test_an_unknown_option_is_refused_by_hydra_as_for_train(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["cmd", "ckpt_path=x.ckpt", "colour=red"])
    with pytest.raises(SystemExit) as exit_:
        sample.main()
    assert exit_.value.code == 1 and "Could not override 'colour'" in capsys.readouterr().err


def test_eval_none_switches_evaluation_off(train_in_process, tmp_path):
    train_in_process("trainer.limit_train_batches=2", "eval=none")
    assert not any(tag.startswith("eval/") for tag in scalars(tmp_path / "run"))


@pytest.mark.parametrize("main, arg", [(evaluate.main, "out={blocked}/eval.json"), (sample.main, "out={blocked}/grid.png"),
                                       (sample.main, "out_dir={blocked}/pngs")])
def test_an_output_that_cannot_be_written_is_one_line(trained_run, mnist_root, main, arg, tmp_path, monkeypatch, capsys):
    blocked = tmp_path / "a_file"  # a folder that is a file: unwritable even for root
    blocked.write_text("")
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    counts = [f"data.root={mnist_root}", "num_samples=20"] if main is evaluate.main else ["n=4"]
    monkeypatch.setattr(sys, "argv", ["cmd", f"ckpt_path={ckpt}", *counts, "device=cpu", arg.format(blocked=blocked)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: could not write {blocked}/")
