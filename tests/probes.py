"""Test-only callbacks, added to a run with `+callbacks.<name>._target_=tests.probes.<Class>`."""

import hashlib
import json
import os
import signal
import warnings
from pathlib import Path

import lightning as L


class RecordBatches(L.Callback):
    """Writes, per rank, a fingerprint (hash of the pixels) of every image it trained on in epoch 0."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.seen: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 0:
            self.seen += [hashlib.sha1(image.cpu().numpy().tobytes()).hexdigest() for image in batch]

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


class KillSelf(L.Callback):
    """SIGKILLs its own process at the first training batch when seed == kill_seed: a job that dies
    without a word, as one killed by the OOM killer or `kill -9` does."""

    def __init__(self, seed: int, kill_seed: int):
        self.kill = seed == kill_seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.kill:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


class WaitForJobs(L.Callback):
    """Holds a sweep job before its first batch until `jobs` jobs of its sweep have started (each
    has written its job_status.json): jobs that run at the same time all get past it, jobs run one
    after another cannot (the first gives up after timeout_s with an error)."""

    def __init__(self, jobs: int, timeout_s: float = 120):
        self.jobs, self.timeout_s = jobs, timeout_s

    def on_train_start(self, trainer, pl_module):
        import time

        from hydra.core.hydra_config import HydraConfig

        sweep, deadline = Path(HydraConfig.get().sweep.dir), time.time() + self.timeout_s
        while len(list(sweep.glob("*/job_status.json"))) < self.jobs:
            if time.time() > deadline:
                raise RuntimeError(f"{self.jobs} jobs of the sweep did not run at the same time")
            time.sleep(0.1)


class Warn(L.Callback):
    """Issues a Python warning (warnings.warn) when training starts: where it ends up is what is tested."""

    def __init__(self, message: str):
        self.message = message

    def on_train_start(self, trainer, pl_module) -> None:
        warnings.warn(self.message)


class SigtermDuringSave(L.Callback):
    """Rank 0 sends itself SIGTERM while the checkpoint of step `step` is being saved: inside
    Trainer.save_checkpoint, whose barrier the other process may already wait in."""

    def __init__(self, step: int):
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.global_rank == 0 and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
