"""Lightning's fp32 precision plugin, with the per-step hooks called only on those who define them;
torch's precision of fp32 matrix products for a block of code."""

from contextlib import contextmanager
from typing import Any, Callable, Iterator, NamedTuple

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from torch import Tensor

from gan_lightning.compat import call_hook_on_listeners


@contextmanager
def matmul_precision(value: str | None) -> Iterator[None]:
    """torch.set_float32_matmul_precision(value) inside the block, the setting before it restored
    after (None: left as it is). It is process-wide: a run must not leave it to the next job of a
    sweep or to the code that called train()."""
    if value is None:
        yield
        return
    try:
        before = torch.get_float32_matmul_precision()
        restore = lambda: torch.set_float32_matmul_precision(before)  # noqa: E731
    except RuntimeError:
        # The process set torch's per-backend settings (torch >= 2.9: torch.backends.<backend>.matmul.
        # fp32_precision) to different values, which the one-word getter refuses to sum up: keep those.
        backends = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)
        saved = [backend.fp32_precision for backend in backends]
        restore = lambda: [setattr(backend, "fp32_precision", p) for backend, p in zip(backends, saved)]  # noqa: E731
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        restore()


def defines(obj, base: type, hook: str) -> bool:
    """Whether obj defines `hook` itself, not base's no-op. The function behind the bound method is
    compared, so a hook set on an instance counts too."""
    return getattr(getattr(obj, hook), "__func__", None) is not getattr(base, hook)


def listeners(trainer: Trainer, hook: str) -> list[Callback]:
    """The callbacks that define `hook` themselves, in the trainer's order."""
    return [callback for callback in trainer.callbacks if defines(callback, Callback, hook)]


class Listening(NamedTuple):
    """Who listens to a hook, and the trainer's callback list (and its length) and module it was read from."""

    callbacks: list[Callback]
    count: int
    module: LightningModule
    listeners: list[Callback]
    module_listens: bool


class Float32Precision(Precision):
    """trainer.precision=32-true, as Lightning's own plugin, except that on_before_backward,
    on_after_backward and on_before_optimizer_step reach only the module and the callbacks that
    define them. Lightning calls every callback's hook, no-ops included, each inside a profiler
    context, at every backward and every optimizer step: with the default callbacks 9 calls a
    round, 4 backward and 2 optimizer-step rounds per GAN step (BENCHMARKS.md, "Against a tuned
    hand-written loop"). The strategy's own pre/post_backward (DDP's bookkeeping) are outside this
    plugin and still run; mixed precision keeps Lightning's plugins.

    Who listens is worked out once per hook and kept while the trainer's callback list and the
    module stay the same (scanning the callbacks at every call cost ~10 us in a training step,
    6 calls per GAN iteration): a hook set on a callback in the middle of fit() is not seen."""

    def __init__(self) -> None:
        super().__init__()
        self.listening: dict[str, Listening] = {}  # per hook

    def call_listeners(self, trainer: Trainer, hook: str, *args: Any) -> None:
        callbacks, module = trainer.callbacks, trainer.lightning_module
        known = self.listening.get(hook)
        if known is None or known.callbacks is not callbacks or known.count != len(callbacks) or known.module is not module:
            known = self.listening[hook] = Listening(callbacks, len(callbacks), module, listeners(trainer, hook),
                                                     defines(module, LightningModule, hook))
        if known.listeners or known.module_listens:
            # Lightning's default profiler records nothing: no context and record name per call
            # (~10 us an update inside a training step); trainer.profiler=simple gets them all.
            call_hook_on_listeners(trainer, hook, known.listeners, known.module_listens, *args,
                                   profiled=not isinstance(trainer.profiler, PassThroughProfiler))

    def pre_backward(self, tensor: Tensor, module: LightningModule) -> Tensor:
        self.call_listeners(module.trainer, "on_before_backward", tensor)
        return tensor

    def post_backward(self, tensor: Tensor, module: LightningModule) -> Tensor:
        self.call_listeners(module.trainer, "on_after_backward")
        return tensor.detach()  # as Lightning's: the caller gets the loss without its graph

    def optimizer_step(self, optimizer, model: LightningModule, closure: Callable[[], Any], **kwargs: Any) -> Any:
        if model.automatic_optimization:  # the Trainer's gradient clipping comes with Lightning's path
            return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)

        def closure_then_hook() -> Any:
            # Lightning's order: the closure (which does nothing under manual optimization), then
            # the hook, which sees the gradients.
            result = closure()
            self.call_listeners(model.trainer, "on_before_optimizer_step", optimizer)
            return result

        return optimizer.step(closure=closure_then_hook, **kwargs)
