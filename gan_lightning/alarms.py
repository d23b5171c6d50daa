"""Alarms: callbacks that tell the researcher when a run goes wrong, instead of letting them find out later.

NonFiniteAlarm stops the run before a NaN or infinite loss or gradient reaches the weights.
CollapseAlarm warns (and can stop) when D has won for a sustained window (by the loss's own
measure, or not at all for losses that have none) or when the measured mode coverage falls below a
threshold: a warning in the log, a TensorBoard text entry, and a 0/1
scalar per alarm (warning/d_won, warning/low_coverage: a tag group that TensorBoard sorts after
the eval and train groups it opens on).
"""

import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from gan_lightning.compat import add_non_finite, loss_scale, scaler_found_inf
from gan_lightning.loggers import last_batch_step

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step  # the step whose update it stopped: the steps done before it


def last_good_checkpoint(trainer: L.Trainer) -> str:
    paths = [cb.last_model_path or cb.best_model_path for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    paths = [p for p in paths if p]
    return f"the last good checkpoint is {paths[0]} (resume with ckpt_path=...)" if paths else "no checkpoint was saved before it"


class NonFiniteAlarm(L.Callback):
    """Before every optimizer step, check that the loss behind it and the gradients are finite;
    otherwise raise NonFiniteError naming the step and the loss, before the weights change.

    Nothing is saved on the way out (ModelCheckpoint does not save on exceptions, and
    InterruptCheckpoint saves only on Ctrl-C), so the last checkpoint stays a good one.

    In fp16 mixed precision (trainer.precision=16-mixed) the gradient scaler steps after this
    hook: it skips a step whose gradients overflowed and halves the loss scale, a normal event,
    several times in a run. Then only a non-finite loss, or non-finite gradients at a loss scale
    of at most min_scale (they overflow without being amplified: the scaler cannot cure that),
    stop the run. Lightning unscales the gradients before this hook unless the optimizer unscales
    inside its step (fused Adam, the default): the check is the same on scaled gradients (a finite
    scale keeps finite values finite), and the scaler's own finding is reused when it has one.

    When the optimizer can skip its own update on the device (torch's fused Adam, the default, reads
    a `found_inf` flag, as GradScaler uses it) and no fp16 loss scaling runs, the decision is read
    once per training step instead of once per update: each update's check (one fused pass over the
    loss and the gradients) sets its own flag on the device, the optimizer skips an update whose
    flag is set, and the flags are read when the step ends (on_train_batch_end, before any
    checkpoint or logged scalar is written): one host sync per step, however many updates it makes
    (optim.d_steps, optim.iterations_per_step). The error then names the first bad update (which of
    the step's updates, and in which iteration); updates after it in the same step, with finite
    gradients, were applied, and nothing is saved.
    Otherwise (another optimizer, fp16 loss scaling) the check syncs before every update.
    """

    FIRST_FLAGS = 16  # flags kept on the device; doubled when a step makes more updates

    def __init__(self, min_scale: float = 1.0):
        self.min_scale = min_scale
        self.flags: torch.Tensor | None = None  # on the device: 1. for an update whose loss or gradients were not finite
        self.views: tuple[torch.Tensor, ...] = ()  # self.flags[i] for each i, made once (indexing per update cost ~15 us in a step)
        self.deferred: list[tuple[str, torch.Tensor, int]] = []  # this step's flagged updates: (loss name, loss, step)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flags, self.views, self.deferred = None, (), []  # those of a step that an earlier fit() in this process left unfinished

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        name, loss = getattr(pl_module, "last_loss", None) or ("loss", None)
        loss_value = loss.detach().float() if loss is not None else torch.zeros((), device=pl_module.device)
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        if scaler is None or not scaler.is_enabled():
            if getattr(optimizer, "_step_supports_amp_scaling", False):  # it skips its update when its found_inf is set
                flag = self.flag(loss_value.device)
                try:
                    add_non_finite([*grads, loss_value], flag)  # the loss's value, like the gradients', is left as it was
                except (RuntimeError, NotImplementedError):  # a device or dtype mix the kernel does not take
                    pass
                else:
                    optimizer.found_inf = flag
                    self.deferred.append((name, loss_value, trainer.global_step))
                    return
            stop = non_finite(grads, loss_value)
        else:  # the scaler skips a step with non-finite gradients: fine while it can still lower its scale
            found_inf = scaler_found_inf(scaler, optimizer)
            if found_inf is None:  # not unscaled yet (fused optimizer)
                found_inf = non_finite(grads, torch.zeros(1, device=loss_value.device))
            stop = (~torch.isfinite(loss_value)).float() + found_inf * (loss_scale(scaler).to(found_inf.device) <= self.min_scale).float()
        if not stop.item():  # one sync per update (NaN reads as true: see non_finite)
            return
        grad_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if not torch.isfinite(loss_value):
            what = f"{name} is {loss_value.item()}"
        else:
            what = f"{name} is finite ({loss_value.item():.4g}) but its gradient norm is {grad_norm.item()}"
            if scaler is not None and scaler.is_enabled():
                what += f" at a loss scale of {scaler.get_scale():g} (fp16 overflow the scaler cannot cure)"
        raise NonFiniteError(self.message(trainer, trainer.global_step, what), trainer.global_step)

    def flag(self, device: torch.device) -> torch.Tensor:
        """The next update's flag: a 0-dim view of self.flags (the shape of the step counts fused Adam
        subtracts it from), 0. until the check sets it."""
        n = len(self.deferred)
        if n < len(self.views):  # on_train_start drops them: a fit keeps its device
            return self.views[n]
        if self.flags is None or self.flags.device != device:
            self.flags = torch.zeros(self.FIRST_FLAGS, device=device)
        else:
            self.flags = torch.cat([self.flags, torch.zeros_like(self.flags)])  # the earlier flags of this step kept
        self.views = self.flags.unbind()
        return self.views[n]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if not self.deferred:
            return
        deferred, self.deferred = self.deferred, []
        flags = self.flags[: len(deferred)].tolist()  # the one sync per step; all 0. unless this step raises
        if not any(flags):
            return
        first = next(i for i, f in enumerate(flags) if f)
        name, loss_value, step = deferred[first]
        self.flags.zero_()  # should the run go on (caught), the next step's updates start unflagged
        if torch.isfinite(loss_value):
            what = f"{name} is finite ({loss_value.item():.4g}) but a gradient behind it is inf or NaN"
        else:
            what = f"{name} is {loss_value.item()}"
        raise NonFiniteError(self.message(trainer, step, what, which_update(first, [d[0] for d in deferred], getattr(pl_module, "iterations", 1))), step)

    @staticmethod
    def message(trainer: L.Trainer, step: int, what: str, where: str = "") -> str:
        return (f"non-finite training at step {step} (epoch {trainer.current_epoch}){where}: {what}. "
                f"Training stopped before this update; {last_good_checkpoint(trainer)}.")


def which_update(index: int, names: list[str], iterations: int) -> str:
    """', update 5 of the step's 16 (iteration 3 of 8)' for the update at index (from 0) among a
    step's updates (the names of their losses) in that many GAN iterations; '' when its loss's name
    alone tells it apart (one D and one G update per step, the default)."""
    if names.count(names[index]) <= 1:
        return ""
    where = f", update {index + 1} of the step's {len(names)}"
    if iterations > 1 and len(names) % iterations == 0:
        where += f" (iteration {index // (len(names) // iterations) + 1} of {iterations})"
    return where


def non_finite(grads: list[torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
    """Non-zero (1. or NaN) if the loss or a gradient is inf/NaN, else 0., on the device (no sync).
    The loss times 0 is 0 when the loss is finite and NaN when it is not (IEEE 754): one small op,
    where isfinite, not and float were three (a third of the check's time in a training step).
    Then one fused pass over the gradients: the kernel AMP's GradScaler uses to look for inf/NaN
    (with a scale of 1 it leaves them unchanged), cheaper than a gradient norm; measured in
    BENCHMARKS.md."""
    found = loss.float() * 0.0
    if grads:
        try:
            add_non_finite(grads, found)
        except (RuntimeError, NotImplementedError):  # a device or dtype mix the kernel does not take
            found += (~torch.isfinite(torch.nn.utils.get_total_norm(grads))).float().to(found.device)
    return found


class CollapseAlarm(L.Callback):
    """Two signs of a failing game, checked whenever the training scalars are logged:

    - D has won, read as the loss reads D's output (loss.d_output), at every check for window_steps
      steps: for the logistic losses (probability) mean D(x) > d_real_above (times the real label
      under label smoothing) and mean D(G(z)) < d_fake_below (train/d_real, train/d_fake); for hinge
      (margin) every real and fake sample past its margin (train/d_margins_met = 1: D's loss is 0
      and D learns nothing more). Off for
      least-squares and Wasserstein (score): their G loss does not saturate when D separates, and a
      critic's unbounded score has no winning value.
    - Low coverage: eval/classes_covered below min_classes_covered, judged at the end of an epoch
      whose evaluation (EvaluateGenerator, or any callback that keeps its evaluated_step) ran at
      step min_steps or later (before, a young G covering few digits is expected, not a collapse).
      An older evaluation is never judged again at a later step.

    Each raises a warning and a TensorBoard text entry once per episode, logs its 0/1 flag at
    every check, and stops the run when stop is true."""

    def __init__(self, d_real_above: float = 0.99, d_fake_below: float = 0.01, window_steps: int = 2000,
                 min_classes_covered: float | None = 8, min_steps: int = 0, stop: bool = False):
        self.d_real_above = d_real_above
        self.d_fake_below = d_fake_below
        self.window_steps = window_steps
        self.min_classes_covered = min_classes_covered
        self.min_steps = min_steps
        self.stop = stop
        self.d_won_since: int | None = None
        self.raised: dict[str, bool] = {"d_won": False, "low_coverage": False}
        self.checked_at: int | None = None  # the step of the last check at a batch's end

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:  # the steps GAN.training_step logs at
            self.check(trainer)
            self.checked_at = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # GAN.training_step also logs at the last batch of an epoch (and of the run); the evaluation
        # logs at the epoch's end. The losses' check, when that batch had it already, is not repeated.
        evaluated = any(getattr(c, "evaluated_step", None) == trainer.global_step for c in trainer.callbacks)
        self.check(trainer, d_won=trainer.global_step != self.checked_at, coverage=evaluated)

    def d_has_won(self, metrics: dict, real_label: float = 1.0) -> tuple[bool, str] | None:
        """Whether D separates real from fake by the loss's own measure, and how; None when the
        loss logs no such measure. Under one-sided label smoothing (regularization.real_label < 1)
        D's best D(x) is real_label, not 1: the threshold is d_real_above times it."""
        d_real, d_fake, margins = metrics.get("train/d_real"), metrics.get("train/d_fake"), metrics.get("train/d_margins_met")
        if d_real is not None and d_fake is not None:
            above = self.d_real_above * real_label
            won = float(d_real) > above and float(d_fake) < self.d_fake_below
            return won, f"D(x) = {float(d_real):.3f} > {above:.4g}, D(G(z)) = {float(d_fake):.4f} < {self.d_fake_below}"
        if margins is not None:
            return float(margins) >= 1.0, "every real score >= 1 and every fake score <= -1 (hinge margins all met, D's loss is 0)"
        return None

    def check(self, trainer: L.Trainer, d_won: bool = True, coverage: bool = False) -> None:
        """d_won: judge the training scalars (a logging step's); coverage: judge eval/classes_covered
        (an evaluation that ran at this step)."""
        metrics = trainer.callback_metrics
        step = last_batch_step(trainer)  # where TensorBoard shows this check's flags
        d_won = self.d_has_won(metrics, getattr(trainer.lightning_module, "real_label", 1.0)) if d_won else None
        if d_won is not None:
            won, how = d_won
            if won:
                self.d_won_since = step if self.d_won_since is None else self.d_won_since
            else:
                self.d_won_since = None
            sustained = self.d_won_since is not None and step - self.d_won_since >= self.window_steps
            self.flag(trainer, "d_won", sustained,
                      f"D has won since step {self.d_won_since}: {how} for {self.window_steps}+ steps; G gets no useful "
                      "signal (try regularization.r1_weight, spectral_norm, real_label, instance_noise or lr_d).")
        covered = metrics.get("eval/classes_covered") if coverage else None
        if covered is not None and self.min_classes_covered is not None and trainer.global_step >= self.min_steps:
            self.flag(trainer, "low_coverage", float(covered) < self.min_classes_covered,
                      f"mode collapse: the samples cover {float(covered):g} of the 10 digit classes, fewer than {self.min_classes_covered:g}.")

    def flag(self, trainer: L.Trainer, name: str, on: bool, message: str) -> None:
        step = last_batch_step(trainer)
        for logger in trainer.loggers:
            logger.log_metrics({f"warning/{name}": float(on)}, step=step)
        trainer.callback_metrics[f"warning/{name}"] = torch.tensor(float(on))  # the run's summary.json and final lines
        if not on:
            self.raised[name] = False
            return
        if not self.raised[name]:
            self.raised[name] = True
            text = f"step {step}: {message}" + (" Stopping (alarm stop=true)." if self.stop else "")
            if trainer.is_global_zero:
                log.warning("warning/%s: %s", name, text)
                for logger in trainer.loggers:
                    if isinstance(logger, TensorBoardLogger):
                        logger.experiment.add_text(f"warning/{name}", text, global_step=step)
        if self.stop:
            trainer.should_stop = True
