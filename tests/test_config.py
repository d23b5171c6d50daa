"""Every option of every config group composes and builds; impossible values are refused."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from omegaconf import OmegaConf
from torch import nn

from gan_lightning.metrics.callback import EvaluateGenerator
from gan_lightning.config import ConfigError, validate
from gan_lightning.losses import gan_discriminator_loss, non_saturating_generator_loss
from gan_lightning.train import CONFIG_DIR, build_trainer, several_processes, train
from tests.conftest import compose_config

GROUPS = sorted(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, yaml.stem) for group in GROUPS for yaml in sorted((Path(CONFIG_DIR) / group).glob("*.yaml"))]


def composed(overrides=(), output_dir="/tmp/gan-compose-test"):
    return compose_config(*overrides, output_dir=output_dir)


def test_there_is_something_to_compose():
    assert {"loss", "model", "data", "optim", "trainer", "logger", "callbacks"} <= set(GROUPS)
    assert ("loss", "minimax") in OPTIONS and ("loss", "non_saturating") in OPTIONS


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_builds(group, option, tmp_path):
    cfg = composed([f"{group}={option}", "trainer.accelerator=cpu"], output_dir=str(tmp_path))
    validate(cfg)
    module = instantiate(cfg.module, _recursive_=False, _convert_="all")
    assert len(module.configure_optimizers()) == 2
    instantiate(cfg.data.datamodule)
    callbacks = [instantiate(node) for node in (cfg.callbacks or {}).values() if node is not None]  # as train() builds them
    if (group, option) == ("eval", "none"):  # no evaluation callback at all, not one switched off
        assert not any(isinstance(c, EvaluateGenerator) for c in callbacks)
    for node in (cfg.logger or {}).values():
        instantiate(node)
    # the trainer itself, on CPU, whatever the option asks for (ddp included)
    instantiate(cfg.trainer, accelerator="cpu", logger=False, callbacks=[])


def test_the_default_config_builds_the_reference_gan():
    """What `python train.py` trains, read from the objects built, not from the yaml."""
    cfg = composed()
    module = instantiate(cfg.module, _recursive_=False, _convert_="all")
    linears = lambda net: [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]
    assert linears(module.generator) == [(100, 256), (256, 256), (256, 784)]
    assert linears(module.discriminator) == [(784, 256), (256, 256), (256, 1)]
    assert module.generator_loss.func is non_saturating_generator_loss and module.discriminator_loss.func is gan_discriminator_loss
    assert module.d_steps == 1
    assert (module.r1_weight, module.gp_weight, module.noise_sigma, module.generator_ema) == (0.0, 0.0, 0.0, None)
    opt_d, opt_g = module.configure_optimizers()
    for opt in (opt_d, opt_g):
        assert type(opt).__name__ == "Adam"
        assert opt.param_groups[0]["lr"] == 2e-4 and opt.param_groups[0]["betas"] == (0.5, 0.999)
    assert instantiate(cfg.data.datamodule).batch_size == 64
    assert cfg.trainer.accelerator == "auto"


@pytest.mark.parametrize(
    "override,expected",
    [
        ("optim.lr_g=0", "optim.lr_g must be a finite number > 0, got 0"),
        ("optim.lr_d=-0.001", "optim.lr_d must be a finite number > 0, got -0.001"),
        ("data.batch_size=0", "data.batch_size must be an integer >= 1, got 0"),
        ("optim.d_steps=0", "optim.d_steps must be an integer >= 1, got 0"),
        ("optim.iterations_per_step=0", "optim.iterations_per_step must be an integer >= 1, got 0"),
        ("optim.betas=[0.5,1.5]", "optim.betas must be two numbers in [0, 1), got [0.5, 1.5]"),
        ("seed=abc", "seed must be null or an integer, got 'abc'"),
        ("optim.lr_g=inf", "optim.lr_g must be a finite number > 0, got inf"),
        ("trainer.limit_train_batches=0", "trainer.limit_train_batches must be null, an integer >= 1 or a fraction in (0, 1], got 0"),
        ("eval.num_samples=1", "eval.num_samples must be an integer >= 2 (FID needs two samples), got 1"),
        ("eval.parzen.valid_size=0", "eval.parzen.valid_size must be an integer in [1, 10000] (MNIST's training images 50,000-60,000), got 0"),
        ("optim.clip_grad_norm_d=0", "optim.clip_grad_norm_d must be null or a finite number > 0, got 0"),
        ("+trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val must be left out (Lightning cannot clip under the GAN's manual "
                                          "optimization): use optim.clip_grad_norm_d / optim.clip_grad_norm_g, got 1.0"),
        ("+trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches must be 1 (Lightning cannot accumulate gradients under "
                                               "the GAN's manual optimization), got 2"),
        ("loss.d_output=logit", "loss.d_output must be probability, margin or score, got 'logit'"),
        ("model.output_range=[1,-1]", "model.output_range must be two finite numbers [low, high] with low < high, got [1, -1]"),
        ("regularization.r1_weight=inf", "regularization.r1_weight must be a finite number >= 0, got inf"),
        ("regularization.instance_noise.sigma=inf", "regularization.instance_noise.sigma must be a finite number >= 0, got inf"),
        ("matmul_precision=low", "matmul_precision must be highest, high or medium, got 'low'"),
        ("eval.batch_size=0", "eval.batch_size must be an integer >= 1, got 0"),
        ("trainer.max_steps=0", "trainer.max_steps must be -1 (no limit) or an integer >= 1, got 0"),
        ("trainer.max_steps=abc", "trainer.max_steps must be -1 (no limit) or an integer >= 1, got 'abc'"),
        ("trainer.max_epochs=0", "trainer.max_epochs must be null, -1 (no limit) or an integer >= 1, got 0"),
        ("regularization.spectral_norm=no", "regularization.spectral_norm must be true or false, got 'no'"),
        ("data.download=off", "data.download must be true or false, got 'off'"),
    ],
)
def test_impossible_values_name_the_key_and_the_allowed_range(override, expected):
    with pytest.raises(ConfigError) as err:
        validate(composed([override]))
    assert str(err.value) == expected


@pytest.mark.parametrize(
    "devices,num_nodes,expected",
    [(1, 1, False), (2, 1, True), ("2", 1, True), (-1, 1, True), ("auto", 1, True), ([0], 1, False), ([0, 1], 1, True), (1, 2, True)],
)
def test_ddp_is_chosen_for_several_processes(devices, num_nodes, expected):
    assert several_processes(OmegaConf.create({"devices": devices, "num_nodes": num_nodes})) is expected


@pytest.mark.parametrize("bar_on", [True, False])
def test_the_progress_bar_is_redrawn_every_few_batches_and_can_be_switched_off(bar_on, tmp_path):
    cfg = composed(["trainer.accelerator=cpu", f"trainer.enable_progress_bar={bar_on}"], output_dir=str(tmp_path))
    callbacks = [instantiate(node) for node in cfg.callbacks.values()]
    trainer = build_trainer(cfg, callbacks, loggers=[])
    if bar_on:
        assert isinstance(trainer.progress_bar_callback, TQDMProgressBar) and trainer.progress_bar_callback.refresh_rate == 10
    else:  # the configured bar gives way instead of Lightning refusing the pair
        assert trainer.progress_bar_callback is None
        assert not any(isinstance(c, ProgressBar) for c in trainer.callbacks)


def test_the_simultaneous_update_refuses_what_it_does_not_do():
    validate(composed(["experiment=goodfellow2014"]))
    with pytest.raises(ConfigError, match=r"^optim.simultaneous=true \(Goodfellow et al. 2014's update\) cannot be combined with ema.decay=0.999$"):
        validate(composed(["experiment=goodfellow2014", "ema=enabled"]))
    with pytest.raises(ConfigError, match=r"cannot be combined with regularization.gradient_penalty_weight=10.0$"):
        validate(composed(["experiment=goodfellow2014", "regularization=gradient_penalty"]))
    with pytest.raises(ConfigError, match=r"^optim.simultaneous=true runs in one process \(trainer.devices=1\)"):
        train(composed(["experiment=goodfellow2014", "trainer.devices=2"]))  # refused before anything starts
    with pytest.raises(ConfigError, match=r"^optim.simultaneous must be true or false, got 'no'$"):
        validate(composed(["experiment=goodfellow2014", "optim.simultaneous=no"]))
    with pytest.raises(ConfigError, match=r"^callbacks.sgd_schedule \(the SGD schedule of experiment=goodfellow2014\) needs optim=sgd, got torch.optim.Adam$"):
        validate(composed(["experiment=goodfellow2014", "optim=adam"]))
