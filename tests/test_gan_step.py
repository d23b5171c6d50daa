"""One training batch of GAN, observed from outside: which network each update changes, and that
the regularisers switched on in the config really change D's update as their formulas say.

The exact checks use a linear D (logit = w . x + b) and plain SGD: D's input gradient is then w for
every image, so R1 = ||w||^2 and the gradient penalty = (||w|| - 1)^2 whatever the samples, and a
weight changes by exactly -lr times its gradient. Two runs from the same weights, data and noise,
one with the option and one without, then differ in D's update by -lr times the option's term."""

import functools
import types

import lightning as L
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.profilers import PassThroughProfiler, SimpleProfiler
import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader

from gan_lightning import losses
from gan_lightning.module import GAN, bare, frozen
from gan_lightning.precision import Float32Precision

LR = 0.1
IMAGES = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(3)) * 2 - 1


class LinearDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(784, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)).squeeze(1)


class RecordingDiscriminator(LinearDiscriminator):
    """Keeps every input it is given (for the instance-noise test)."""

    def __init__(self):
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return super().forward(x)


GENERATOR = {"_target_": "gan_lightning.networks.MLPGenerator", "latent_dim": 8, "hidden_dim": 16, "image_shape": [1, 28, 28]}
LINEAR_D = {"generator": GENERATOR, "discriminator": {"_target_": f"{__name__}.LinearDiscriminator"}}
MLP_D = {"generator": GENERATOR, "discriminator": {"_target_": "gan_lightning.networks.MLPDiscriminator", "hidden_dim": 16, "image_shape": [1, 28, 28]}}
NON_SATURATING = {
    "name": "non_saturating",
    "generator": {"_target_": "gan_lightning.losses.non_saturating_generator_loss", "_partial_": True},
    "discriminator": {"_target_": "gan_lightning.losses.gan_discriminator_loss", "_partial_": True},
}
SGD = {"lr_g": LR, "lr_d": LR, "d_steps": 1, "optimizer": {"_target_": "torch.optim.SGD"}}
ADAM = {"lr_g": 1e-3, "lr_d": 1e-3, "d_steps": 1, "optimizer": {"_target_": "torch.optim.Adam", "betas": [0.5, 0.999]}}


def fit(module: GAN, steps: int, batch_size: int = 4, callbacks=(), plugins=()) -> GAN:
    """steps batches of IMAGES, in order, from the same noise stream in every call."""
    torch.manual_seed(1)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks), plugins=list(plugins))
    trainer.fit(module, DataLoader(IMAGES[: steps * batch_size], batch_size=batch_size))
    return module


def gan(model=LINEAR_D, loss=NON_SATURATING, optim=SGD, **kwargs) -> GAN:
    torch.manual_seed(0)  # the same initial weights in every call
    return GAN(model, loss, optim, **kwargs)


@pytest.mark.parametrize("r1_weight, gp_weight", [(3.0, 0.0), (0.0, 5.0), (3.0, 5.0)])
def test_d_loss_includes_r1_and_the_gradient_penalty_with_their_weights(r1_weight, gp_weight):
    plain = fit(gan(), steps=1).discriminator.linear
    module = gan(regularization={"r1_weight": r1_weight, "gradient_penalty_weight": gp_weight})
    w0 = module.discriminator.linear.weight.detach().clone()
    penalized = fit(module, steps=1).discriminator.linear
    # gamma/2 * ||w||^2 has gradient gamma * w; lambda * (||w|| - 1)^2 has 2 lambda (||w|| - 1) w / ||w||
    norm = w0.norm()
    expected = -LR * (r1_weight * w0 + 2 * gp_weight * (norm - 1) * w0 / norm)
    torch.testing.assert_close(penalized.weight - plain.weight, expected, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(penalized.bias, plain.bias)  # the penalties do not depend on b


def test_label_smoothing_reaches_d_update():
    a = 0.9
    plain = fit(gan(), steps=1).discriminator.linear
    smoothed = fit(gan(regularization={"real_label": a}), steps=1).discriminator.linear
    # d/dl of the real term is sigmoid(l) - a instead of sigmoid(l) - 1: (1 - a) more for each real image
    real = IMAGES[:4].flatten(1)
    torch.testing.assert_close(smoothed.bias - plain.bias, torch.tensor([-LR * (1 - a)]))
    torch.testing.assert_close(smoothed.weight - plain.weight, -LR * (1 - a) * real.mean(0, keepdim=True), atol=1e-6, rtol=1e-4)


def test_instance_noise_reaches_the_d_step_and_the_g_step():
    n, sigma, decay_steps = 64, 0.4, 4
    model = {**LINEAR_D, "discriminator": {"_target_": f"{__name__}.RecordingDiscriminator"}}
    module = gan(model=model, regularization={"instance_noise": {"sigma": sigma, "decay_steps": decay_steps}})
    fit(module, steps=1, batch_size=n)
    inputs = module.discriminator.inputs
    d_step, g_step = inputs[0], inputs[1]  # per batch: D's pass over real + fake, then G's over fake
    # real images + N(0, sigma^2) at step 0
    assert (d_step[:n] - IMAGES[:n]).std().item() == pytest.approx(sigma, rel=0.03)
    # G's step adds its own noise to the same fakes: the difference of two draws has std sqrt(2) sigma
    assert (g_step - d_step[n:]).std().item() == pytest.approx(2**0.5 * sigma, rel=0.03)

    no_noise = gan(model=model)
    fit(no_noise, steps=1, batch_size=n)
    assert torch.equal(no_noise.discriminator.inputs[0][:n], IMAGES[:n])


def test_each_d_step_gets_its_own_real_minibatch_and_only_the_last_fake_batch_has_a_graph_through_g():
    model = {**LINEAR_D, "discriminator": {"_target_": f"{__name__}.RecordingDiscriminator"}}
    module = gan(model=model, optim={**SGD, "d_steps": 2})
    g_forwards_with_graph = []
    module.generator.register_forward_hook(lambda net, args, out: g_forwards_with_graph.append(out.requires_grad))
    fit(module, steps=1, batch_size=8)  # a training batch of 8 images: two D minibatches of 4
    first_d, second_d, g_step = module.discriminator.inputs
    assert torch.equal(first_d[:4], IMAGES[:4]) and torch.equal(second_d[:4], IMAGES[4:8])
    assert not torch.equal(first_d[4:], second_d[4:])  # fresh fakes for each D step
    assert torch.equal(g_step, second_d[4:])  # G's step reuses the last D step's fakes ...
    assert g_forwards_with_graph == [False, True]  # ... the only ones generated with a graph through G
    with pytest.raises(ValueError, match="does not split into optim.d_steps=2"):
        fit(gan(optim={**SGD, "d_steps": 2}), steps=1, batch_size=3)


def test_instance_noise_falls_over_the_steps_of_a_run():
    n, sigma, decay_steps = 16, 0.4, 4
    model = {**LINEAR_D, "discriminator": {"_target_": f"{__name__}.RecordingDiscriminator"}}
    module = gan(model=model, regularization={"instance_noise": {"sigma": sigma, "decay_steps": decay_steps}})
    fit(module, steps=4, batch_size=n)
    d_steps = module.discriminator.inputs[0::2]
    stds = [(x[:n] - IMAGES[k * n : (k + 1) * n]).std().item() for k, x in enumerate(d_steps)]
    assert stds == pytest.approx([sigma * (1 - k / decay_steps) for k in range(4)], rel=0.1)


def test_spectral_norm_reaches_training():
    module = gan(model=MLP_D, optim=ADAM, regularization={"spectral_norm": True})
    linears = [m for m in module.discriminator.modules() if isinstance(m, nn.Linear)]
    assert all(parametrize.is_parametrized(m, "weight") for m in linears)
    assert not any(parametrize.is_parametrized(m) for m in module.generator.modules())
    with torch.no_grad():
        for m in linears:
            m.parametrizations.weight.original.mul_(10)  # far from 1-Lipschitz
    fit(module, steps=10)
    module.eval()
    for m in linears:
        assert torch.linalg.matrix_norm(m.parametrizations.weight.original, ord=2) > 5
        # the weight D computes with is the original divided by its largest singular value
        assert torch.linalg.matrix_norm(m.weight.detach(), ord=2).item() == pytest.approx(1.0, abs=0.05)


class WatchSteps(L.Callback):
    """Around every optimizer step: both networks' weights before and after, and D's gradients."""

    def __init__(self):
        self.steps: list[dict] = []

    def on_train_start(self, trainer, pl_module):
        nets = {"d": pl_module.discriminator, "g": pl_module.generator}
        snapshot = lambda attr: {name: [getattr(p, attr).clone() if getattr(p, attr) is not None else None for p in net.parameters()] for name, net in nets.items()}
        for name, opt in zip(("d", "g"), trainer.optimizers):  # configure_optimizers' order
            opt.register_step_pre_hook(lambda opt, args, kwargs, name=name: self.steps.append({"opt": name, "before": snapshot("data"), "grad_before": snapshot("grad")}))
            opt.register_step_post_hook(lambda opt, args, kwargs: self.steps[-1].update(after=snapshot("data")))


def test_a_d_step_leaves_g_unchanged_and_a_g_step_leaves_d_unchanged():
    watch = WatchSteps()
    fit(gan(model=MLP_D, optim={**ADAM, "d_steps": 2}), steps=3, callbacks=[watch])
    assert [s["opt"] for s in watch.steps] == ["d", "d", "g"] * 3
    for step in watch.steps:
        other = "g" if step["opt"] == "d" else "d"
        same = lambda net: all(torch.equal(a, b) for a, b in zip(step["before"][net], step["after"][net]))
        assert same(other), f"a {step['opt']} step changed {other}"
        assert not same(step["opt"]), f"a {step['opt']} step left {step['opt']} unchanged"
    # G's backward pass left no gradient in D: D's gradients are still those of the last D step
    for d_step, g_step in zip(watch.steps[1::3], watch.steps[2::3]):
        assert all(torch.equal(a, b) for a, b in zip(d_step["grad_before"]["d"], g_step["grad_before"]["d"]))


class GeneratorGradNorms(L.Callback):
    """G's gradient norm at each of its updates, as callbacks see it: unscaled, before the module's clipping."""

    def __init__(self):
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if optimizer is trainer.optimizers[1]:
            self.norms.append(torch.nn.utils.get_total_norm([p.grad for p in pl_module.generator.parameters()]).item())


@pytest.mark.parametrize("precision", ["32-true", "16-mixed"])
def test_gradient_clipping_bounds_each_networks_update(precision):
    # With SGD an update is -lr x the gradient: a clipped gradient norm c gives an update of norm lr x c.
    # In 16-mixed the gradients are loss-scaled (x 2^16) until the scaler unscales them inside the step:
    # clipping before that would give updates 2^16 times too small.
    clip_d, clip_g = 1e-3, 2e-3
    watch = WatchSteps()
    # 32-true: the fp32 plugin train.py gives the Trainer, which calls the module's hook itself
    plugins = [MixedPrecision("16-mixed", "cpu")] if precision == "16-mixed" else [Float32Precision()]
    norms = GeneratorGradNorms()
    module = fit(gan(model=MLP_D, optim={**SGD, "d_steps": 2, "clip_grad_norm_d": clip_d, "clip_grad_norm_g": clip_g}), steps=2,
                 callbacks=[watch, norms], plugins=plugins)
    for step in watch.steps:
        net, clip = (("d", clip_d) if step["opt"] == "d" else ("g", clip_g))
        update = torch.cat([(a - b).flatten() for a, b in zip(step["after"][net], step["before"][net])])
        assert update.norm().item() == pytest.approx(LR * clip, rel=1e-3)
    # train/grad_norm_g (logged at the last step) is the norm G's gradient had, unscaled; not the threshold it was clipped to
    assert float(module.trainer.callback_metrics["train/grad_norm_g"]) == pytest.approx(norms.norms[-1], rel=1e-5)
    assert norms.norms[-1] > 10 * clip_g
    if precision != "32-true":
        return
    unclipped = WatchSteps()  # the bound is not vacuous: without clipping these updates are far larger
    fit(gan(model=MLP_D, optim={**SGD, "d_steps": 2}), steps=1, callbacks=[unclipped])
    for step in unclipped.steps:
        net = step["opt"]
        update = torch.cat([(a - b).flatten() for a, b in zip(step["after"][net], step["before"][net])])
        assert update.norm().item() > 10 * LR * clip_g


def test_frozen_stops_weight_gradients_not_input_gradients_and_restores_what_it_froze():
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    net[1].bias.requires_grad_(False)  # frozen by its owner before: stays frozen
    x = torch.randn(4, 3, requires_grad=True)
    with frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
        net(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # G's gradient flows through a frozen D
    assert all(p.grad is None for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == [True, True, True, False]
    with pytest.raises(KeyError):
        with frozen(net):
            raise KeyError("an error inside")
    assert [p.requires_grad for p in net.parameters()] == [True, True, True, False]


def test_bare_unwraps_hydras_partial_into_a_plain_one_with_the_same_arguments():
    hydras = instantiate({"_target_": "gan_lightning.losses.gan_discriminator_loss", "_partial_": True, "real_label": 0.9})
    plain = bare(hydras)
    assert type(plain) is functools.partial
    assert plain.func is losses.gan_discriminator_loss and plain.args == () and plain.keywords == {"real_label": 0.9}
    real, fake = torch.randn(5), torch.randn(5)
    assert torch.equal(plain(real, fake), hydras(real, fake))
    assert bare(losses.hinge_generator_loss) is losses.hinge_generator_loss  # a plain function is kept
    module = gan(regularization={"real_label": 0.9})
    assert type(module.generator_loss) is type(module.discriminator_loss) is functools.partial
    assert module.discriminator_loss.keywords == {"real_label": 0.9}


class WatchLogged(L.Callback):
    """After every batch: D's loss as trainer.callback_metrics and the progress bar hold it."""

    def __init__(self):
        self.seen: list[tuple] = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        held = trainer.callback_metrics.get("train/loss_d"), trainer.progress_bar_metrics.get("loss_d")
        self.seen.append(tuple(None if v is None else float(v) for v in held))


def test_the_training_scalars_stay_for_callbacks_and_the_progress_bar_between_logging_steps():
    # Lightning stops reading them back once written (compat.forget_logged_step_values); what it
    # last wrote stays where callbacks (checkpoint monitors, alarms) and the progress bar read it.
    watch = WatchLogged()
    torch.manual_seed(1)
    trainer = L.Trainer(max_steps=7, log_every_n_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[watch])
    trainer.fit(gan(model=MLP_D, optim=ADAM), DataLoader(IMAGES[: 7 * 4], batch_size=4))
    assert [bar == metric for metric, bar in watch.seen] == [True] * 7
    losses = [metric for metric, _ in watch.seen]
    # logged at steps 3 and 6 (every 3) and 7 (the run's last); held in between
    assert losses[:2] == [None, None]
    assert losses[2] == losses[3] == losses[4] and len({losses[2], losses[5], losses[6]}) == 3


def test_the_fp32_plugin_reaches_the_listeners_of_the_trainer_it_serves_now():
    # Who listens is worked out once and kept: a callback added to the list, a new list (Lightning
    # builds one at every fit) or another module is seen at the next call.
    class Listener(L.Callback):
        def __init__(self):
            self.calls = 0

        def on_after_backward(self, trainer, pl_module):
            self.calls += 1

    class Module(L.LightningModule):
        calls = 0

        def on_after_backward(self):
            self.calls += 1

    first, second, silent = Listener(), Listener(), L.Callback()
    trainer = types.SimpleNamespace(callbacks=[first, silent], lightning_module=L.LightningModule(), profiler=PassThroughProfiler())
    plugin, loss = Float32Precision(), torch.tensor(1.0)
    plugin.post_backward(loss, types.SimpleNamespace(trainer=trainer))
    trainer.callbacks.append(second)
    plugin.post_backward(loss, types.SimpleNamespace(trainer=trainer))
    trainer.callbacks = [second]
    trainer.lightning_module = module = Module()
    plugin.post_backward(loss, types.SimpleNamespace(trainer=trainer))
    assert (first.calls, second.calls, module.calls) == (2, 2, 1)
    # Lightning's default profiler records nothing and is left out; any other gets each call.
    trainer.profiler = SimpleProfiler()
    plugin.post_backward(loss, types.SimpleNamespace(trainer=trainer))
    assert (second.calls, module.calls) == (3, 2)
    recorded = list(trainer.profiler.recorded_durations)  # a callback's name: its class's __qualname__
    assert [name for name in recorded if name.startswith("[Callback]") and name.endswith("Listener.on_after_backward")]
    assert "[LightningModule]Module.on_after_backward" in recorded
