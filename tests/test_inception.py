"""Inception FID (off by default): computed from a weights file given in the config, and a clear
message, not a traceback, when the weights are not there.

torch-fidelity's real InceptionV3 weights are a 92 MB download, not available to tests: the weights
file here has torch-fidelity's format and layer names but seeded random values, with BatchNorm
statistics fitted to random images so that the features are neither zero nor exploding. The
numbers are therefore not Inception FIDs; what is tested is the path from config to metric.
"""

import urllib.error
from unittest import mock

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

IMAGES = 4  # per set: InceptionV3 at 299x299 takes about 0.2 s an image on one CPU core

pytest.importorskip("torch_fidelity", reason="Inception FID needs torch-fidelity, installed with the dev extra")
from torch_fidelity import feature_extractor_inceptionv3 as fidelity_inception  # noqa: E402

from tests.conftest import FAST, command_config, make_tiny_mnist, train_here  # noqa: E402
from tests.test_metrics import render_digits  # noqa: E402
from gan_lightning.data import scale_to_tanh_range  # noqa: E402
from gan_lightning.evaluate import evaluate  # noqa: E402
from gan_lightning.metrics.inception import WEIGHTS_FILE, InceptionUnavailable, inception_fid  # noqa: E402
from gan_lightning.metrics.quality import SampleQuality  # noqa: E402


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(0)
    with mock.patch.object(fidelity_inception.FeatureExtractorInceptionV3, "load_state_dict"), \
            mock.patch.object(fidelity_inception, "load_state_dict_from_url", return_value={}):
        net = fidelity_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # running statistics = those of the batch below
    torch.nn.Module.train(net, True)
    with torch.no_grad():
        net(torch.randint(0, 256, (IMAGES, 3, 299, 299), dtype=torch.uint8))
    path = tmp_path_factory.mktemp("inception") / WEIGHTS_FILE
    torch.save(net.state_dict(), path)
    return path


def test_fid_inception_is_zero_for_the_reference_itself_and_not_for_noise(weights_file):
    # The generated images reach Inception exactly as the reference does (range, channels, size):
    # the reference scored as generated images is at distance 0, up to the error of a matrix square
    # root from a few images. (Which of two image sets is nearer is Inception's and torchmetrics'
    # work, and these weights are random: not checked here.)
    reference = render_digits(IMAGES, seed=0)
    quality = SampleQuality(reference, batch_size=IMAGES, inception=inception_fid(str(weights_file)))
    itself = quality(scale_to_tanh_range(reference))
    noise = quality(torch.rand(IMAGES, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert noise["fid_inception"] > 0 and itself["fid_inception"] == pytest.approx(0.0, abs=1e-3 * noise["fid_inception"])
    assert set(noise) == {"fid_mnist", "classes_covered", "kl_uniform", "classifier_score", "fid_inception"}


def test_missing_weights_are_a_message_saying_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(InceptionUnavailable, match="Inception weights not found: .*nowhere.pth"):
        inception_fid(str(tmp_path / "nowhere.pth"))
    # No file given and no internet: the download fails; the message names the way out.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    offline = urllib.error.URLError("[Errno -2] Name or service not known")
    with mock.patch.object(fidelity_inception, "load_state_dict_from_url", side_effect=offline):
        with pytest.raises(InceptionUnavailable, match=r"URLError.*eval.inception.weights_path=<file>.*eval.inception.enabled=false"):
            inception_fid(None)
    not_weights = tmp_path / "not_weights.pth"
    torch.save({"something": torch.zeros(1)}, not_weights)
    with pytest.raises(InceptionUnavailable, match="could not load InceptionV3 weights from the file"):
        inception_fid(str(not_weights))


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
    """IMAGES test images: the reference set Inception FID reads in full."""
    return make_tiny_mnist(tmp_path_factory.mktemp("small_mnist"), n_train=64, n_test=IMAGES)


EVALUATION = [f"eval.num_samples={IMAGES}", f"eval.batch_size={IMAGES}", "eval.inception.enabled=true"]


def test_training_logs_fid_inception_with_a_weights_file_and_eval_py_reports_it_when_asked(small_mnist, weights_file, tmp_path):
    run = tmp_path / "run"
    train_here(f"data.root={small_mnist}", *FAST, *EVALUATION, f"eval.inception.weights_path={weights_file}", run_dir=run)
    events = EventAccumulator(str(run))
    events.Reload()
    assert [e.value > 0 for e in events.Scalars("eval/fid_inception")] == [True]
    assert len(events.Scalars("eval/fid_mnist")) == 1

    args = [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"data.root={small_mnist}", f"num_samples={IMAGES}", "device=cpu"]
    with_inception = evaluate(command_config("evaluate", *args, "inception=true", f"inception_weights={weights_file}"))
    assert with_inception["fid_inception"] > 0
    assert "fid_inception" not in evaluate(command_config("evaluate", *args))  # off by default


def test_training_without_the_weights_stops_before_the_first_step(small_mnist, tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.raises(InceptionUnavailable) as err:
        train_here(f"data.root={small_mnist}", *FAST, *EVALUATION, f"eval.inception.weights_path={missing}", run_dir=tmp_path / "run")
    assert str(err.value).startswith(f"Inception weights not found: {missing}")
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before training, not after an epoch
