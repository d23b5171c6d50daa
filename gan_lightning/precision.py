"""Lightning's fp32 precision plugin without the backward hooks that nobody listens to."""

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins import Precision
from torch import Tensor


def heard(trainer: Trainer, hook: str) -> bool:
    """Whether the LightningModule or a callback defines `hook` itself (not Lightning's no-op)."""
    listeners = [(trainer.lightning_module, LightningModule)] + [(callback, Callback) for callback in trainer.callbacks]
    # the function behind the bound method: a hook set on an instance counts too
    return any(getattr(getattr(obj, hook), "__func__", None) is not getattr(base, hook) for obj, base in listeners)


class Float32Precision(Precision):
    """trainer.precision=32-true, as Lightning's own plugin, except that each manual_backward calls
    on_before_backward / on_after_backward only when the module or a callback defines them.
    Lightning calls every callback's hook, no-ops included, at every backward: with the default
    callbacks 2 x 8 callback calls and 2 module hooks per backward, two backwards per GAN step
    (BENCHMARKS.md, "Against a tuned hand-written loop"). The strategy's own pre/post_backward (DDP's bookkeeping)
    are outside this plugin and still run; mixed precision keeps Lightning's plugins."""

    def pre_backward(self, tensor: Tensor, module: LightningModule) -> Tensor:
        if heard(module.trainer, "on_before_backward"):
            return super().pre_backward(tensor, module)
        return tensor

    def post_backward(self, tensor: Tensor, module: LightningModule) -> Tensor:
        if heard(module.trainer, "on_after_backward"):
            return super().post_backward(tensor, module)
        return tensor.detach()  # as Lightning's: the caller gets the loss without its graph
