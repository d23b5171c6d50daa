"""Checks on the composed config, so impossible values fail before any training starts."""

import math

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    pass


PRECISIONS = ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true", "64-true", "64",
              "transformer-engine", "transformer-engine-float16")

MATMUL_PRECISIONS = ("highest", "high", "medium")  # what torch.set_float32_matmul_precision takes

# key -> (test, allowed range as shown to the user)
RULES = {
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "null or an integer"),
    "optim.lr_g": (lambda v: v > 0 and math.isfinite(v), "a finite number > 0"),  # inf would only be caught by the NaN alarm at step 1
    "optim.lr_d": (lambda v: v > 0 and math.isfinite(v), "a finite number > 0"),
    "optim.d_steps": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "optim.iterations_per_step": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "optim.betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "data.batch_size": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    # 0 (or a fraction of too few batches) would end the run at once, "successfully", having trained nothing
    "trainer.limit_train_batches": (lambda v: (isinstance(v, int) and v >= 1) or (isinstance(v, float) and 0 < v <= 1), "null, an integer >= 1 or a fraction in (0, 1]"),
    "eval.every_n_epochs": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "eval.num_samples": (lambda v: isinstance(v, int) and v >= 2, "an integer >= 2 (FID needs two samples)"),
    "eval.parzen.valid_size": (lambda v: isinstance(v, int) and 1 <= v <= 10000, "an integer in [1, 10000] (MNIST's training images 50,000-60,000)"),
    "data.num_workers": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "data.on_device": (lambda v: v in ("auto", True, False), "auto, true or false"),
    # the values Lightning 2.6 takes; it would fail with a traceback on others
    "trainer.precision": (lambda v: str(v) in PRECISIONS, ", ".join(PRECISIONS)),
    "matmul_precision": (lambda v: v in MATMUL_PRECISIONS, "highest, high or medium"),
    "model.latent_dim": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "model.hidden_dim": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "model.channels": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "optim.momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "model.output_range": (lambda v: len(v) == 2 and v[0] < v[1] and all(map(math.isfinite, v)), "two finite numbers [low, high] with low < high"),
    "data.num_train": (lambda v: isinstance(v, int) and v >= 1, "null or an integer >= 1"),
    "optim.lr_schedule": (lambda v: v in ("linear", "cosine"), "null, linear or cosine"),
    "regularization.gradient_penalty_weight": (lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0"),
    "loss.d_output": (lambda v: v in ("probability", "margin", "score"), "probability, margin or score"),
    "callbacks.collapse_alarm.min_steps": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "optim.clip_grad_norm_d": (lambda v: v > 0 and math.isfinite(v), "null or a finite number > 0"),
    "optim.clip_grad_norm_g": (lambda v: v > 0 and math.isfinite(v), "null or a finite number > 0"),
    # Lightning refuses both under manual optimization (with a traceback, after building everything)
    "trainer.gradient_clip_val": (lambda v: False, "left out (Lightning cannot clip under the GAN's manual optimization): use optim.clip_grad_norm_d / optim.clip_grad_norm_g"),
    "trainer.accumulate_grad_batches": (lambda v: v == 1, "1 (Lightning cannot accumulate gradients under the GAN's manual optimization)"),
    "regularization.r1_weight": (lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0"),
    "regularization.real_label": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "regularization.instance_noise.sigma": (lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0"),
    "regularization.instance_noise.decay_steps": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "ema.decay": (lambda v: 0 <= v < 1, "null or in [0, 1)"),
    "ema.start_step": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "eval.batch_size": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    # 0 would end the run at once, "successfully", having trained nothing; Lightning's own message for a string is a TypeError
    "trainer.max_steps": (lambda v: isinstance(v, int) and (v == -1 or v >= 1), "-1 (no limit) or an integer >= 1"),
    "trainer.max_epochs": (lambda v: isinstance(v, int) and (v == -1 or v >= 1), "null, -1 (no limit) or an integer >= 1"),
    # switches: any other string (no, off) would read as true
    **{key: (lambda v: isinstance(v, bool), "true or false") for key in (
        "regularization.spectral_norm", "optim.simultaneous", "optim.optimizer.fused", "eval.inception.enabled", "eval.parzen.enabled", "data.download")},
}


# what optim.simultaneous (GAN.simultaneous_step, the plain update of Goodfellow et al. 2014) does not do
NOT_SIMULTANEOUS = {"ema.decay": None, "optim.lr_schedule": None, "regularization.gradient_penalty_weight": 0, "regularization.r1_weight": 0,
                    "regularization.instance_noise.sigma": 0, "optim.d_steps": 1}


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value is outside its allowed range."""
    if OmegaConf.select(cfg, "optim.simultaneous"):
        for key, plain in NOT_SIMULTANEOUS.items():
            if OmegaConf.select(cfg, key) not in (None, plain):
                raise ConfigError(f"optim.simultaneous=true (Goodfellow et al. 2014's update) cannot be combined with {key}={OmegaConf.select(cfg, key)}")
    for key, (ok, allowed) in RULES.items():
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        try:
            valid = bool(ok(value))
        except TypeError:
            valid = False
        if not valid:
            raise ConfigError(f"{key} must be {allowed}, got {value!r}")
    if OmegaConf.select(cfg, "callbacks.sgd_schedule") is not None and OmegaConf.select(cfg, "optim.optimizer._target_") != "torch.optim.SGD":
        # it sets SGD's momentum and decays rates made for SGD (lr 0.1): another optimizer would train with them silently
        raise ConfigError(f"callbacks.sgd_schedule (the SGD schedule of experiment=goodfellow2014) needs optim=sgd, "
                          f"got {OmegaConf.select(cfg, 'optim.optimizer._target_')}")
    clipped = [key for key in ("optim.clip_grad_norm_d", "optim.clip_grad_norm_g") if OmegaConf.select(cfg, key) is not None]
    if clipped and "mixed" in str(OmegaConf.select(cfg, "trainer.precision")) and OmegaConf.select(cfg, "optim.optimizer.fused"):
        # a fused optimizer unscales fp16 gradients inside its step, after any clipping could run; Lightning refuses it mid-run
        raise ConfigError(f"{clipped[0]} with trainer.precision={OmegaConf.select(cfg, 'trainer.precision')} needs optim.optimizer.fused=false")


def pick(cfg: DictConfig, keys) -> dict:
    """The values of dotted keys, as TensorBoard's hparams tab accepts them (scalars and strings)."""
    picked = {}
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if OmegaConf.is_config(value):
            value = str(OmegaConf.to_container(value))
        picked[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return picked
