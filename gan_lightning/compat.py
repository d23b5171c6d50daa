"""Every workaround of Lightning, Hydra or torch internals, in one place.

Each one relies on something private (an attribute, a function, a command line its upstream
builds) and says what upstream behaviour it works around. check() runs once when training starts
and raises CompatError, naming the supported releases, when one of those internals is gone or has
changed, instead of letting a workaround silently do the wrong thing. tests/test_compat.py has a
test per workaround that fails when upstream changes under it.
"""

import functools
import inspect

SUPPORTED = "torch>=2.6, lightning>=2.4, hydra-core>=1.3 (pyproject.toml)"


class CompatError(RuntimeError):
    pass


def do_nothing() -> None:
    pass


# --- Lightning: global_step under manual optimization --------------------------------------------
# Lightning counts every optimizer.step() in trainer.global_step under manual optimization
# (Lightning issue #17958, "global_step incremented by each optimizer in manual optimization"), so
# with d_steps D updates and one G update a batch would count d_steps + 1 steps, and max_steps,
# log_every_n_steps and checkpoint intervals would no longer count batches. The manual loop re-arms
# the counting hooks on the LightningOptimizer before every batch (loops/optimization/manual.py);
# disarming D's leaves one count per batch, G's.
def count_generator_steps_only(opt_d) -> None:
    opt_d._on_before_step = opt_d._on_after_step = do_nothing


def _check_step_hooks() -> None:
    from lightning.pytorch.core.optimizer import LightningOptimizer
    from lightning.pytorch.loops.optimization.manual import _ManualOptimization

    step = inspect.getsource(LightningOptimizer.step)
    run = inspect.getsource(_ManualOptimization)
    if not ("self._on_before_step()" in step and "self._on_after_step()" in step and "lightning_optimizer._on_before_step" in run):
        raise CompatError("LightningOptimizer no longer counts steps through _on_before_step/_on_after_step")


# --- Hydra: partial objects -----------------------------------------------------------------------
def bare(fn):
    """The function inside a Hydra `_partial_` object. Hydra re-checks its target policy on every
    call of such an object (about 1 ms each on CPU, more than a D step of the reference MLPs at
    batch 64); the target was authorized when it was instantiated, so call the function directly."""
    if isinstance(fn, functools.partial):
        return functools.partial(fn.func, *fn.args, **fn.keywords)
    return fn


def _check_partial() -> None:
    from hydra.utils import instantiate

    made = instantiate({"_target_": "builtins.max", "_partial_": True, "default": 0})
    if not isinstance(made, functools.partial) or made.keywords.get("default") != 0:
        raise CompatError(f"hydra's _partial_ no longer gives a functools.partial (got {type(made).__name__})")


CHECKS = [_check_step_hooks, _check_partial]


def check() -> None:
    """Raise CompatError if an internal a workaround here relies on has changed."""
    for one in CHECKS:
        try:
            one()
        except CompatError as err:
            raise CompatError(f"{err}: gan_lightning's workaround (gan_lightning/compat.py) does not fit the installed release; supported: {SUPPORTED}") from None
        except (ImportError, AttributeError, OSError, TypeError) as err:
            raise CompatError(f"{one.__name__}: {type(err).__name__}: {err}: gan_lightning/compat.py does not fit the installed release; supported: {SUPPORTED}") from None
