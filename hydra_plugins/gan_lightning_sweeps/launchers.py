"""Hydra launchers of gan-lightning (Hydra finds plugins only in the hydra_plugins package).

    hydra/launcher=sequential  the default: jobs one after another in this process (Hydra's basic launcher)
    hydra/launcher=parallel    several jobs at once on this machine, each in its own process (submitit's
                               local executor): a GPU each (or jobs_per_gpu to a GPU), or cores / jobs threads each
    hydra/launcher=slurm       one SLURM job per sweep job (submitit), trainer.devices tasks per node for DDP

All three check every job's config before the first job starts, and a job whose process dies
(killed, out of memory) becomes a 'killed' job of the sweep instead of the sweep's end.
"""

import logging
import os
import shutil
import signal
import sys
import time
from collections import deque
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from gan_lightning import compat

log = logging.getLogger(__name__)


@dataclass
class Job:
    idx: int
    overrides: list[str]
    run_dir: Path
    devices: int  # processes the job starts (trainer.devices x trainer.num_nodes): GPUs it needs on a GPU machine


def refuse(launcher, message: str) -> None:
    """Stop the sweep before its first job with one line and exit 2, leaving no sweep folder that
    holds only the multirun.yaml Hydra wrote before launching (a re-run of an existing sweep keeps its own)."""
    print(f"error: {message}", file=sys.stderr)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    if sweep_dir.is_dir() and [p.name for p in sweep_dir.iterdir()] == ["multirun.yaml"]:
        (sweep_dir / "multirun.yaml").unlink()
        sweep_dir.rmdir()
    sys.exit(2)


def check_jobs(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Job]:
    """Compose every job's config and check it, so a bad value in job 5 stops the sweep before job 0
    runs (one line naming the job and the key, exit 2), instead of after hours of the others."""
    from gan_lightning.config import ConfigError, validate
    from gan_lightning.train import process_count

    try:
        compat.check(compat.SWEEP_CHECKS)
    except compat.CompatError as err:
        refuse(launcher, str(err))
    jobs = []
    shared = set.intersection(*(set(o) for o in job_overrides)) if len(job_overrides) > 1 else set()
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.num = idx
            cfg.hydra.job.id = f"job_id_for_{idx}"
        try:
            validate(cfg)
        except ConfigError as err:
            swept = [o for o in filter_overrides(overrides) if o not in shared]  # what tells this job apart
            refuse(launcher, f"sweep job #{idx} ({' '.join(swept)}): {err}; no job was started")
        run_dir = Path(str(cfg.hydra.sweep.dir)) / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
        # devices=auto counts as one device here: the job takes what the launcher gives it
        jobs.append(Job(idx, list(overrides), run_dir, process_count(cfg.trainer) or 1))
    return jobs


def lost_job(job: Job, reason: str) -> JobReturn:
    """The return of a job whose process died without reporting: NaN, as for any failed job, so
    that the sweep (and an Optuna study, which records NaN as a failed trial) goes on."""
    from gan_lightning.sweeps import read_status, write_status

    status = read_status(job.run_dir) or {}
    if status.get("status") in (None, "running"):
        write_status(job.run_dir, job=job.idx, overrides=job.overrides, run_dir=str(job.run_dir), status="killed", error=reason)
    log.error("#%d: %s", job.idx, reason)
    ret = JobReturn(overrides=job.overrides, status=JobStatus.COMPLETED)
    ret.return_value = float("nan")
    return ret


class SequentialLauncher(compat.BasicLauncher):
    """Hydra's basic launcher (jobs one after another, in this process), after checking every job."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        check_jobs(self, job_overrides, initial_job_idx)
        return super().launch(job_overrides, initial_job_idx)


class DeviceSlots:
    """Which GPUs a new job may use: each of num_gpus GPUs takes up to jobs_per_gpu jobs at once;
    a job that needs n devices (DDP) gets n different GPUs."""

    def __init__(self, num_gpus: int, jobs_per_gpu: int = 1):
        self.free = {gpu: jobs_per_gpu for gpu in range(num_gpus)}

    def take(self, n: int) -> list[int] | None:
        # the least busy GPUs first, so that jobs spread over the GPUs before they share one
        gpus = sorted((gpu for gpu, left in self.free.items() if left > 0), key=lambda g: (-self.free[g], g))[:n]
        if len(gpus) < n:
            return None
        for gpu in gpus:
            self.free[gpu] -= 1
        return gpus

    def give_back(self, gpus: list[int]) -> None:
        for gpu in gpus:
            self.free[gpu] += 1


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def gpu_count() -> int:
    """This machine's GPUs (GAN_FAKE_GPU_COUNT fakes them in tests)."""
    fake = os.environ.get("GAN_FAKE_GPU_COUNT")
    if fake is not None:
        return int(fake)
    import torch

    return torch.cuda.device_count()


@contextmanager
def environment(**values: str):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def saved_since(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since
    except OSError:
        return False


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(signum)


class ParallelLauncher(BaseSubmititLauncher):
    """Runs up to `jobs` jobs of the sweep at once on this machine, each in a process of its own
    started by submitit's local executor (which also keeps each job's stdout/stderr in
    <sweep>/.submitit/). On a machine with GPUs each job gets its own GPU(s) through
    CUDA_VISIBLE_DEVICES, jobs_per_gpu of them share one; without GPUs each job gets
    threads_per_job torch threads (default: the cores divided by the jobs running at once), so
    parallel jobs never oversubscribe the CPU.

    jobs: null = as many as the GPUs take (GPUs x jobs_per_gpu), or 2 on a CPU (1 where two jobs'
    DDP processes, trainer.devices each, would outnumber the cores)."""

    _EXECUTOR = "local"

    def __init__(self, jobs: int | None = None, jobs_per_gpu: int = 1, threads_per_job: int | None = None,
                 poll_s: float = 0.5, **params: Any) -> None:
        super().__init__(**params)
        self.jobs, self.jobs_per_gpu, self.threads_per_job, self.poll_s = jobs, jobs_per_gpu, threads_per_job, poll_s

    def width(self, num_gpus: int, devices: int = 1) -> int:
        """How many jobs run at once; devices: the most processes one job starts."""
        if self.jobs is not None:
            return max(int(self.jobs), 1)
        return num_gpus * self.jobs_per_gpu if num_gpus else max(min(2, usable_cores() // devices), 1)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        jobs = check_jobs(self, job_overrides, initial_job_idx)
        num_gpus = gpu_count()
        width = self.width(num_gpus, max(job.devices for job in jobs))
        threads = self.threads_per_job or max(usable_cores() // width, 1)
        slots = DeviceSlots(num_gpus, self.jobs_per_gpu)
        for job in jobs:
            if num_gpus and job.devices > num_gpus:
                refuse(self, f"sweep job #{job.idx} needs {job.devices} GPUs, this machine has {num_gpus}")

        executor = submitit.LocalExecutor(folder=self.params["submitit_folder"])
        executor.update_parameters(timeout_min=self.params["timeout_min"], stderr_to_stdout=self.params.get("stderr_to_stdout", False))
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Launching %d jobs, %d at a time (%s)", len(jobs), width,
                 f"{num_gpus} GPUs, {self.jobs_per_gpu} job(s) per GPU" if num_gpus else f"{threads} torch thread(s) per job")

        pending, running, results = deque(jobs), {}, {}
        # SIGTERM (a scheduler stopping this process) ends the sweep as Ctrl-C does, running jobs saved
        previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
        try:
            while pending or running:
                while pending and len(running) < width:
                    job = pending[0]
                    gpus = slots.take(job.devices) if num_gpus else []
                    if gpus is None:
                        break
                    pending.popleft()
                    # submitit sets CUDA_VISIBLE_DEVICES from these; the thread count reaches torch through OMP_NUM_THREADS
                    executor.update_parameters(gpus_per_node=len(gpus), visible_gpus=tuple(gpus), tasks_per_node=1)
                    per_process = max(threads // max(job.devices, 1), 1) if not num_gpus else threads
                    with environment(OMP_NUM_THREADS=str(per_process), MKL_NUM_THREADS=str(per_process)):
                        submitted = executor.submit(self, job.overrides, "hydra.sweep.dir", job.idx, f"job_id_for_{job.idx}", Singleton.get_state())
                    log.info("\t#%d : %s%s", job.idx, " ".join(filter_overrides(job.overrides)),
                             f"  (GPU {','.join(map(str, gpus))})" if gpus else f"  ({per_process} thread(s))")
                    running[submitted] = (job, gpus)
                finished = [s for s in running if s.done()]
                for submitted in finished:
                    job, gpus = running.pop(submitted)
                    slots.give_back(gpus)
                    results[job.idx] = self.collect(submitted, job)
                if not finished:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt as stop:
            # Ctrl-C or SIGTERM of the sweep: each running job saves its checkpoint (SIGTERM reaches
            # it through submitit's controller) so that a re-run of the sweep continues it.
            stopped_at = time.time()
            for submitted in running:
                compat.job_process(submitted).send_signal(signal.SIGTERM)
            for submitted in running:
                compat.job_process(submitted).wait()
            # a job stopped before its first step has nothing to save
            saved = sum(saved_since(job.run_dir / "checkpoints" / "interrupted.ckpt", stopped_at) for job, _ in running.values())
            print(f"error: sweep stopped; {saved} of {len(running)} running job(s) saved a checkpoint; the same command with "
                  f"hydra.sweep.dir={self.config.hydra.sweep.dir} continues it", file=sys.stderr)
            sys.exit(128 + (stop.args[0] if stop.args else signal.SIGINT))  # 143 after SIGTERM, 130 after Ctrl-C
        finally:
            signal.signal(signal.SIGTERM, previous)
            with suppress(OSError):  # the executor makes its folder pattern (.submitit/%j) as a folder, empty
                Path(self.params["submitit_folder"]).rmdir()
        return [results[job.idx] for job in jobs]

    @staticmethod
    def collect(submitted, job: Job) -> JobReturn:
        # A local process that has ended without its result file never writes one: submitit's
        # results() would wait 15 s for it (a grace period meant for slow cluster file systems).
        if not submitted.paths.result_pickle.exists():
            return lost_job(job, f"the job's process ended without a result (killed?); its output: {submitted.paths.stdout}")
        try:
            return submitted.results()[0]
        except Exception as err:  # submitit's UncompletedJobError / FailedJobError: the process died
            from gan_lightning.summary import first_line

            return lost_job(job, f"the job's process died: {first_line(err)}")


class SlurmLauncher(BaseSubmititLauncher):
    """One SLURM job per sweep job, submitted by submitit with the resources in
    conf/hydra/launcher/slurm.yaml. Jobs that fail or are killed become failed jobs of the sweep."""

    _EXECUTOR = "slurm"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if shutil.which("srun") is None:  # submitit's own words for it come with a traceback
            refuse(self, "hydra/launcher=slurm needs a SLURM cluster, and srun is not on this machine's PATH "
                         "(hydra/launcher=parallel runs the jobs here)")
        jobs = check_jobs(self, job_overrides, initial_job_idx)
        tasks = self.params.get("tasks_per_node", 1) * self.params.get("nodes", 1)
        for job in jobs:
            if job.devices != tasks:
                refuse(self, f"sweep job #{job.idx} asks for {job.devices} processes (trainer.devices x trainer.num_nodes), "
                             f"the SLURM launcher for {tasks} (hydra.launcher.tasks_per_node x nodes): sweep one device count at a time")
        return super().launch(job_overrides, initial_job_idx)

    def sbatch_script(self, command: str = "<command>") -> str:
        """The sbatch script launch() submits for a job, built the way hydra-submitit-launcher
        builds its executor (for checking the settings without a cluster; needs `srun` on PATH)."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params.get("max_num_timeout", 0))
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in self.params.items()
                                      if k not in ("submitit_folder", "max_num_timeout")})
        return compat.sbatch_text(executor, command)
