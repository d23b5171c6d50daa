"""The GAN as a LightningModule: both networks, alternating D and G steps by manual optimization."""

import functools
from contextlib import contextmanager

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn

SAMPLE_NOISE_SEED = 1234  # the same sample noise in every run, so grids are comparable between runs


def do_nothing() -> None:
    pass


def bare(fn):
    """The function inside a Hydra `_partial_` object. Hydra re-checks its target policy on every
    call of such an object (about 1 ms each on CPU, more than a D step of the reference MLPs at
    batch 64); the target was authorized when it was instantiated, so call the function directly."""
    if isinstance(fn, functools.partial):
        return functools.partial(fn.func, *fn.args, **fn.keywords)
    return fn


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


class GAN(L.LightningModule):
    """min_G max_D E_x[log D(x)] + E_z[log(1 - D(G(z)))], with the generator loss chosen by config.

    The arguments are the (resolved) config nodes of model, loss and optim, kept as this module's
    hyperparameters so that GAN.load_from_checkpoint(path) rebuilds it with nothing else at hand.

    Step counting: each batch is one training step, made of optim.d_steps discriminator updates
    and one generator update. trainer.global_step counts generator updates, so max_steps,
    log_every_n_steps, checkpoint intervals and the TensorBoard x-axis all count batches.
    """

    def __init__(self, model: dict, loss: dict, optim: dict, num_sample_images: int = 64):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = instantiate(model["generator"])
        self.discriminator = instantiate(model["discriminator"])
        self.generator_loss = bare(instantiate(loss["generator"]))
        self.discriminator_loss = bare(instantiate(loss["discriminator"]))
        self.latent_dim = self.generator.latent_dim
        self.d_steps = optim["d_steps"]
        noise = torch.randn(num_sample_images, self.latent_dim, generator=torch.Generator().manual_seed(SAMPLE_NOISE_SEED))
        self.register_buffer("sample_noise", noise)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=self.device)

    def configure_optimizers(self):
        optim = self.hparams.optim
        opt_d = instantiate(optim["optimizer"], params=self.discriminator.parameters(), lr=optim["lr_d"])
        opt_g = instantiate(optim["optimizer"], params=self.generator.parameters(), lr=optim["lr_g"])
        return opt_d, opt_g

    def training_step(self, real: torch.Tensor) -> None:
        opt_d, opt_g = self.optimizers()
        # Lightning counts every optimizer.step() in global_step; count generator steps only
        # (one per batch), see the class docstring. Lightning re-arms these hooks every batch.
        opt_d._on_before_step = opt_d._on_after_step = do_nothing
        log_now = (self.global_step + 1) % max(self.trainer.log_every_n_steps, 1) == 0
        n = real.shape[0]

        for _ in range(self.d_steps):
            fake = self.generator(self.noise(n))
            # One D pass over real and fake together: D scores samples independently.
            real_logits, fake_logits = self.discriminator(torch.cat([real, fake.detach()])).split(n)
            loss_d = self.discriminator_loss(real_logits, fake_logits)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            opt_d.step()

        # The generator step reuses the last fake batch (its graph through G is intact) and asks
        # the freshly updated D; D's own weight gradients are not needed for it.
        with frozen(self.discriminator):
            fake_logits_g = self.discriminator(fake)
        loss_g = self.generator_loss(fake_logits_g)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        if log_now:
            grad_norm_g = torch.nn.utils.get_total_norm([p.grad for p in self.generator.parameters() if p.grad is not None])
        opt_g.step()

        if log_now:  # computing and syncing these only when they are written keeps the loop fast
            metrics = {
                "train/loss_d": loss_d.detach(),
                "train/loss_g": loss_g.detach(),
                "train/d_real": torch.sigmoid(real_logits.detach()).mean(),
                "train/d_fake": torch.sigmoid(fake_logits.detach()).mean(),
                "train/grad_norm_g": grad_norm_g,
            }
            self.log_dict(metrics, on_step=True, on_epoch=False, sync_dist=True, batch_size=n)
            self.log_dict({"loss_d": metrics["train/loss_d"], "loss_g": metrics["train/loss_g"]}, prog_bar=True, logger=False, sync_dist=True, batch_size=n)

    @torch.no_grad()
    def sample(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """Images from the generator (in [-1, 1]); the fixed sample noise when z is None."""
        return self.generator(self.sample_noise if z is None else z)
