"""What a run tells the user when it ends, however it ends: a few lines on the console and in the run
folder's train.log, and the same as summary.json in the run folder (for scripts and the sweep table)."""

import json
import logging
import os
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
# the scalars a user looks at first, as the summary names them
SHOWN = {"eval/fid_mnist": "fid_mnist", "eval/classes_covered": "classes_covered", "train/loss_d": "loss_d", "train/loss_g": "loss_g"}


def first_line(err: BaseException) -> str:
    """An exception's message as one line (its first), or its type's name when it has none: what the
    one-line errors and the summaries show of it."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def shown_path(path: Path | str) -> str:
    """A path as the user can paste it from where they started: relative to the current folder when
    below it (outputs/runs/...), else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def final_metrics(trainer: L.Trainer) -> dict[str, float]:
    """Every scalar the run logged last (eval/..., train/..., warning/...), as plain floats (not the
    progress bar's short copies of the losses)."""
    return {name: round(float(value), 6) for name, value in sorted(trainer.callback_metrics.items()) if "/" in name and value.numel() == 1}


def newest_checkpoint_of(paths) -> Path | None:
    """The most recently written of these checkpoint files, leaving out the hidden temporary file of
    an unfinished save (.<name>.tmp); None when there is none."""
    found = [p for p in paths if not p.name.startswith(".")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint to continue this run from: the newest of checkpoints/*.ckpt (last.ckpt,
    interrupted.ckpt, an epoch checkpoint)."""
    return newest_checkpoint_of((run_dir / "checkpoints").glob("*.ckpt"))


def write_summary(trainer: L.Trainer, run_dir: Path | str, status: str, error: str | None = None, steps: int | None = None) -> dict | None:
    """Log the end of the run and write run_dir/summary.json; rank 0 only (returns None elsewhere).
    status: completed, stopped (an alarm with stop=true), interrupted, diverged or failed. steps:
    the steps done, when not the trainer's count (a diverged step, stopped before its updates, is not done)."""
    if not trainer.is_global_zero:
        return None
    run_dir = Path(run_dir)
    steps = trainer.global_step if steps is None else steps
    metrics = final_metrics(trainer)
    checkpoint = resume_checkpoint(run_dir)
    tensorboard = any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers)
    summary = {
        "status": status,
        "error": error,
        "run_dir": str(run_dir.resolve()),
        "steps": steps,
        "metrics": metrics,
        "checkpoint": str(checkpoint.resolve()) if checkpoint else None,
        "tensorboard": f"tensorboard --logdir {shown_path(run_dir)}" if tensorboard else None,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")

    shown = ", ".join(f"{label} {metrics[name]:.4g}" for name, label in SHOWN.items() if name in metrics)
    lines = [f"run {status} at step {steps}: {shown_path(run_dir)}"
             + (f" ({error})" if error else ""),
             f"final: {shown or 'no metrics logged'}"]
    alarms = [name.removeprefix("warning/") for name, value in metrics.items() if name.startswith("warning/") and value]
    if alarms:
        lines.append(f"alarms on at the end: {', '.join(alarms)} (their warnings are in train.log)")
    if checkpoint:
        lines.append(f"resume: ckpt_path={shown_path(checkpoint)}")
    csv = [shown_path(Path(logger.log_dir) / "metrics.csv") for logger in trainer.loggers if isinstance(logger, CSVLogger)]
    watch = summary["tensorboard"] or (f"the scalars are in {csv[0]}" if csv else "no logger wrote the scalars")
    lines.append(f"watch: {watch}   (summary.json, train.log beside it)")
    for line in lines:
        log.info("%s", line)
    return summary


def read_summary(run_dir: Path | str) -> dict | None:
    try:
        return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None


def nothing_of_its_own(folder: Path, job_log: str) -> bool:
    """The run folder holds only what Hydra writes before the task starts (.hydra/, the job's log)
    and at most the TensorBoard event file and Lightning's hparams.yaml written before the first step:
    no checkpoint, no sample grid, no summary. What a run that stopped on bad input leaves."""
    return folder.is_dir() and all(p.name in (".hydra", job_log, "hparams.yaml") or p.name.startswith("events.out.tfevents.")
                                   for p in folder.iterdir())
