"""A report from a Hydra sweep: one table row per configuration (seeds pooled) and PNG plots.

`python report.py outputs/multirun/<sweep>` (or `gan-report <sweep>`) reads every run folder of the
sweep (its .hydra/ config and overrides, its TensorBoard events or CSV log, its sample grids) and
writes report.md and *.png into that folder. Runs that crashed or stopped early are listed in the
report and left out of the table and plots; runs without eval metrics show "n/a".
"""

import argparse
import csv
import math
import re
import statistics
import sys
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from gan_lightning.summary import read_summary  # noqa: E402
from gan_lightning.sweeps import describe, read_status  # noqa: E402

# Scalars logged by the eval callback and by GAN.training_step (x-axis: batches = generator steps).
FID, CLASSES, KL, SCORE = "eval/fid_mnist", "eval/classes_covered", "eval/kl_uniform", "eval/classifier_score"
TRAIN_TAGS = ["train/loss_d", "train/loss_g", "train/d_real", "train/d_fake", "train/grad_norm_g"]
SAMPLES = ("train/samples", "samples")  # the sample grid image of every epoch's end (its tag in runs of older versions)
POOLED_KEYS = {"seed"}  # overrides that make repetitions of one configuration, not a new one

Series = list[tuple[int, float]]  # (step, value)


@dataclass
class Run:
    path: Path
    name: str  # the run's folder inside the sweep (Hydra: <job.num>_<override_dirname>)
    overrides: list[str]
    config: dict
    scalars: dict[str, Series] = field(default_factory=dict)
    wall_time: float | None = None  # seconds from the first to the last logged event
    epoch_ends: list[int] = field(default_factory=list)  # steps of the sample grids, one at the end of each epoch
    has_log: bool = False  # TensorBoard event files or a metrics.csv were found
    problem: str | None = None  # why the run is left out (crashed, unfinished, no logs); None when complete

    @property
    def job_num(self) -> int:
        match = re.match(r"(\d+)", self.name)
        return int(match.group(1)) if match else 1 << 30

    @property
    def config_key(self) -> tuple[str, ...]:
        """The run's overrides without the pooled ones: runs sharing it differ only by seed."""
        return tuple(sorted(o for o in self.overrides if override_key(o) not in POOLED_KEYS))

    def last(self, tag: str) -> float | None:
        series = self.scalars.get(tag)
        return series[-1][1] if series else None

    def best(self, tag: str, lower_is_better: bool = True) -> float | None:
        series = self.scalars.get(tag)
        if not series:
            return None
        values = [v for _, v in series]
        return min(values) if lower_is_better else max(values)

    def epoch_at(self, step: int) -> int | None:
        """The epoch (0-based) a step belongs to: the epochs that ended before it, from the steps of the
        sample grids in TensorBoard (whose logger leaves out Lightning's `epoch` scalar), else from
        that scalar (a CSV log, TensorBoard runs of older versions). None when neither is there."""
        if self.epoch_ends:
            # counted from the run's first grid: a run resumed into a new folder starts at a later epoch
            grids = sorted((self.path / "samples").glob("epoch_*.png"))
            first = int(grids[0].stem.split("_")[1]) if grids else 0
            return first + sum(end < step for end in self.epoch_ends)
        epochs = [int(v) for s, v in self.scalars.get("epoch", []) if s <= step]
        return max(epochs) if epochs else None

    def last_sample(self) -> Path | None:
        samples = sorted((self.path / "samples").glob("epoch_*.png"))
        return samples[-1] if samples else None


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def read_tensorboard(run_dir: Path) -> tuple[dict[str, Series], float | None, list[int]]:
    """All scalars of the run's event files (several files are merged by step), the wall time, and the
    steps of the sample grids (the ends of the epochs)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = defaultdict(dict)
    epoch_ends: set[int] = set()
    first, last = math.inf, -math.inf
    for folder in sorted({f.parent for f in run_dir.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        try:
            first = min(first, acc.FirstEventTimestamp())
        except ValueError:  # an empty event file
            continue
        for tag in acc.Tags()["scalars"]:
            for event in acc.Scalars(tag):
                scalars[tag][event.step] = event.value
                last = max(last, event.wall_time)
        for tag in acc.Tags()["images"]:
            last = max([last, *(event.wall_time for event in acc.Images(tag))])
            if tag in SAMPLES:
                epoch_ends.update(event.step for event in acc.Images(tag))
    wall = last - first if math.isfinite(first) and math.isfinite(last) else None
    return {tag: sorted(points.items()) for tag, points in scalars.items()}, wall, sorted(epoch_ends)


def read_csv_log(path: Path, started: float) -> tuple[dict[str, Series], float]:
    """Scalars of a Lightning CSVLogger metrics.csv (blank cells: not logged at that row's step).
    The CSV has no timestamps: the wall time is the time between the Hydra config and the last write."""
    scalars: dict[str, dict[int, float]] = defaultdict(dict)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row["step"]))
            for tag, value in row.items():
                if tag != "step" and value not in ("", None):
                    scalars[tag][step] = float(value)
    return {tag: sorted(points.items()) for tag, points in scalars.items()}, path.stat().st_mtime - started


def load_run(run_dir: Path, name: str) -> Run:
    hydra_dir = run_dir / ".hydra"
    config = OmegaConf.to_container(OmegaConf.load(hydra_dir / "config.yaml"))
    overrides_file = hydra_dir / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
    run = Run(run_dir, name, [str(o) for o in overrides], config)
    csv_logs = sorted(run_dir.rglob("metrics.csv"))
    run.has_log = bool(csv_logs) or any(run_dir.rglob("events.out.tfevents.*"))
    if any(run_dir.rglob("events.out.tfevents.*")):
        run.scalars, run.wall_time, run.epoch_ends = read_tensorboard(run_dir)
    elif csv_logs:
        run.scalars, run.wall_time = read_csv_log(csv_logs[-1], (hydra_dir / "config.yaml").stat().st_mtime)
    run.problem = find_problem(run)
    return run


def find_problem(run: Run) -> str | None:
    """Why the run did not finish training as configured: the sweep job's own record when there is
    one (job_status.json, written by gan_lightning.sweeps) or the run's summary.json, else judged
    from what it left behind."""
    status = read_status(run.path)
    if status and status.get("status") not in (None, "completed"):
        state = describe(status)
        if status["status"] == "running" and state == "killed":
            state += " (its process died)"
        return f"{state}: {status['error']}" if status.get("error") else state
    summary = read_summary(run.path)
    if (status or summary or {}).get("status") == "completed":
        return None  # at max_steps or max_epochs, whichever came first
    if not run.has_log:
        return "no TensorBoard events or metrics.csv: the job crashed before training (its error is in the sweep's console output)"
    if not any(tag in run.scalars for tag in TRAIN_TAGS):
        return "no training scalars logged (a crash in its first step)"
    trainer = run.config.get("trainer", {})
    last_step = max(s for series in run.scalars.values() for s, _ in series)
    max_steps, max_epochs = trainer.get("max_steps") or -1, trainer.get("max_epochs")
    samples = run.last_sample()
    # An epoch's sample grid is written when it ends. Without grids, the last epoch seen in the
    # scalars counts as done (a crash inside it then goes unnoticed).
    last_epoch = int(samples.stem.split("_")[1]) if samples else run.epoch_at(last_step)
    epochs_done = None if last_epoch is None else last_epoch + 1
    if max_epochs is not None and max_epochs > 0 and epochs_done is not None and epochs_done >= max_epochs:
        return None  # max_epochs came first (or alone)
    if max_steps > 0:
        # Scalars are written every log_every_n_steps steps, so the last one can fall short of max_steps.
        if last_step + trainer.get("log_every_n_steps", 1) < max_steps:
            return f"unfinished: logged up to step {last_step} of {max_steps} (crashed, interrupted or still running)"
        return None
    if epochs_done is not None and max_epochs is not None and max_epochs > 0:
        return f"unfinished: {epochs_done} of {max_epochs} epochs done (crashed, interrupted or still running)"
    return None  # nothing to judge by


def find_runs(sweep_dir: Path) -> list[Run]:
    # Any depth: an override value holding a "/" (optimized_metric=eval/fid_mnist) nests the run folder.
    run_dirs = [config.parent.parent for config in sweep_dir.rglob(".hydra/config.yaml")]
    runs = [load_run(d, str(d.relative_to(sweep_dir)) if d != sweep_dir else d.name) for d in run_dirs]
    return sorted(runs, key=lambda r: (r.job_num, r.name))


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    """Complete runs by configuration, labelled by the overrides that vary between configurations
    (those shared by the whole sweep, such as data.root, would only lengthen every label)."""
    complete = [r for r in runs if r.problem is None]
    keys = list(dict.fromkeys(r.config_key for r in complete))  # in the order of the runs
    shared = set.intersection(*(set(k) for k in keys)) if keys else set()
    groups = {}
    for key in keys:
        label = ", ".join(short(o) for o in key if o not in shared) or "all runs"
        groups[label] = [r for r in complete if r.config_key == key]
    return groups


def short(override: str) -> str:
    """key=value with a float value to 3 significant digits (Optuna's trials have long floats)."""
    key, _, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    return override if number.is_integer() else f"{key}={number:.3g}"


def mean_std(values: list[float | None], digits: int = 2) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def format_seconds(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    mean = statistics.mean(values)
    return f"{mean / 60:.1f} min" if mean >= 60 else f"{mean:.0f} s"


def table(groups: dict[str, list[Run]]) -> list[str]:
    lines = [
        "| configuration | seeds | final FID | best FID | classes covered | KL to uniform | classifier score | wall time / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, runs in groups.items():
        seeds = ", ".join(str(r.config.get("seed")) for r in runs)
        lines.append(
            f"| {label} | {len(runs)} ({seeds}) | {mean_std([r.last(FID) for r in runs])} "
            f"| {mean_std([r.best(FID) for r in runs])} | {mean_std([r.last(CLASSES) for r in runs], 1)} "
            f"| {mean_std([r.last(KL) for r in runs], 3)} | {mean_std([r.last(SCORE) for r in runs])} "
            f"| {format_seconds([r.wall_time for r in runs])} |"
        )
    return lines


def mean_curve(runs: list[Run], tag: str, x_of=None) -> tuple[list[float], list[float], list[float], list[float]]:
    """Mean, min and max over runs of one scalar at each x (step, or x_of(run, step)) logged by all runs."""
    per_x: dict[float, list[float]] = defaultdict(list)
    for run in runs:
        for step, value in run.scalars.get(tag, []):
            x = x_of(run, step) if x_of else step
            if x is not None:
                per_x[x].append(value)
    xs = sorted(x for x, vs in per_x.items() if len(vs) == len(runs))
    return xs, [statistics.mean(per_x[x]) for x in xs], [min(per_x[x]) for x in xs], [max(per_x[x]) for x in xs]


def plot_curves(ax, groups: dict[str, list[Run]], tag: str, x_of=None, max_x: float | None = None) -> bool:
    """One line per configuration: the mean over its seeds, shaded from the lowest to the highest seed
    (a band that stays positive on the log scales of D(G(z)) and of the gradient norm)."""
    drawn = False
    for label, runs in groups.items():
        curve = [point for point in zip(*mean_curve(runs, tag, x_of)) if max_x is None or point[0] <= max_x]
        if not curve:
            continue
        xs, means, lows, highs = zip(*curve)
        (line,) = ax.plot(xs, means, marker="." if len(xs) < 30 else None, label=f"{label} (n={len(runs)})")
        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15)
        drawn = True
    return drawn


def eval_epoch(run: Run, step: int) -> int | None:
    """Eval metrics are logged at the end of an epoch: the epoch that ends at that step, 1-based."""
    epoch = run.epoch_at(step)
    return None if epoch is None else epoch + 1


def save(fig, path: Path, layout: bool = True) -> None:
    if layout:
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_fid(groups, out: Path) -> bool:
    fig, ax = plt.subplots(figsize=(11, 4.5))
    drawn = plot_curves(ax, groups, FID, eval_epoch)
    if drawn:
        ax.set(xlabel="epochs trained", ylabel="FID (MNIST classifier features)", title="FID against epoch (mean over seeds, band: min to max)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        # below the curves, not on or beside them: a label lists a configuration's overrides, and a long
        # one beside the plot squeezed it to a strip
        fig.tight_layout()  # before the legend, which would squeeze the plot: the saved image grows to hold it instead
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles, [textwrap.fill(label, 150) for label in labels], fontsize=7, loc="upper center",
                  bbox_to_anchor=(0.5, -0.14), ncol=1 if max(map(len, labels)) > 70 else 2)
        save(fig, out, layout=False)
    plt.close(fig)
    return drawn


def plot_early_steps(groups, out: Path, early_steps: int) -> bool:
    fig, (ax_d, ax_g) = plt.subplots(1, 2, figsize=(12, 4.5))
    drawn = plot_curves(ax_d, groups, "train/d_fake", max_x=early_steps)
    drawn |= plot_curves(ax_g, groups, "train/grad_norm_g", max_x=early_steps)
    ax_d.set(xlabel="step (batch)", ylabel="mean D(G(z))", title=f"D(G(z)) over the first {early_steps} steps\n(logistic losses; the others log raw scores)", yscale="log")
    ax_g.set(xlabel="step (batch)", ylabel="‖∇G‖ (generator loss)", title=f"generator gradient norm, first {early_steps} steps", yscale="log")
    if drawn:
        fig.legend(*ax_d.get_legend_handles_labels(), fontsize=7, loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(groups) / 2)))
        save(fig, out)
    plt.close(fig)
    return drawn


def plot_training(groups, out: Path) -> bool:
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    drawn = False
    for ax, tag in zip(axes.flat, TRAIN_TAGS):
        drawn |= plot_curves(ax, groups, tag)
        ax.set(xlabel="step (batch)", title=tag)
    axes.flat[4].set_yscale("log")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    axes.flat[5].axis("off")
    axes.flat[5].legend(handles, labels, fontsize=8, loc="center")
    if drawn:
        save(fig, out)
    plt.close(fig)
    return drawn


def plot_samples(groups, out: Path) -> bool:
    """The last sample grid of each configuration's first run (fixed sample noise: comparable)."""
    shown = [(label, runs[0], runs[0].last_sample()) for label, runs in groups.items() if runs[0].last_sample()]
    if not shown:
        return False
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, run, png) in zip(axes.flat, shown):
        ax.imshow(plt.imread(png), cmap="gray")
        ax.set_title(f"{label}\nseed {run.config.get('seed')}, {png.stem} (epochs from 0, as Lightning counts)", fontsize=7)
    save(fig, out)
    return True


def sweep_command(sweep_dir: Path) -> str | None:
    """`python train.py -m ...` as typed, from the sweep's multirun.yaml."""
    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        return None
    hydra_cfg = OmegaConf.load(path).get("hydra", {})
    task = list(OmegaConf.select(hydra_cfg, "overrides.task", default=[]) or [])
    return " ".join(["python train.py -m", *map(str, task)])


def write_report(sweep_dir: Path, early_steps: int = 500, more_sweeps: tuple[Path, ...] = ()) -> Path:
    """Read the sweep's runs (and those of more_sweeps, e.g. the rest of a grid run separately) and
    write report.md and the PNGs into sweep_dir; returns report.md."""
    sweep_dir = Path(sweep_dir)
    runs = find_runs(sweep_dir)
    for other in map(Path, more_sweeps):
        for run in find_runs(other):
            run.name = f"{other.name}/{run.name}"
            runs.append(run)
    groups = group_runs(runs)
    left_out = [r for r in runs if r.problem]
    lines = [f"# Sweep report: `{'`, `'.join(d.name for d in (sweep_dir, *map(Path, more_sweeps)))}`", ""]
    commands = [c for c in map(sweep_command, (sweep_dir, *map(Path, more_sweeps))) if c]
    if commands:
        lines += ["Command:" if len(commands) == 1 else "Commands:", "", *(f"    {c}" for c in commands), ""]
    lines += [
        f"{len(runs)} runs found, {len(runs) - len(left_out)} complete, in {len(groups)} configurations "
        f"(runs that differ only by {', '.join(sorted(POOLED_KEYS))} are pooled: mean ± std over them).",
        "",
        "FID and classifier score: final value and lowest value over the run's evaluations; classes covered "
        "and KL(class histogram ‖ uniform) at the end of training; wall time from the first to the last logged event.",
        "",
        *table(groups),
        "",
    ]
    results = sweep_dir / "optimization_results.yaml"
    if results.exists():  # an Optuna search: its best trial, and the study's history drawn by the sweeper
        lines += ["Optuna's result (`optimization_results.yaml`):", "", "```yaml", results.read_text().strip(), "```", ""]
        for name, title in (("optuna_history.png", "Optuna: value against trial"), ("optuna_slice.png", "Optuna: value against each parameter")):
            if (sweep_dir / name).exists():
                lines += [f"## {title}", "", f"![{title}]({name})", ""]
    if not any(r.scalars.get(FID) for rs in groups.values() for r in rs):
        lines += ["No eval metrics (eval/fid_mnist ...) in these runs: FID and coverage are n/a.", ""]

    plots = [
        ("fid_vs_epoch.png", "FID against epoch", lambda p: plot_fid(groups, p)),
        ("early_steps.png", f"D(G(z)) and generator gradient norm over the first {early_steps} steps", lambda p: plot_early_steps(groups, p, early_steps)),
        ("training_curves.png", "Training curves", lambda p: plot_training(groups, p)),
        ("samples.png", "Last sample grid of each configuration", lambda p: plot_samples(groups, p)),
    ]
    for filename, title, draw in plots:
        (sweep_dir / filename).unlink(missing_ok=True)
        if draw(sweep_dir / filename):
            lines += [f"## {title}", "", f"![{title}]({filename})", ""]
        else:
            lines += [f"## {title}", "", "n/a (nothing logged for it).", ""]

    lines += ["## Runs", "", "| run | status | final FID | wall time |", "|---|---|---|---|"]
    for run in runs:
        status = "complete" if run.problem is None else f"**left out**: {run.problem}"
        fid = run.last(FID)
        lines.append(f"| `{run.name}` | {status} | {'n/a' if fid is None else f'{fid:.2f}'} | {format_seconds([run.wall_time])} |")
    report = sweep_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder, e.g. outputs/multirun/<timestamp>; the report goes there")
    parser.add_argument("more_sweeps", type=Path, nargs="*", help="more sweep folders to report with it (e.g. the rest of a grid)")
    parser.add_argument("--early-steps", type=int, default=500, help="steps shown in early_steps.png (default 500)")
    args = parser.parse_args(argv)
    for folder in (args.sweep_dir, *args.more_sweeps):
        if not folder.is_dir():
            parser.error(f"{folder} is not a folder")
    try:
        report = write_report(args.sweep_dir, args.early_steps, tuple(args.more_sweeps))
    except OSError as err:  # a read-only or full sweep folder
        print(f"error: cannot write report.md and its plots into {args.sweep_dir}: {err.strerror or err} ({err.filename})", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {report}")


if __name__ == "__main__":
    main()
