"""Where a training step of the project spends its time beyond the tuned loop's, by layer, timed inside real runs on the CPU.

    python benchmarks/step_costs.py --data-root ../shared/data                     # batch 64
    python benchmarks/step_costs.py --data-root ../shared/data --batch-size 256
    python benchmarks/step_costs.py --data-root ../shared/data --iterations-per-step 8
    python benchmarks/step_costs.py --data-root ../shared/data --per-callback          # + each callback's batch hooks

Runs the tuned hand-written loop of benchmarks/throughput.py and the project (`train(cfg)` on the
composed conf/, eval=none, as throughput.py's project contender) interleaved, --repeats times, and
prints microseconds per GAN step (per timed step a median, or a mean where noted; then the median
over the repeats):

  step                    wall time per step (the tuned loop's, and the project's: a mean)
  GAN.training_step       the project's training step (a mean)
  between batches         the project's step minus its GAN.training_step: Lightning's loop around a
                          batch (data fetch and gather, batch hooks, the callbacks' batch hooks,
                          logger connector, progress bar)
    data fetch            Lightning's data fetcher's __next__ (CombinedLoader, DataLoader, sampler)
      gather              the project's dataset's __getitems__: the batch's images, one index gather
    batch transfer        Strategy.batch_to_device and the module's batch-transfer hooks
    callbacks' batch hooks  Lightning's dispatch of on_train_batch_start / _end to the callbacks
                          (--per-callback: each callback's own share)
    logger connector      Lightning's logger connector at a batch's start and end
    rest of the loop      between batches minus the four rows above: progress counters, the
                          module's batch hooks, the training_step call's layers, ...
  optimizer layers        LightningOptimizer.step minus the optimizer's own step: the strategy and
                          precision plugin layers, the progress counters and the dispatch of
                          on_before_optimizer_step (the NaN alarm itself not included). torch's
                          step wrapper (profiler record, step hooks), which the tuned loop pays too,
                          is in it as well
  backward layers         manual_backward minus Tensor.backward: the strategy and precision
                          plugin layers and the backward hooks' dispatch
  NaN alarm               NonFiniteAlarm.on_before_optimizer_step (its check of the loss and the
                          gradients before every update)
  logging                 GAN.log_training, a mean over all steps (it runs every log_every_n_steps)

The last line estimates project / tuned from the layers alone (1 - their share of the project's own
step, see overhead()): within one run, so steadier than the ratio of two runs. The timers cost
about a microsecond each. --iterations-per-step K runs the project with
optim.iterations_per_step=K: K GAN iterations (one D and one G update each) per training step, so
that Lightning's loop around a batch is paid once per K iterations; the rows stay per iteration.
--per-callback splits the callbacks' batch hooks row into each callback's own on_train_batch_start
and _end, and Lightning's dispatch around them.
"""

import argparse
import contextlib
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

import torch  # noqa: E402
from lightning.pytorch.core.optimizer import LightningOptimizer  # noqa: E402
from lightning.pytorch.loops.fetchers import _PrefetchDataFetcher  # noqa: E402
from lightning.pytorch.strategies import Strategy  # noqa: E402
from lightning.pytorch.trainer import call  # noqa: E402
from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector  # noqa: E402

from benchmarks import throughput  # noqa: E402
from gan_lightning import alarms  # noqa: E402
from gan_lightning.data import InMemoryImages, load_mnist_images  # noqa: E402
from gan_lightning.module import GAN  # noqa: E402

# (row, indent): the parts of the project's step; the indented rows are parts of the row above them
ROWS = [("training_step", 1), ("optimizer layers", 2), ("backward layers", 2), ("NaN alarm", 2), ("logging", 2),
        ("between batches", 1), ("data fetch", 2), ("gather", 3), ("batch transfer", 2), ("callbacks' batch hooks", 2),
        ("logger connector", 2), ("rest of the loop", 2)]


class Timers:
    """Wraps functions so that each call's duration is recorded under a name; undone on exit."""

    def __init__(self):
        self.calls: dict[str, list[float]] = {}
        self.stack = contextlib.ExitStack()

    def timed(self, function, name: str):
        durations = self.calls.setdefault(name, [])

        @functools.wraps(function)  # the project's start-up check reads some of these functions' source
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                durations.append(time.perf_counter() - start)

        return timed

    def wrap(self, owner, attribute: str, name: str) -> None:
        self.stack.enter_context(_patched(owner, attribute, self.timed(getattr(owner, attribute), name)))

    def __enter__(self) -> "Timers":
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()


@contextlib.contextmanager
def _patched(owner, attribute: str, value):
    original = owner.__dict__.get(attribute)  # None: inherited, found on a base class
    setattr(owner, attribute, value)
    try:
        yield
    finally:
        if original is None:
            delattr(owner, attribute)
        else:
            setattr(owner, attribute, original)


def closure_first(step):
    """torch's Adam.step, with the closure (Lightning's hook dispatch) called before it rather than
    inside it: the same work in the same order, so that a timer on this function is the
    optimizer's own step alone."""

    def step_after_closure(self, closure=None):
        if closure is not None:
            closure()
        return step(self)

    step_after_closure.hooked = True  # torch's profiling wrapper is in `step` already: not a second one around this
    return step_after_closure


def median_after(values: list[float], skip: int) -> float:
    return statistics.median(values[skip:] or values)


def project_costs(data_root: str, batch_size: int, steps: int, warmup: int, workdir: Path, k: int,
                  per_callback: bool = False) -> dict[str, float]:
    """One project run with timers: microseconds per GAN iteration for each row, and the iteration;
    k GAN iterations per training step (optim.iterations_per_step). With per_callback, also a row
    "<CALLBACK><class>" per callback: its own on_train_batch_start and _end together."""
    with Timers() as timers:
        timers.wrap(GAN, "training_step", "training_step")
        timers.wrap(LightningOptimizer, "step", "optimizer")
        own_step = timers.timed(torch.optim.Adam.step, "optimizer's own")
        timers.stack.enter_context(_patched(torch.optim.Adam, "step", closure_first(own_step)))
        timers.wrap(GAN, "manual_backward", "manual_backward")
        timers.wrap(torch.Tensor, "backward", "backward")
        timers.wrap(alarms.NonFiniteAlarm, "on_before_optimizer_step", "alarm")
        timers.wrap(GAN, "log_training", "log_training")
        timers.wrap(_PrefetchDataFetcher, "__next__", "fetch")
        timers.wrap(InMemoryImages, "__getitems__", "gather")
        timers.wrap(Strategy, "batch_to_device", "transfer")
        for hook in LOGGER_CONNECTOR_HOOKS:
            timers.wrap(_LoggerConnector, hook, f"logger connector {hook}")
        timers.stack.enter_context(_patched(call, "_call_callback_hooks", batch_hooks_timed(timers, call._call_callback_hooks, per_callback)))
        rate = throughput.project_run(data_root, batch_size, "non_saturating", steps, warmup, workdir, [f"optim.iterations_per_step={k}"])
    calls, us = timers.calls, 1e6
    per_batch = lambda name: median_after(calls[name], warmup // k) / k * us  # called once per loader batch
    per_update = lambda name: 2 * median_after(calls[name], 2 * warmup) * us  # twice per GAN step (d_steps=1)
    # The step is a mean over the timed steps, so is the training_step subtracted from it. The timed
    # steps end at the last batch's fetch: its training_step (which logs, at an epoch's end) is not in them.
    step = batch_size / rate * us
    training_step = statistics.mean(calls["training_step"][warmup // k:-1]) / k * us
    costs = {
        "step": step,
        "training_step": training_step,
        "optimizer layers": per_update("optimizer") - per_update("optimizer's own") - per_update("alarm"),
        "backward layers": per_update("manual_backward") - per_update("backward"),
        "NaN alarm": per_update("alarm"),
        "logging": us * sum(calls["log_training"][1:]) / max(len(calls["training_step"]) * k, 1),  # the first call: a one-off
        "between batches": step - training_step,
        "data fetch": per_batch("fetch"),
        "gather": per_batch("gather"),
        "batch transfer": per_batch("transfer"),
        "callbacks' batch hooks": sum(per_batch(name) for name in BATCH_HOOKS),
        "logger connector": sum(per_batch(f"logger connector {hook}") for hook in LOGGER_CONNECTOR_HOOKS),
    }
    costs["rest of the loop"] = costs["between batches"] - sum(costs[name] for name in LOOP_PARTS)
    for name in calls:
        if name.startswith(CALLBACK):
            owner = name.rsplit(".", 1)[0]
            costs[owner] = costs.get(owner, 0.0) + per_batch(name)
    return costs


BATCH_HOOKS = ("on_train_batch_start", "on_train_batch_end")
CALLBACK = "callback "  # the prefix of the per-callback rows
LOGGER_CONNECTOR_HOOKS = ("on_batch_start", "on_batch_end", "update_train_step_metrics")
LOOP_PARTS = ("data fetch", "batch transfer", "callbacks' batch hooks", "logger connector")  # timed parts of the loop between steps
LABELS = {"training_step": "GAN.training_step", "between batches": "Lightning's loop between training steps",
          "gather": "the gather of the batch's images (the tuned loop has one too)",
          "rest of the loop": "the rest: progress counters, the module's batch hooks, the training_step call's layers, ..."}


def batch_hooks_timed(timers: Timers, dispatch, per_callback: bool = False):
    """Lightning's callback dispatch, timed for the per-batch hooks; with per_callback, also each
    callback's own batch hooks (named "<class>.<hook>"), so that the dispatch's cost shows apart
    from theirs. Those timers add ~1 us a call to the dispatch's row: off by default."""
    timed = {hook: timers.timed(dispatch, hook) for hook in BATCH_HOOKS}
    seen = set()

    @functools.wraps(dispatch)
    def call_callback_hooks(trainer, hook_name, *args, **kwargs):
        if per_callback and hook_name in timed:
            for callback in trainer.callbacks:
                if (id(callback), hook_name) not in seen:  # as an instance attribute, which Lightning's getattr finds first
                    seen.add((id(callback), hook_name))
                    name = f"{CALLBACK}{type(callback).__name__}.{hook_name}"
                    setattr(callback, hook_name, timers.timed(getattr(callback, hook_name), name))
        return timed.get(hook_name, dispatch)(trainer, hook_name, *args, **kwargs)

    return call_callback_hooks


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=throughput.default_data_root(), help="folder holding MNIST/raw/")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=400, help="timed GAN steps per run")
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--iterations-per-step", type=int, default=1, metavar="K", help="the project's optim.iterations_per_step (default 1, as conf/)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--per-callback", action="store_true",
                   help="also time each callback's own batch hooks (their timers add ~1 us a call to the callbacks' row)")
    p.add_argument("--tiny", action="store_true", help="seconds: a smoke run (tests use it)")
    args = p.parse_args(argv)
    if args.tiny:
        args.batch_size, args.repeats, args.steps, args.warmup = 16, 1, 8, 4
    if args.threads:
        torch.set_num_threads(args.threads)
    throughput.quiet_logging()
    images = load_mnist_images(args.data_root, train=True)
    tuned, project = [], []
    with tempfile.TemporaryDirectory(prefix="gan_step_costs_", ignore_cleanup_errors=True) as tmp:  # the runs' checkpoints and logs
        workdir = Path(tmp)
        throughput.first_log_untimed(args.data_root, args.batch_size, "non_saturating", args.steps, workdir)
        for repeat in range(args.repeats):
            tuned.append(args.batch_size / throughput.plain_loop(images, args.batch_size, "non_saturating", args.steps, args.warmup, tuned=True) * 1e6)
            project.append(project_costs(args.data_root, args.batch_size, args.steps, args.warmup, workdir, args.iterations_per_step,
                                         args.per_callback))
            print(f"# repeat {repeat + 1}/{args.repeats}: tuned {tuned[-1]:.0f} us, project {project[-1]['step']:.0f} us per step", flush=True)

    median = lambda key: statistics.median(costs[key] for costs in project)
    print(f"\n## Microseconds per GAN step, batch {args.batch_size}" + (f", optim.iterations_per_step={args.iterations_per_step}" if args.iterations_per_step > 1 else ""))
    print(f"# torch {torch.__version__}, torch threads {torch.get_num_threads()}, {args.repeats} repeats x {args.steps} steps after {args.warmup}\n")
    unit = "us per GAN iteration" if args.iterations_per_step > 1 else "us per step"
    print(f"| | {unit} | share of the project's step |")
    print("|---|---:|---:|")
    step = median("step")
    print(f"| tuned loop, step | {statistics.median(tuned):,.0f} | |")
    print(f"| project, step | {step:,.0f} | 100 % |")
    print(f"| project - tuned | {step - statistics.median(tuned):,.0f} | {100 * (step - statistics.median(tuned)) / step:.0f} % |")
    for row, indent in ROWS:
        label = "&nbsp;" * 4 * (indent - 1) + LABELS.get(row, row)
        print(f"| {label} | {median(row):,.0f} | {100 * median(row) / step:.1f} % |")
    if args.per_callback:
        print_per_callback(project, median)
    ratios = [t / c["step"] for t, c in zip(tuned, project)]
    print(f"\nproject / tuned (images/s): {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
    from_layers = [1 - overhead(c) / c["step"] for c in project]
    print(f"project / tuned from the layers (1 - their share of the project's own step): "
          f"{statistics.median(from_layers):.3f} ({min(from_layers):.3f}-{max(from_layers):.3f})")


def print_per_callback(project: list[dict[str, float]], median) -> None:
    """The callbacks' batch hooks row split up: each callback's own hooks, and Lightning's dispatch
    around them (a profiler context per call, `_current_fx_name` set on the module per hook)."""
    owners = [name for name in project[0] if name.startswith(CALLBACK)]
    print("\n| callback (in `trainer.callbacks` order) | its own on_train_batch_start + _end, us per step |")
    print("|---|---:|")
    for owner in owners:
        print(f"| {owner[len(CALLBACK):]} | {median(owner):,.1f} |")
    dispatch = statistics.median(c["callbacks' batch hooks"] - sum(c[owner] for owner in owners) for c in project)
    print(f"| Lightning's dispatch around them (and these timers) | {dispatch:,.1f} |")


def overhead(costs: dict[str, float]) -> float:
    """What the project's step holds that the tuned loop's does not: Lightning's loop but the
    gather (the tuned loop has one), its optimizer and backward layers, the NaN alarm and logging.
    What remains of GAN.training_step is taken to be the tuned loop's arithmetic: anything else the
    project does there is missed (BENCHMARKS.md compares the two). As a share of one run's own
    step, this does not depend on how fast the machine was during that run, as the ratio of two
    runs one after the other does (+-20 % on this virtual machine)."""
    return costs["between batches"] - costs["gather"] + sum(costs[row] for row in STEP_LAYERS)


STEP_LAYERS = ("optimizer layers", "backward layers", "NaN alarm", "logging")  # the parts of GAN.training_step the tuned loop lacks


if __name__ == "__main__":
    main()
