"""What a job of a Hydra sweep does beyond training, and what the sweep tells the user at its end.

Every job of a multirun (`python train.py -m ...`, any launcher, any sweeper) goes through
run_sweep_job: it skips a job that finished in an earlier run of the same sweep folder, resumes an
interrupted one from its newest checkpoint, turns a failure into a recorded status instead of the
end of the sweep, and leaves `job_status.json` in its folder. SweepSummary (a Hydra callback) reads
those files when the sweep ends, prints one table, and exits non-zero when a job failed.
"""

import json
import logging
import math
import os
import socket
import sys
import time
import traceback
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from gan_lightning.alarms import NonFiniteError
from gan_lightning.summary import newest_checkpoint_of

log = logging.getLogger(__name__)

STATUS_FILE = "job_status.json"
# A job with one of these statuses is done: a re-run of the sweep skips it. A diverged job (NaN
# stop) is a result of its settings, not an accident; a failed, killed or interrupted one runs again.
FINISHED = ("completed", "diverged")


def folder_name(num: int, overrides: str, limit: int = 120) -> str:
    """A sweep job's folder name: its number, then its overrides (Hydra's override_dirname, which
    leaves out those every job shares: NameJobsBySweptKeys), e.g. `0_optim.lr_d=0.0001,optim.lr_g=0.0001`;
    TensorBoard names the job's run so. Overrides longer than `limit` characters are cut, with a hash
    of the whole: file systems refuse names over 255 bytes, and Optuna's long floats make long ones.
    Used in conf/hydra/default.yaml as ${folder_name:...}."""
    if len(overrides) > limit:
        import hashlib

        overrides = f"{overrides[:limit]}_{hashlib.sha1(overrides.encode()).hexdigest()[:8]}"
    return f"{num}_{overrides}" if overrides else str(num)


OmegaConf.register_new_resolver("folder_name", folder_name, replace=True)


def shared_keys(config: DictConfig) -> list[str]:
    """The keys a multirun sets to one value for all its jobs (data.root=..., trainer.max_steps=200),
    from its command line and hydra.sweeper.params: every override that is not a sweep (a,b /
    range() / choice() / interval())."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    lines = [*config.hydra.overrides.task, *(f"{key}={value}" for key, value in params.items())]
    overrides = OverridesParser.create().parse_overrides(lines)
    swept = {o.key_or_group for o in overrides if o.is_sweep_override()}
    return sorted({o.key_or_group for o in overrides} - swept)


class NameJobsBySweptKeys(Callback):
    """At the start of a multirun, leave the overrides all its jobs share out of the job folder names,
    so that they say what tells the jobs apart, short enough for TensorBoard's list of runs. Hydra's
    own override_dirname.exclude_keys does it, set through the sweep's hydra overrides, from which
    Hydra composes every job's config (whatever the launcher)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        excluded = list(config.hydra.job.config.override_dirname.exclude_keys)
        more = [key for key in shared_keys(config) if key not in excluded]
        if more:
            keys = ",".join(f"'{key}'" for key in excluded + more)  # quoted: a group key may hold '@' or '/'
            with read_write(config.hydra.overrides):
                config.hydra.overrides.hydra.append(f"hydra.job.config.override_dirname.exclude_keys=[{keys}]")


def read_status(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_status(folder: Path, **fields) -> dict:
    """Merge fields into the job's status file, atomically (a reader never sees half a file)."""
    path = Path(folder) / STATUS_FILE
    status = {**(read_status(folder) or {}), **fields, "updated": time.time()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status, indent=1))
    os.replace(tmp, path)
    return status


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a job left behind to continue from: last.ckpt, an epoch checkpoint,
    interrupted.ckpt (Ctrl-C, SIGTERM) or Lightning's SLURM hpc_ckpt_N.ckpt, whichever is newest."""
    run_dir = Path(run_dir)
    return newest_checkpoint_of([*(run_dir / "checkpoints").glob("*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")])


def last_line(err: BaseException) -> str:
    """`Type: message` on one line, as the last line of a traceback reads."""
    text = "".join(traceback.format_exception_only(type(err), err)).strip().splitlines()
    return text[-1] if text else type(err).__name__


def resources() -> dict:
    """Where the job ran: what a user checks when parallel jobs are slow or share a GPU."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "torch_threads": torch.get_num_threads(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def process_alive(host: str | None, pid) -> bool | None:
    """Whether process pid of host still runs; None for another host's, which this one cannot tell."""
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True


def still_running(status: dict) -> bool:
    """Whether the process a 'running' job's status names still runs (known only on its own host),
    as a job of a parallel sweep that was killed with kill -9 does, without its sweep."""
    process = status.get("resources") or {}
    return (status.get("status") == "running" and process.get("pid") != os.getpid()
            and process_alive(process.get("host"), process.get("pid")) is True)


def run_sweep_job(cfg: DictConfig, train_fn, expected_errors: tuple = ()) -> float:
    """Run one job of a sweep with train_fn(cfg); always returns a float (NaN when it did not
    complete) so that no job ends the sweep. expected_errors are reported by their message alone;
    any other exception with its traceback in the job's log."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    job = {"job": int(hydra_cfg.job.num), "overrides": list(hydra_cfg.overrides.task), "run_dir": str(run_dir)}
    before = read_status(run_dir)
    if before and before.get("status") in FINISHED and before.get("overrides") == job["overrides"]:
        log.info("job #%d %s in an earlier run of this sweep: skipped", job["job"], before["status"])
        value = before.get("value")
        return float("nan") if value is None else value
    if before and before.get("overrides") == job["overrides"] and still_running(before):
        log.error("job #%d still runs in process %s, started by an earlier run of this sweep: not started twice in one folder; "
                  "run the sweep again once that process has ended", job["job"], before["resources"]["pid"])
        return float("nan")
    if cfg.get("ckpt_path") is None and (checkpoint := newest_checkpoint(run_dir)) is not None:
        with open_dict(cfg):
            cfg.ckpt_path = str(checkpoint)
        log.info("job #%d continues from %s", job["job"], checkpoint)
    write_status(run_dir, **job, status="running", error=None, value=None, resumed_from=cfg.get("ckpt_path"),
                 started=time.time(), resources=resources())
    try:
        value = train_fn(cfg)
    except NonFiniteError as err:
        log.error("%s", err)
        write_status(run_dir, status="diverged", error=str(err))
        return float("nan")
    except expected_errors as err:
        log.error("%s", err)
        write_status(run_dir, status="failed", error=str(err))
        return float("nan")
    except Exception as err:
        log.exception("job #%d failed", job["job"])
        write_status(run_dir, status="failed", error=last_line(err))
        return float("nan")
    except BaseException as err:  # Ctrl-C, SIGTERM: the sweep stops, this job can continue later
        # Lightning ends a Ctrl-C with sys.exit(1): say what it was, not "SystemExit: 1"
        what = "Ctrl-C" if isinstance(err, (KeyboardInterrupt, SystemExit)) else last_line(err)
        write_status(run_dir, status="interrupted", error=what)
        raise
    write_status(run_dir, status="completed", value=value, last_checkpoint=str(newest_checkpoint(run_dir) or ""))
    return float("nan") if value is None else value


def sweep_statuses(sweep_dir: Path) -> list[dict]:
    """The status of every job folder of a sweep (any depth: an override value with a '/' nests it)."""
    statuses = []
    for path in Path(sweep_dir).rglob(STATUS_FILE):
        status = read_status(path.parent)
        if status is not None and ".submitit" not in path.parts:
            status.setdefault("run_dir", str(path.parent))
            statuses.append(status)
    return sorted(statuses, key=lambda s: s.get("job", 1 << 30))


def describe(status: dict) -> str:
    """A job's status as the summary shows it; a job still 'running' once the sweep is over was
    killed, unless its process runs on (a job of an earlier, killed run of the sweep)."""
    if status.get("status") == "running":
        return "still running" if still_running(status) else "killed"
    return status.get("status", "unknown")


def summary_table(statuses: list[dict], metric: str, sweep_dir: Path) -> list[str]:
    """One row per job; the overrides column leaves out those shared by every job (data.root, ...)."""
    overrides = [s.get("overrides", []) for s in statuses]
    shared = set.intersection(*map(set, overrides)) if len(overrides) > 1 else set()
    rows = [("job", "status", metric, "overrides", "run folder")]
    for s, job_overrides in zip(statuses, overrides):
        value = s.get("value")
        shown = f"{value:.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"
        folder = Path(s.get("run_dir", ""))
        folder = folder.relative_to(sweep_dir) if folder.is_relative_to(sweep_dir) else folder
        rows.append((f"#{s.get('job', '?')}", describe(s), shown, " ".join(o for o in job_overrides if o not in shared) or "-", str(folder)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    for s in statuses:
        state = describe(s)
        if state == "still running":
            lines.append(f"#{s.get('job')}: its process {s['resources']['pid']}, started by an earlier run of this sweep, "
                         "still trains in its folder; run the sweep again once it has ended")
        elif state != "completed" and s.get("error"):
            lines.append(f"#{s.get('job')}: {s['error']}")
    return lines


class SweepSummary(Callback):
    """At the end of a multirun: one table (job, status, final metric, overrides, run folder),
    the error line of every job that did not complete, and exit status 1 when a job's status is
    in fail_on (a job still 'running' after the sweep counts as 'killed', or as 'still running' while
    its process, of an earlier run of the sweep, runs on)."""

    def __init__(self, metric: str = "eval/fid_mnist", fail_on: tuple = ("failed", "killed", "still running", "diverged", "interrupted")):
        self.metric = metric
        self.fail_on = tuple(fail_on)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = sweep_statuses(sweep_dir)
        if not statuses:
            return
        lines = summary_table(statuses, self.metric, sweep_dir)
        failed = [s for s in statuses if describe(s) in self.fail_on]
        done = sum(describe(s) == "completed" for s in statuses)
        lines.append(f"{done} of {len(statuses)} jobs completed; run folders in {sweep_dir}"
                     + (f"; re-run the same command with hydra.sweep.dir={sweep_dir} to run the others again" if failed else ""))
        text = "\n".join(lines)
        (sweep_dir / "summary.txt").write_text(text + "\n")
        print(text, flush=True)
        if failed:
            sys.exit(1)
