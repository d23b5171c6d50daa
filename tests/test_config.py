"""Every option of every config group composes and builds; impossible values are refused."""

import os
from pathlib import Path
from unittest import mock

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from omegaconf import OmegaConf, open_dict, read_write

from gan_lightning.config import ConfigError, validate
from gan_lightning.train import CONFIG_DIR, build_trainer, several_processes

GROUPS = sorted(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, yaml.stem) for group in GROUPS for yaml in sorted((Path(CONFIG_DIR) / group).glob("*.yaml"))]


def composed(overrides=(), output_dir="/tmp/gan-compose-test"):
    """The config exactly as train.py gets it, with hydra's runtime values resolvable."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    with read_write(cfg.hydra):
        cfg.hydra.runtime.output_dir = output_dir
        cfg.hydra.runtime.cwd = str(Path(CONFIG_DIR).parent)
    HydraConfig.instance().set_config(cfg)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]  # as in train.py's task function, which gets the config without it
    OmegaConf.resolve(cfg)
    return cfg


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
    for node in (cfg.callbacks or {}).values():
        instantiate(node)
    for node in (cfg.logger or {}).values():
        instantiate(node)
    # the trainer itself, on CPU, whatever the option asks for (ddp included)
    instantiate(cfg.trainer, accelerator="cpu", logger=False, callbacks=[])


def test_defaults_are_the_reference_setup():
    cfg = composed()
    assert cfg.loss.name == "non_saturating" and cfg.model.name == "mlp"
    assert cfg.optim.betas == [0.5, 0.999] and cfg.optim.d_steps == 1 and cfg.data.batch_size == 64
    assert cfg.trainer.accelerator == "auto"


@pytest.mark.parametrize(
    "override,key",
    [
        ("optim.lr_g=0", "optim.lr_g"),
        ("optim.lr_d=-1e-4", "optim.lr_d"),
        ("data.batch_size=0", "data.batch_size"),
        ("optim.d_steps=0", "optim.d_steps"),
        ("optim.betas=[0.5,1.5]", "optim.betas"),
    ],
)
def test_impossible_values_name_the_key_and_the_allowed_range(override, key):
    with pytest.raises(ConfigError, match=rf"^{key} must be .+, got "):
        validate(composed([override]))


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


def test_the_nvml_cuda_check_is_dropped_only_without_the_nvidia_driver(monkeypatch):
    from gan_lightning import train

    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    with mock.patch.object(train.ctypes, "CDLL", return_value=object()):  # a driver: Lightning's setting stays
        train.use_default_cuda_check_without_nvidia_driver()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"
    with mock.patch.object(train.ctypes, "CDLL", side_effect=OSError("libnvidia-ml.so.1: cannot open shared object file")):
        train.use_default_cuda_check_without_nvidia_driver()
    assert "PYTORCH_NVML_BASED_CUDA_CHECK" not in os.environ
