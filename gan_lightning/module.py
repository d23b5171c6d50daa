"""The GAN as a LightningModule: both networks, alternating D and G steps by manual optimization."""

import inspect
import math
import random
from contextlib import contextmanager

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gan_lightning.checkpoint import CheckpointError
from gan_lightning.compat import bare, count_generator_steps_only, forget_logged_step_values, group_by_device_and_dtype, resume_where_training_stopped, uncounted
from gan_lightning.loggers import last_batch_step
from gan_lightning.regularizers import apply_spectral_norm, gradient_penalty, instance_noise_std, r1_penalty

SAMPLE_NOISE_SEED = 1234  # the same sample noise in every run, so grids are comparable between runs


def rng_states(device: torch.device) -> dict:
    """The global random generators' states, as types that torch.load(weights_only=True) accepts."""
    kind, key, *rest = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "numpy": (kind, key.tolist(), *rest), "python": random.getstate()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    kind, key, *rest = states["numpy"]
    np.random.set_state((kind, np.array(key, dtype=np.uint32), *rest))
    random.setstate(states["python"])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


@contextmanager
def frozen(net: nn.Module):
    """No weight gradients for net inside; gradients still flow through it to its input."""
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class EMA(AveragedModel):
    """A moving average of a network's weights and buffers: AveragedModel with get_ema_multi_avg_fn,
    the same numbers and state_dict, without its host syncs. AveragedModel.update_parameters asks
    the device-side counter n_averaged whether averaging has started (`self.n_averaged == 0`), two
    device-to-host syncs per training step on a GPU; here the answer is a Python bool, read from
    the counter once per process (so also after a resume) and then kept."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self._started: bool | None = None

    def started(self) -> bool:
        if self._started is None:
            self._started = bool(self.n_averaged.item() > 0)
        return self._started

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._started = None  # n_averaged may have changed

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        averages = [t.detach() for t in (*self.module.parameters(), *self.module.buffers())]
        current = [t.detach().to(a.device) for a, t in zip(averages, (*model.parameters(), *model.buffers()))]
        if not self.started():  # the first update copies, as AveragedModel's (once: no fused copy needed)
            for average, value in zip(averages, current):
                average.copy_(value)
        else:
            grouped = group_by_device_and_dtype([averages, current])
            for (device, _), ([group_averages, group_current], _) in grouped.items():
                self.multi_avg_fn(group_averages, group_current, self.n_averaged.to(device))
        self.n_averaged += 1
        self._started = True


class GAN(L.LightningModule):
    """min_G max_D E_x[log D(x)] + E_z[log(1 - D(G(z)))], with the generator loss chosen by config.

    The arguments are the (resolved) config nodes of model, loss and optim, kept as this module's
    hyperparameters so that GAN.load_from_checkpoint(path) rebuilds it with nothing else at hand.

    Step counting: each batch is one training step, made of optim.iterations_per_step iterations
    (1 by default) of optim.d_steps discriminator updates, each on its own real minibatch of
    data.batch_size images (the batch holds all of them), and one generator update.
    trainer.global_step counts training steps (the last generator update of each), so max_steps,
    log_every_n_steps, checkpoint intervals and the TensorBoard x-axis all count batches. Several
    iterations per step pay Lightning's per-batch work once for all of them (BENCHMARKS.md).

    Regularisers (regularization: R1, gradient penalty, spectral norm, label smoothing, instance
    noise) and the generator EMA (ema.decay) are off when their config node is
    absent or says so, and then cost nothing.
    """

    def __init__(self, model: dict, loss: dict, optim: dict, num_sample_images: int = 64, regularization: dict | None = None, ema: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        reg = regularization or {}
        self.generator = instantiate(model["generator"])
        self.discriminator = instantiate(model["discriminator"])
        if reg.get("spectral_norm", False):
            apply_spectral_norm(self.discriminator)
        self.generator_loss = bare(instantiate(loss["generator"]))
        self.discriminator_loss = bare(instantiate(loss["discriminator"]))
        real_label = self.real_label = reg.get("real_label", 1.0)  # CollapseAlarm reads it: D(x) cannot pass it
        if real_label != 1.0:
            if "real_label" not in inspect.signature(self.discriminator_loss).parameters:
                raise ValueError(f"regularization.real_label (label smoothing) needs a loss with a real target (non_saturating, minimax, least_squares), not {loss.get('name')}")
            self.discriminator_loss = bare(instantiate(loss["discriminator"], real_label=real_label))
        self.latent_dim = self.generator.latent_dim
        # The range of G's output activation; the data are scaled to it, grids and metrics read it.
        self.output_range = tuple(model.get("output_range", (-1.0, 1.0)))
        self.d_steps = optim["d_steps"]
        self.iterations = optim.get("iterations_per_step", 1)  # absent from older checkpoints' hyperparameters
        self.clip_grad_norm = (optim.get("clip_grad_norm_d"), optim.get("clip_grad_norm_g"))
        self.d_output = loss.get("d_output", "score")  # how D's output reads: probability, margin (hinge) or score
        self.gp_weight = reg.get("gradient_penalty_weight", 0.0)
        self.simultaneous = optim.get("simultaneous", False)  # Goodfellow et al. 2014's update (simultaneous_step)
        self.r1_weight = reg.get("r1_weight", 0.0)
        noise_cfg = reg.get("instance_noise") or {}
        self.noise_sigma, self.noise_decay_steps = noise_cfg.get("sigma", 0.0), noise_cfg.get("decay_steps", 1)
        self.scheduled = bool(optim.get("lr_schedule"))
        ema = ema or {}
        self.generator_ema = None
        self.ema_start_step = ema.get("start_step", 0)
        if ema.get("decay") is not None:
            # A submodule, so it is saved in checkpoints and moved to the device with the rest.
            self.generator_ema = EMA(self.generator, ema["decay"])
            self.generator_ema.requires_grad_(False)
        self.last_loss: tuple[str, torch.Tensor] | None = None  # the loss behind the update being applied, for alarms
        self.measure_g, self.grad_norm_g_before_clip = False, None  # step_generator and the clipping hook
        self.logged_last_batch = False  # whether the last batch logged the training scalars (log_training)
        self.resumed_rng_states: dict | None = None  # from a checkpoint, until training starts
        self.resumed_schedule_steps: int | None = None  # the length of a resumed run's learning-rate schedule
        noise = torch.randn(num_sample_images, self.latent_dim, generator=torch.Generator().manual_seed(SAMPLE_NOISE_SEED))
        self.register_buffer("sample_noise", noise)

    # Exact resume: the noise (and instance noise) a resumed run draws continues the checkpointed
    # run's stream, instead of the one train() re-seeds. Lightning restores the model before it
    # builds the data loaders and optimizers; the states are set when training starts, so that
    # nothing in between can draw from them. Under DDP only rank 0's states are saved: with a seed,
    # every process has the same ones (seeded alike, drawing as many times).
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = rng_states(self.device)

    def on_train_start(self) -> None:
        if self.resumed_rng_states is not None:
            set_rng_states(self.resumed_rng_states, self.device)
            self.resumed_rng_states = None

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # The last batch's scalars have been written (loggers, callback_metrics, progress bar): so
        # that Lightning does not read them again at every batch until they are logged again.
        if self.logged_last_batch:
            forget_logged_step_values(self.trainer)
            self.logged_last_batch = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=self.device)

    def configure_optimizers(self):
        optim = self.hparams.optim
        opt_d = instantiate(optim["optimizer"], params=self.discriminator.parameters(), lr=optim["lr_d"])
        opt_g = instantiate(optim["optimizer"], params=self.generator.parameters(), lr=optim["lr_g"])
        if not self.scheduled:
            return opt_d, opt_g
        # Stepped once per batch (see training_step) over the whole run, down to 0 at its end.
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("optim.lr_schedule needs a run of known length: set trainer.max_epochs or trainer.max_steps")
        schedules = {
            "linear": lambda opt: torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=int(total)),
            "cosine": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(total)),
        }
        if self.resumed_schedule_steps is not None and total > self.resumed_schedule_steps:
            # the restored schedule keeps its length: past its end cosine's rates rise again, linear's stay 0
            raise CheckpointError(f"cannot resume a run whose optim.lr_schedule={optim['lr_schedule']} spans {self.resumed_schedule_steps} steps "
                                  f"for {int(total)} steps: past its end the rates would {'rise again' if optim['lr_schedule'] == 'cosine' else 'stay 0'}; "
                                  "resume with the first run's trainer.max_steps / max_epochs, or start a new run from its weights")
        make = schedules[optim["lr_schedule"]]
        return [opt_d, opt_g], [make(opt_d), make(opt_g)]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming with other learning rates (ckpt_path=... optim.lr_d=...): Lightning restores the
        optimizers' param groups, rates included, after this hook; scale the saved rates (and a
        schedule's) to this run's config, so that training, config.yaml, the hparams tab and the
        next checkpoint all tell the same rate. A no-op when the rates did not change.
        The random generators' states are kept for on_train_start (exact resume), and the loops'
        progress is made to resume where the run stopped, also when max_steps stopped it."""
        self.resumed_rng_states = checkpoint.get("rng_states")
        schedule = (checkpoint.get("lr_schedulers") or [{}])[0]  # the run's length it was made for
        self.resumed_schedule_steps = schedule.get("T_max", schedule.get("total_iters"))
        resume_where_training_stopped(checkpoint)  # else a resume with max_steps can skip epochs (compat.py)
        old = checkpoint.get("hyper_parameters", {}).get("optim", {})
        for index, key in enumerate(("lr_d", "lr_g")):  # configure_optimizers' order
            if not old.get(key) or old[key] == self.hparams.optim[key]:
                continue
            factor = self.hparams.optim[key] / old[key]
            for state in checkpoint.get("optimizer_states", [])[index : index + 1]:
                for group in state["param_groups"]:
                    group["lr"] *= factor
                    if "initial_lr" in group:  # set by schedulers
                        group["initial_lr"] *= factor
            for state in checkpoint.get("lr_schedulers", [])[index : index + 1]:
                for name in ("base_lrs", "_last_lr"):
                    if name in state:
                        state[name] = [lr * factor for lr in state[name]]

    def instance_noise(self, images: torch.Tensor, std: float) -> torch.Tensor:
        return images + std * torch.randn_like(images) if std > 0 else images

    def d_penalties(self, real: torch.Tensor, fake: torch.Tensor, real_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unweighted penalties the config asks for (empty when none)."""
        penalties = {}
        if self.r1_weight:
            penalties["r1"] = r1_penalty(real_logits, real)
        if self.gp_weight:
            penalties["gp"] = gradient_penalty(self.discriminator, real, fake)
        return penalties

    def simultaneous_step(self, opt_d, opt_g, real: torch.Tensor, measure: bool) -> tuple[dict, torch.Tensor, torch.Tensor | None]:
        """One iteration as the authors' pylearn2 code of Goodfellow et al. 2014 made it (optim.simultaneous=true):
        one fake batch and one pass of D (one dropout mask) over real and fake give both losses; D steps
        by the gradient of its loss and G by that of its own, both taken before either update."""
        n = real.shape[0]
        fake = self.generator(self.noise(n))
        real_logits, fake_logits = self.discriminator(torch.cat([real, fake])).float().split(n)
        loss_d, loss_g = self.discriminator_loss(real_logits, fake_logits), self.generator_loss(fake_logits)
        opt_d.zero_grad(set_to_none=True)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_d, inputs=list(self.discriminator.parameters()), retain_graph=True)
        self.manual_backward(loss_g, inputs=list(self.generator.parameters()))
        self.last_loss = ("loss_d", loss_d)
        opt_d.step()
        self.last_loss = ("loss_g", loss_g)
        grad_norm_g = self.step_generator(opt_g, measure)
        return {"loss_d": loss_d, "real_logits": real_logits, "fake_logits": fake_logits, "penalties": {}}, loss_g, grad_norm_g

    def logging_step(self) -> bool:
        """Whether this step logs its scalars: every log_every_n_steps steps, at the end of every epoch
        and of the run, so that a run shorter than log_every_n_steps shows its scalars too
        (CollapseAlarm checks then as well)."""
        trainer = self.trainer
        return ((self.global_step + 1) % max(trainer.log_every_n_steps, 1) == 0 or trainer.is_last_batch
                or self.global_step + 1 == trainer.max_steps)

    def training_step(self, real: torch.Tensor) -> None:
        """optim.iterations_per_step iterations, each of optim.d_steps D updates on real minibatches of
        their own, then one G update (the loader serves them all, see data.MNISTDataModule); on
        logging steps, the scalars of the last iteration."""
        opt_d, opt_g = self.optimizers()
        count_generator_steps_only(opt_d)  # see the class docstring
        minibatches = self.iterations * (1 if self.simultaneous else self.d_steps)
        if real.shape[0] % minibatches:
            raise ValueError(f"a training batch of {real.shape[0]} images does not split into optim.d_steps={self.d_steps} "
                             f"x optim.iterations_per_step={self.iterations} equal minibatches")
        log_now = self.logging_step()
        noise_std = instance_noise_std(self.global_step, self.noise_sigma, self.noise_decay_steps)
        reals = real.chunk(self.iterations) if self.iterations > 1 else (real,)
        for real_i in reals[:-1]:
            with uncounted(opt_g):  # global_step counts training steps: only their last G update (class docstring)
                self.iteration(opt_d, opt_g, real_i, noise_std, measure=False)
        d, loss_g, grad_norm_g = self.iteration(opt_d, opt_g, reals[-1], noise_std, measure=log_now)
        if log_now:  # computing and syncing these only when they are written keeps the loop fast
            self.log_training(d, loss_g, grad_norm_g, noise_std)  # before the schedules step: train/lr_* as this step used them
        if self.scheduled:
            for schedule in self.lr_schedulers():
                schedule.step()

    def iteration(self, opt_d, opt_g, real: torch.Tensor, noise_std: float, measure: bool) -> tuple[dict, torch.Tensor, torch.Tensor | None]:
        """Goodfellow et al.'s Algorithm 1 once: optim.d_steps D updates, then one G update (both at
        once with optim.simultaneous). Returns the last D update's outputs, G's loss and, when
        measure, G's gradient norm."""
        if self.simultaneous:
            return self.simultaneous_step(opt_d, opt_g, real, measure)
        d = self.discriminator_step(opt_d, real.chunk(self.d_steps), noise_std)
        loss_g, grad_norm_g = self.generator_step(opt_g, d["fake"], noise_std, measure=measure)
        if self.generator_ema is not None and self.global_step >= self.ema_start_step:
            self.generator_ema.update_parameters(self.generator)
        return d, loss_g, grad_norm_g

    def discriminator_step(self, opt_d, reals: tuple[torch.Tensor, ...], noise_std: float) -> dict:
        """One D update per real minibatch, each against a fresh fake batch. Only the last fake
        batch is generated with a graph through G: the G step reuses it (G has not changed since, so
        it is exactly G(z) now, and the step saves a G forward); the others need none."""
        for i, real in enumerate(reals):
            with torch.set_grad_enabled(i == len(reals) - 1):
                fake = self.generator(self.noise(real.shape[0]))
            real_in, fake_in = self.instance_noise(real, noise_std), self.instance_noise(fake.detach(), noise_std)
            if self.r1_weight:
                real_in = real_in.detach().requires_grad_(True)  # R1 differentiates D's logits by these
            # One D pass over real and fake together: D scores samples independently.
            # Losses in fp32 under mixed precision: fp16's range ends at 65504, which the loss scaler's
            # scale (2^16 at the start) times a loss above 1 exceeds. (A no-op in fp32.)
            real_logits, fake_logits = self.discriminator(torch.cat([real_in, fake_in])).float().split(real.shape[0])
            loss_d = self.discriminator_loss(real_logits, fake_logits)
            penalties = {}
            if self.r1_weight or self.gp_weight:
                penalties = self.d_penalties(real_in, fake_in, real_logits)
                loss_d = loss_d + self.r1_weight / 2 * penalties.get("r1", 0.0) + self.gp_weight * penalties.get("gp", 0.0)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            self.last_loss = ("loss_d", loss_d)
            opt_d.step()  # gradient clipping, if asked for: on_before_optimizer_step
        return {"loss_d": loss_d, "real_logits": real_logits, "fake_logits": fake_logits, "penalties": penalties, "fake": fake}

    def generator_step(self, opt_g, fake: torch.Tensor, noise_std: float, measure: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """G's update against the freshly updated D, on the last D step's fake batch; D's own weight
        gradients are not needed for it. Returns G's loss and, when measure, its gradient norm."""
        with frozen(self.discriminator):
            fake_logits = self.discriminator(self.instance_noise(fake, noise_std)).float()
        loss_g = self.generator_loss(fake_logits)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        self.last_loss = ("loss_g", loss_g)
        return loss_g, self.step_generator(opt_g, measure)

    def step_generator(self, opt_g, measure: bool) -> torch.Tensor | None:
        """G's update; when measure, the total norm of the gradient it was given (train/grad_norm_g).
        Read after the step: in fp16 mixed precision the gradient scaler (or fused Adam) has then
        unscaled the gradients in place (inf when it skipped this step for an overflow), so the norm
        is not multiplied by the loss scale. When optim.clip_grad_norm_g clips, the norm before
        clipping, kept by on_before_optimizer_step: the clipped one would only repeat the threshold."""
        self.grad_norm_g_before_clip, self.measure_g = None, measure
        opt_g.step()
        if not measure:
            return None
        return self.grad_norm_g_before_clip if self.grad_norm_g_before_clip is not None else self.generator_grad_norm()

    def generator_grad_norm(self) -> torch.Tensor:
        return torch.nn.utils.get_total_norm([p.grad for p in self.generator.parameters() if p.grad is not None])

    def on_before_optimizer_step(self, optimizer) -> None:
        """Gradient clipping (optim.clip_grad_norm_d / _g). Lightning calls this inside opt.step(),
        after fp16's gradient scaler has unscaled the gradients: clipping right after
        manual_backward would clip the loss-scaled ones. (The alarms' callbacks ran just before.)"""
        if not any(self.clip_grad_norm):  # off: nothing per step
            return
        is_g = optimizer is not self.trainer.optimizers[0]  # configure_optimizers' order
        clip = self.clip_grad_norm[is_g]
        if clip:
            if is_g and self.measure_g:
                self.grad_norm_g_before_clip = self.generator_grad_norm()
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def log_training(self, d: dict, loss_g: torch.Tensor, grad_norm_g: torch.Tensor, noise_std: float) -> None:
        """The training scalars of this step (the last D update's and the G update's); every name in
        one place. How D's output reads depends on the loss (loss.d_output): a probability for the
        logistic losses (train/d_real, train/d_fake: mean D(x), D(G(z))), a raw score otherwise."""
        real, fake = d["real_logits"].detach(), d["fake_logits"].detach()
        probability, margin = self.d_output == "probability", self.d_output == "margin"
        lr_d, lr_g = (opt.param_groups[0]["lr"] for opt in self.trainer.optimizers) if self.scheduled else (None, None)
        metrics = {
            "train/loss_d": d["loss_d"].detach(),
            "train/loss_g": loss_g.detach(),
            "train/d_real": torch.sigmoid(real).mean() if probability else None,
            "train/d_fake": torch.sigmoid(fake).mean() if probability else None,
            "train/d_real_score": None if probability else real.mean(),
            "train/d_fake_score": None if probability else fake.mean(),
            # hinge: the share of samples D already separates by its margin (scores >= 1 real, <= -1 fake)
            "train/d_margins_met": torch.cat([real >= 1, fake <= -1]).float().mean() if margin else None,
            "train/grad_norm_g": grad_norm_g,
            "train/penalty_r1": d["penalties"].get("r1"),
            "train/penalty_gp": d["penalties"].get("gp"),
            "train/instance_noise_std": noise_std if noise_std > 0 else None,
            "train/lr_d": lr_d,
            "train/lr_g": lr_g,
        }
        metrics = {name: value.detach() if torch.is_tensor(value) else value for name, value in metrics.items() if value is not None}
        batch_size = d["real_logits"].shape[0]  # one D minibatch
        self.log_dict(metrics, on_step=True, on_epoch=False, sync_dist=True, batch_size=batch_size)
        self.log_dict({"loss_d": metrics["train/loss_d"], "loss_g": metrics["train/loss_g"]}, prog_bar=True, logger=False, sync_dist=True, batch_size=batch_size)
        self.logged_last_batch = True
        every = self.trainer.log_every_n_steps  # 0: no step scalars at all
        if every and self.global_step % every:  # a step Lightning does not write (see write_to_loggers)
            self.write_to_loggers(metrics)

    def write_to_loggers(self, metrics: dict) -> None:
        """Lightning's logger connector writes logged step scalars to the loggers only every
        log_every_n_steps batches (its should_update_logs). For the other logging steps, the last of
        an epoch and of the run, write them as it would have: averaged over the processes (as
        sync_dist does), at its x-axis value, through each logger (which writes on rank zero only).
        So a run or an epoch shorter than log_every_n_steps has curves too. One all-reduce and one
        read of the device for all of them (on a GPU each float() would be a sync)."""
        names = list(metrics)
        stacked = torch.stack([torch.as_tensor(metrics[name], dtype=torch.float32, device=self.device) for name in names])
        values = dict(zip(names, self.trainer.strategy.reduce(stacked, reduce_op="mean").tolist()))
        for logger in self.loggers:
            logger.log_metrics(values, step=last_batch_step(self.trainer))

    def sampler(self) -> nn.Module:
        """The network samples come from: G's moving average once it has started, else G."""
        if self.generator_ema is not None and self.generator_ema.started():
            return self.generator_ema.module
        return self.generator

    @torch.no_grad()
    def sample(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """Images (in self.output_range) for noise z, the fixed sample noise when z is None. The single entry
        point for samples, sample grids and metrics: it uses G's moving average when there is one,
        always in eval mode (a BatchNorm G uses its running statistics), whatever mode the module is in."""
        sampler = self.sampler()
        was_training = sampler.training
        sampler.eval()
        try:
            return sampler(self.sample_noise if z is None else z)
        finally:
            sampler.train(was_training)
