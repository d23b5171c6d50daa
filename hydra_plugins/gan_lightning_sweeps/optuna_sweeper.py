"""An Optuna search as a Hydra sweeper whose study lives in a database, so that it survives crashes.

Why not the hydra-optuna-sweeper plugin: its latest release (1.3.0) still requires optuna < 3,
and optuna 2.x's database storage fails under SQLAlchemy 2 (an AssertionError at the first
`sqlite:///` URL), so with it a study could only live in memory. This sweeper keeps that plugin's
config keys and search-space syntax (`interval`, `tag(log, ...)`, `range`, `choice`) on current
Optuna, and adds what a long search needs:

- storage: the study's database; by default `sqlite:///<sweep folder>/optuna.db`, so that running
  the same command again with hydra.sweep.dir=<that folder> continues the same study. A shared
  database (`postgresql://...`) lets several machines work on one study.
- n_trials is the study's budget: finished trials (completed or failed) count, so a resumed
  search runs only the rest. A trial cut off by a crash of the search (it stays RUNNING in the
  database) is marked failed and run again with the same parameters, in its own folder, from its
  newest checkpoint.
- A failed or diverged trial (train.py returns NaN) is recorded as FAIL; the search goes on.
- At the end: optimization_results.yaml, and the study's history as PNGs beside it.
"""

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gan_lightning.sweeps import process_alive
from hydra_plugins.gan_lightning_sweeps.launchers import gpu_count

log = logging.getLogger(__name__)

WORKER = "worker"  # trial user attribute: host:pid of the search process that asked for the trial
CONTINUES = "continues_trial"  # trial user attribute: the interrupted trial this one runs again


def distribution(override: Override) -> optuna.distributions.BaseDistribution | str:
    """An Optuna distribution from one search-space entry in Hydra's override syntax."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep():
        return optuna.distributions.CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        if value.shuffle or any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return optuna.distributions.CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
        return optuna.distributions.IntDistribution(int(value.start), int(value.stop - value.step), step=int(value.step))
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return optuna.distributions.IntDistribution(value.start, value.end, log=log_scale)
        return optuna.distributions.FloatDistribution(value.start, value.end, log=log_scale)
    raise ValueError(f"{override.input_line}: not a search space Optuna can sample")


def alive(worker: str | None) -> bool:
    """Whether the search process that asked for a trial still runs (known only on its own host)."""
    if not worker:
        return False
    host, _, pid = worker.rpartition(":")
    return process_alive(host, pid) is not False  # another machine's trial: assume it is still being worked on


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: Any = None, direction: str = "minimize", storage: str | None = None,
                 study_name: str | None = None, n_trials: int = 20, n_jobs: int | None = None,
                 params: dict | None = None, plots: bool = True) -> None:
        self.sampler_cfg, self.direction, self.storage = sampler, direction, storage  # sampler: its config (_recursive_: false)
        self.study_name, self.n_trials, self.n_jobs = study_name, n_trials, n_jobs
        self.params = dict(params or {})
        self.plots = plots

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context, task_function=task_function)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def search_space(self, arguments: list[str]) -> tuple[dict, dict]:
        """Distributions to sample, and fixed values, from the config's params and the command line."""
        parser = OverridesParser.create()
        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        searched, fixed = {}, {}
        for override in parser.parse_overrides(lines):
            dist = distribution(override)
            key = override.get_key_element()
            if isinstance(dist, str):
                fixed[key] = dist
                searched.pop(key, None)
            else:
                searched[key] = dist
                fixed.pop(key, None)
        return searched, fixed

    def study(self) -> optuna.Study:
        storage = self.storage
        if storage is None:
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
            storage = f"sqlite:///{(self.sweep_dir / 'optuna.db').resolve()}"
        study = optuna.create_study(study_name=self.study_name, storage=storage, direction=self.direction, load_if_exists=True)
        if self.sampler_cfg is not None:
            sampler_cfg = OmegaConf.create(OmegaConf.to_container(self.sampler_cfg, resolve=True))
            if sampler_cfg.get("seed") is not None:
                # A continued study must not draw its first trials again: the seed moves on with the trials
                sampler_cfg.seed = int(sampler_cfg.seed) + len(study.trials)
            study.sampler = instantiate(sampler_cfg)
        return study

    def width(self) -> int:
        """Trials asked for at once: n_jobs, or with n_jobs null as many as the launcher runs jobs at once."""
        if self.n_jobs:
            return int(self.n_jobs)
        # by its method, not its class: Hydra's plugin scan loads the launchers' module a second time
        return self.launcher.width(gpu_count()) if callable(getattr(self.launcher, "width", None)) else 1

    def sweep(self, arguments: list[str]) -> None:
        searched, fixed = self.search_space(arguments)
        study = self.study()
        me = f"{socket.gethostname()}:{os.getpid()}"
        # Trials left RUNNING by a search that died: failed now, asked again below with their params.
        again = []
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if not alive(trial.user_attrs.get(WORKER)):
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                again.append(trial)
        done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL))
                if t.number not in {a.number for a in again}]
        to_go = max(self.n_trials - len(done), 0)
        log.info("Study %s in %s: %d trial%s finished before, %d to go%s", study.study_name, self.storage or self.sweep_dir / "optuna.db",
                 len(done), "" if len(done) == 1 else "s", to_go, f" ({len(again)} cut off, run again)" if again else "")
        next_job = 1 + max([t.user_attrs.get("job", -1) for t in study.get_trials(deepcopy=False)], default=-1)
        width = self.width()

        while to_go > 0:
            if again:  # each in its old job number, so that it finds its own folder and checkpoint
                old = again.pop(0)
                study.enqueue_trial(old.params, user_attrs={CONTINUES: old.number})
                batch, first_job = [study.ask(searched)], old.user_attrs.get("job", next_job)
            else:
                batch, first_job = [study.ask(searched) for _ in range(min(width, to_go))], next_job
                next_job += len(batch)
            for offset, trial in enumerate(batch):
                trial.set_user_attr(WORKER, me)
                trial.set_user_attr("job", first_job + offset)
            overrides = [[f"{k}={v}" for k, v in trial.params.items()] + [f"{k}={v}" for k, v in fixed.items()] for trial in batch]
            returns = self.launcher.launch(overrides, initial_job_idx=first_job)
            for trial, ret in zip(batch, returns):
                try:
                    value = float(ret.return_value)
                except Exception as err:  # the job raised: a failed trial, not the end of the search
                    log.warning("trial %d failed: %s", trial.number, err)
                    value = float("nan")
                # NaN (a job that failed or diverged) is recorded by Optuna as a FAIL trial
                study.tell(trial, value if value == value else None,
                           state=None if value == value else optuna.trial.TrialState.FAIL)
            to_go -= len(batch)
        self.finish(study)

    def finish(self, study: optuna.Study) -> None:
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            log.error("no trial of study %s completed", study.study_name)
            return
        best = study.best_trial
        results = {"name": "optuna", "study_name": study.study_name, "best_trial": best.number, "best_params": best.params,
                   "best_value": best.value, "trials_complete": len(complete), "trials_failed": len(study.get_trials(
                       deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))}
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
        log.info("Best parameters: %s, value %s (trial %d)", best.params, best.value, best.number)
        if self.plots:
            self.plot(study)

    def plot(self, study: optuna.Study) -> None:
        """The study's history (best value against trial) and a slice plot per parameter, as PNGs."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import optuna.visualization.matplotlib as vis
        import warnings

        logging.getLogger("matplotlib.category").setLevel(logging.WARNING)  # its notes on categorical axes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
            for name, draw in (("optuna_history.png", vis.plot_optimization_history), ("optuna_slice.png", vis.plot_slice)):
                try:
                    result = draw(study)
                    figure = (result.flat[0] if hasattr(result, "flat") else result).figure
                    figure.savefig(self.sweep_dir / name, dpi=100, bbox_inches="tight")
                    plt.close(figure)
                except Exception as err:  # a plot is a convenience: never fail the search for it
                    log.warning("could not draw %s: %s", name, err)
