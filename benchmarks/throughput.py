"""Throughput benchmark: images per second of the project's training against a plain
PyTorch loop and the usual Lightning GAN example, in one process, on the same threads.

    python benchmarks/throughput.py                      # the full table (several minutes)
    python benchmarks/throughput.py --contenders tuned project --losses non_saturating --no-ddp
                                                         # project / tuned loop at batch 64, 256, 1024 (a few minutes)
    python benchmarks/throughput.py --tiny --data-root D # seconds: a smoke run (tests use it)
    python benchmarks/throughput.py --device cuda --precision bf16-mixed --contenders plain project common
                                                         # on a GPU, in mixed precision (16-mixed: fp16 + loss scaling)

Contenders, all with the reference MLPs of gan_lightning.networks and the losses of gan_lightning.losses:
  tuned    the reference: a tuned hand-written loop with the project's own tricks and no framework:
           MNIST as one float tensor in memory (a batch is one index gather), one D pass over
           cat(real, fake), fused Adam, D's weights frozen (requires_grad False) in the G step.
  plain    a plain hand-written loop that leaves that speed on the table: the same data path,
           Adam without fused=True, two D passes, D's weight gradients computed in the G step.
  project  what `python train.py` runs: the real Hydra config (conf/) composed and handed to
           gan_lightning.train.train, i.e. Trainer.fit with the default callbacks, loggers and
           progress bar (its output sent to /dev/null), timed from batch `warmup` on by stamps that
           the DataLoader's collate_fn takes (not by a callback: Lightning calls every callback at
           ~8 points per batch, ~1% of a step here, which a user's run does not pay).
           (eval=none: the evaluation callback would only act after the timed steps.)
  common   the set-up of the usual Lightning GAN example: torchvision MNIST with a per-sample
           ToTensor (+ Normalize) transform through a DataLoader, toggle_optimizer around each
           step, G run twice, log_dict of both losses every step; timed like the project.
  data     the data pipeline alone: torchvision's per-sample path versus the project's loader.
And with --ddp (the default; --no-ddp leaves it out): `train.py` with trainer.devices=2 (CPU
processes, gloo) against devices=1 at the same global batch, each timed by a StepTimer callback in
its own processes (wall time, whatever --clock says).

Contenders are interleaved within each repeat so that other load on the machine hits them alike;
the table shows medians over the repeats.
"""

import argparse
import contextlib
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from unittest import mock

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:  # `python benchmarks/throughput.py` puts benchmarks/ first, not the project
    sys.path.insert(0, str(PROJECT))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf, open_dict  # noqa: E402
from torch.utils.data import DataLoader, default_collate  # noqa: E402
from torchvision import transforms  # noqa: E402
from torchvision.datasets import MNIST  # noqa: E402

import gan_lightning.data  # noqa: E402
from gan_lightning import losses  # noqa: E402
from gan_lightning.config import MATMUL_PRECISIONS  # noqa: E402
from gan_lightning.data import MNISTDataModule, load_mnist_images, scale_to_tanh_range  # noqa: E402
from gan_lightning.networks import MLPDiscriminator, MLPGenerator  # noqa: E402
from gan_lightning.precision import matmul_precision  # noqa: E402
from gan_lightning.train import CONFIG_DIR, train  # noqa: E402

GENERATOR_LOSSES = {
    "non_saturating": losses.non_saturating_generator_loss,
    "minimax": losses.minimax_generator_loss,
}
# The sample-quality evaluation callback acts only at epoch ends, outside the timed steps; off, it
# saves each measurement run the time of generating and scoring 10,000 images.
NO_END_OF_RUN_EVAL = ["eval=none"]
LR, BETAS, LOG_EVERY = 2e-4, (0.5, 0.999), 50  # as conf/optim/adam.yaml and conf/trainer/default.yaml


# What the step times are read from: wall time (the default), or with --clock cpu this process's CPU
# time, which on a machine shared with other work counts the steps' own work and not the waits for a
# core (meaningful with --threads 1: spinning OpenMP threads would count too).
clock = time.perf_counter


def images_per_second(times: list[float], warmup: int, batch_size: int) -> float:
    """From the end times of every step: the rate over the steps after the first `warmup`."""
    timed = len(times) - warmup
    return timed * batch_size / (times[-1] - times[warmup - 1])


class StepTimer(L.Callback):
    """Records when each training batch ends; with a path, rank 0 writes the times there as JSON."""

    def __init__(self, path: str | None = None):
        self.path = path
        self.times: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(clock())

    def on_train_end(self, trainer, pl_module) -> None:
        if self.path and trainer.is_global_zero:
            Path(self.path).write_text(json.dumps({"times": self.times, "world_size": trainer.world_size}))


class CollateStamps:
    """A collate_fn that records when each batch is made, then calls the real one. In steady state
    the DataLoader makes one batch per training step, so the stamps tick at the rate of the steps."""

    def __init__(self, collate):
        self.collate = collate
        self.times: list[float] = []

    def __call__(self, batch):
        self.times.append(clock())
        return self.collate(batch)


@contextlib.contextmanager
def quiet():
    """No progress bar or log lines on screen (they still run: the bar writes to /dev/null)."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        yield


# ---------------------------------------------------------------------------------------------
# (0) the tuned and (1) the plain PyTorch loop


AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def plain_loop(images: torch.Tensor, batch_size: int, loss: str, steps: int, warmup: int, device: str = "cpu", precision: str = "32-true", tuned: bool = False) -> float:
    """The plain loop, or with tuned=True the tuned one (fused Adam, one D pass, D frozen in the G step)."""
    torch.manual_seed(0)
    G, D = MLPGenerator().to(device), MLPDiscriminator().to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=LR, betas=BETAS, fused=tuned)
    opt_d = torch.optim.Adam(D.parameters(), lr=LR, betas=BETAS, fused=tuned)
    d_params = list(D.parameters())
    generator_loss, discriminator_loss = GENERATOR_LOSSES[loss], losses.gan_discriminator_loss
    data = scale_to_tanh_range(images).to(device)  # converted once, kept in (device) memory as float
    # mixed precision as torch's AMP recipe: autocast around the forward passes, loss scaling for fp16
    autocast = torch.autocast(device, dtype=AUTOCAST_DTYPES.get(precision, torch.float32), enabled=precision in AUTOCAST_DTYPES)
    scaler = torch.amp.GradScaler(device, enabled=precision == "16-mixed")
    times, batches_per_epoch = [], len(data) // batch_size
    while len(times) < warmup + steps:
        order = torch.randperm(len(data), device=device)
        for i in range(batches_per_epoch):
            real = data[order[i * batch_size : (i + 1) * batch_size]]
            with autocast:
                fake = G(torch.randn(batch_size, G.latent_dim, device=device))
                if tuned:  # one D pass: D scores samples independently
                    real_logits, fake_logits = D(torch.cat([real, fake.detach()])).float().split(batch_size)
                else:
                    real_logits, fake_logits = D(real).float(), D(fake.detach()).float()
                loss_d = discriminator_loss(real_logits, fake_logits)
            opt_d.zero_grad(set_to_none=True)
            scaler.scale(loss_d).backward()
            scaler.step(opt_d)
            scaler.update()
            for p in d_params if tuned else ():  # no D weight gradients in the G step
                p.requires_grad_(False)
            with autocast:
                loss_g = generator_loss(D(fake).float())  # the same fake batch, through the updated D
            for p in d_params if tuned else ():
                p.requires_grad_(True)
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(loss_g).backward()
            scaler.step(opt_g)
            scaler.update()
            if (len(times) + 1) % LOG_EVERY == 0:
                last_losses = (loss_d.item(), loss_g.item())  # what a script would print  # noqa: F841
            if device == "cuda" and len(times) + 1 == warmup + steps:
                torch.cuda.synchronize()  # the last step's kernels have run before its time is taken
            times.append(clock())
            if len(times) == warmup + steps:
                break
    return images_per_second(times, warmup, batch_size)


# ---------------------------------------------------------------------------------------------
# (2) the project, through train.py's own code path


def project_config(overrides: list[str], output_dir: str):
    """conf/train.yaml composed with overrides, as `python train.py overrides...` would see it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = output_dir
        cfg.hydra.runtime.cwd = str(PROJECT)
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} in the config and train.py's DDP scope
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.resolve(cfg)
    return cfg


def project_run(data_root: str, batch_size: int, loss: str, steps: int, warmup: int, workdir: Path, extra: list[str] = ()) -> float:
    overrides = [
        f"data.root={data_root}",
        f"data.batch_size={batch_size}",
        f"loss={loss}",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        *NO_END_OF_RUN_EVAL,
        *extra,
    ]
    cfg = project_config(overrides, str(workdir / f"project_{uuid.uuid4().hex[:8]}"))
    # steps and warmup count GAN iterations (one G update each); a loader batch holds iterations_per_step of them
    per_batch = cfg.optim.iterations_per_step
    warmup_batches = max(warmup // per_batch, 1)
    # whole loader batches, at least one timed after the warm-up (--tiny with iterations_per_step=8: 6 iterations)
    cfg.trainer.limit_train_batches = max(math.ceil((warmup + steps) / per_batch), warmup_batches + 1)
    stamps = CollateStamps(gan_lightning.data.keep_batch)
    with quiet(), mock.patch.object(gan_lightning.data, "keep_batch", stamps):  # the project's collate_fn
        train(cfg)
    return images_per_second(stamps.times, warmup_batches, instantiate(cfg.data.datamodule).images_per_step)


def first_log_untimed(data_root: str, batch_size: int, loss: str, steps: int, workdir: Path, extra: list[str] = ()) -> None:
    """An untimed project run up to its first logging step. The first self.log of a process takes
    ~0.3 s (Python fills its isinstance caches for the types Lightning's apply_to_collection meets),
    once per process. The project first logs at step 50, after the warm-up: in the first timed run
    it would cut that run's rate by a quarter."""
    project_run(data_root, batch_size, loss, min(LOG_EVERY, steps), 1, workdir, extra)


# ---------------------------------------------------------------------------------------------
# (4) the usual Lightning GAN example's set-up, with the same networks and losses


def torchvision_mnist(root: str) -> MNIST:
    """torchvision's per-sample path, scaled like the project: ToTensor then Normalize(0.5, 0.5) -> [-1, 1]."""
    return MNIST(root, train=True, download=False, transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))


class CommonExampleGAN(L.LightningModule):
    def __init__(self, loss: str):
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator = MLPGenerator(), MLPDiscriminator()
        self.generator_loss, self.discriminator_loss = GENERATOR_LOSSES[loss], losses.gan_discriminator_loss

    def configure_optimizers(self):
        return (
            torch.optim.Adam(self.generator.parameters(), lr=LR, betas=BETAS),
            torch.optim.Adam(self.discriminator.parameters(), lr=LR, betas=BETAS),
        )

    def training_step(self, batch):
        imgs, _ = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(imgs.shape[0], self.generator.latent_dim).type_as(imgs)

        self.toggle_optimizer(opt_d)
        loss_d = self.discriminator_loss(self.discriminator(imgs), self.discriminator(self.generator(z).detach()))
        self.manual_backward(loss_d)
        opt_d.step()
        opt_d.zero_grad()
        self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        loss_g = self.generator_loss(self.discriminator(self.generator(z)))
        self.manual_backward(loss_g)
        opt_g.step()
        opt_g.zero_grad()
        self.untoggle_optimizer(opt_g)

        self.log_dict({"loss_d": loss_d, "loss_g": loss_g}, prog_bar=True)


def common_run(data_root: str, batch_size: int, loss: str, steps: int, warmup: int, workdir: Path, device: str = "cpu", precision: str = "32-true") -> float:
    L.seed_everything(42, verbose=False)
    stamps = CollateStamps(default_collate)
    loader = DataLoader(torchvision_mnist(data_root), batch_size=batch_size, shuffle=True, collate_fn=stamps)
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", precision=precision, devices=1, max_epochs=1, limit_train_batches=warmup + steps,
        default_root_dir=str(workdir / f"common_{uuid.uuid4().hex[:8]}"),
    )
    with quiet():
        trainer.fit(CommonExampleGAN(loss), loader)
    return images_per_second(stamps.times, warmup, batch_size)


# ---------------------------------------------------------------------------------------------
# (3) the data pipeline alone


def loader_rate(loader: DataLoader, batch_size: int, steps: int, warmup: int) -> float:
    times = []
    while len(times) < warmup + steps:
        for _ in loader:
            times.append(clock())
            if len(times) == warmup + steps:
                break
    return images_per_second(times, warmup, batch_size)


def data_rates(data_root: str, batch_size: int, steps: int, warmup: int) -> dict[str, float]:
    torchvision_loader = DataLoader(torchvision_mnist(data_root), batch_size=batch_size, shuffle=True, drop_last=True)
    datamodule = MNISTDataModule(data_root, batch_size=batch_size, download=False)
    datamodule.setup("fit")
    return {
        "data_torchvision": loader_rate(torchvision_loader, batch_size, steps, warmup),
        "data_project": loader_rate(datamodule.train_dataloader(), batch_size, steps, warmup),
    }


# ---------------------------------------------------------------------------------------------
# (5) 2-process CPU DDP against 1 process, at the same global batch, through train.py


def ddp_overrides(data_root: str, devices: int, global_batch: int, steps: int, warmup: int, run_dir: Path, extra: list[str] = ()) -> list[str]:
    """train.py's overrides for one DDP comparison run; rank 0's step times land in run_dir/step_times.json."""
    return [
        f"data.root={data_root}", f"data.batch_size={global_batch // devices}",
        "trainer.accelerator=cpu", f"trainer.devices={devices}", "trainer.max_epochs=1",
        f"trainer.limit_train_batches={warmup + steps}",
        "+callbacks.step_timer._target_=benchmarks.throughput.StepTimer", f"+callbacks.step_timer.path={run_dir / 'step_times.json'}",
        f"hydra.run.dir={run_dir}", *NO_END_OF_RUN_EVAL, *extra,
    ]


def ddp_run(data_root: str, devices: int, global_batch: int, steps: int, warmup: int, workdir: Path, timeout: float, threads: int | None, extra: list[str] = ()) -> float:
    run_dir = workdir / f"ddp{devices}_{uuid.uuid4().hex[:8]}"
    times_file = run_dir / "step_times.json"
    cmd = [sys.executable, str(PROJECT / "train.py"), *ddp_overrides(data_root, devices, global_batch, steps, warmup, run_dir, extra)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]), "PYTHONWARNINGS": "ignore"}
    if threads:  # the same threads in all as in one process; else Lightning gives each of n processes nproc/n
        env["OMP_NUM_THREADS"] = str(max(1, threads // devices))
    result = subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    times = json.loads(times_file.read_text())["times"]
    return images_per_second(times, warmup, global_batch)


# ---------------------------------------------------------------------------------------------


def default_data_root() -> str:
    for candidate in ("data", "../shared/data"):
        if (Path(candidate) / "MNIST" / "raw").is_dir():
            return candidate
    return "data"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=default_data_root(), help="folder holding MNIST/raw/ (default: the first of data and ../shared/data that has it)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--losses", nargs="+", default=["non_saturating", "minimax"], choices=sorted(GENERATOR_LOSSES))
    p.add_argument("--contenders", nargs="+", default=["tuned", "plain", "project", "common", "data"], choices=["tuned", "plain", "project", "common", "data"])
    p.add_argument("--repeats", type=int, default=5, help="measurements per contender; the table shows their median")
    p.add_argument("--steps", type=int, default=150, help="timed steps (batches) per measurement")
    p.add_argument("--warmup", type=int, default=20, help="steps run before timing starts")
    p.add_argument("--project-override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra train.py override for the project contender (repeatable)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                   help="an extra contender: the project with these train.py overrides (repeatable), to measure a lever")
    p.add_argument("--ddp", action=argparse.BooleanOptionalAction, default=True, help="also compare train.py with 2 CPU processes to 1")
    p.add_argument("--ddp-batch", type=int, default=64, help="global batch of the DDP comparison")
    p.add_argument("--ddp-steps", type=int, default=300)
    p.add_argument("--ddp-repeats", type=int, default=3)
    p.add_argument("--ddp-timeout", type=float, default=600)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where tuned, plain, project and common train (data and DDP: on the CPU)")
    p.add_argument("--precision", choices=["32-true", "bf16-mixed", "16-mixed"], default="32-true", help="trainer.precision of the project and common, autocast of the tuned and plain loops")
    p.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS, default="highest",
                   help="torch.set_float32_matmul_precision of every contender (the project's matmul_precision)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="time steps by wall time, or by this process's CPU time (a busy machine; use with --threads 1); not the DDP runs")
    p.add_argument("--tiny", action="store_true", help="a few steps of one small batch size, one repeat (for tests)")
    p.add_argument("--json", default=None, help="also write every measurement to this file")
    args = p.parse_args(argv)
    if args.tiny:
        args.batch_sizes, args.losses, args.repeats, args.steps, args.warmup = [16], ["non_saturating"], 1, 4, 2
        args.ddp_batch, args.ddp_steps, args.ddp_repeats = 16, 4, 1
    return args


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over repeats of a[i] / b[i]: contenders measured side by side share the machine's load of the moment."""
    return median([x / y for x, y in zip(a, b)])


def ratio_range(a: list[float], b: list[float]) -> str:
    """The paired ratios a[i] / b[i] as "median (min-max)"."""
    ratios = [x / y for x, y in zip(a, b)]
    return f"{median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else "nan"


def quiet_logging() -> None:
    """No warnings and no log lines below errors from Lightning and the project in this process."""
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "gan_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def measure(args: argparse.Namespace, variants: dict[str, list[str]], images: torch.Tensor, workdir: Path) -> dict[tuple, list[float]]:
    """Every contender's rates, images/s, by (contender, batch size, loss); runs write under workdir."""
    results: dict[tuple, list[float]] = {}
    if "project" in args.contenders or variants:
        first_log_untimed(args.data_root, args.batch_sizes[0], args.losses[0], args.steps, workdir, args.project_override)
    for repeat in range(args.repeats):
        for batch_size in args.batch_sizes:
            if "data" in args.contenders:
                for name, rate in data_rates(args.data_root, batch_size, args.steps, args.warmup).items():
                    results.setdefault((name, batch_size, "-"), []).append(rate)
            for loss in args.losses:
                for name in ("tuned", "plain", "project", "common"):
                    if name not in args.contenders:
                        continue
                    if name == "project":  # train() sets its matmul_precision itself
                        rate = project_run(args.data_root, batch_size, loss, args.steps, args.warmup, workdir, args.project_override)
                    else:
                        with matmul_precision(args.matmul_precision):
                            if name in ("tuned", "plain"):
                                rate = plain_loop(images, batch_size, loss, args.steps, args.warmup, args.device, args.precision, tuned=name == "tuned")
                            else:
                                rate = common_run(args.data_root, batch_size, loss, args.steps, args.warmup, workdir, args.device, args.precision)
                    results.setdefault((name, batch_size, loss), []).append(rate)
                for name, overrides in variants.items():
                    rate = project_run(args.data_root, batch_size, loss, args.steps, args.warmup, workdir, args.project_override + overrides)
                    results.setdefault((name, batch_size, loss), []).append(rate)
        print(f"# repeat {repeat + 1}/{args.repeats} done, load average {os.getloadavg()[0]:.2f}", flush=True)

    if args.ddp:
        for repeat in range(args.ddp_repeats):
            for devices in (1, 2):
                rate = ddp_run(args.data_root, devices, args.ddp_batch, args.ddp_steps, args.warmup, workdir, args.ddp_timeout, args.threads)
                results.setdefault((f"ddp_{devices}proc", args.ddp_batch, "non_saturating"), []).append(rate)

    return results


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: torch sees no CUDA GPU here", file=sys.stderr)
        sys.exit(2)
    if args.device == "cuda" and args.ddp and torch.cuda.device_count() < 2:
        args.ddp = False  # DDP on GPUs needs two of them
        print("# --device cuda with one GPU: the DDP comparison is left out")
    # the project on the chosen device and precision (after project_run's trainer.accelerator=cpu)
    args.project_override = [f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}", f"trainer.precision={args.precision}",
                             f"matmul_precision={args.matmul_precision}", *args.project_override]
    args.data_root = str(Path(args.data_root).resolve())
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        global clock
        clock = time.process_time
    quiet_logging()

    print(f"# torch {torch.__version__}, lightning {L.__version__}, torch threads {torch.get_num_threads()}, "
          f"nproc {os.cpu_count()}, device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "")
          + f", precision {args.precision}, matmul precision {args.matmul_precision}, clock {args.clock}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# {args.repeats} repeats x {args.steps} timed steps after {args.warmup} warm-up steps; data: {args.data_root}")
    if args.project_override:
        print(f"# project overrides: {' '.join(args.project_override)}")

    variants = {}
    for spec in args.variant:
        name, _, overrides = spec.partition(":")
        variants[f"project[{name}]"] = [o for o in overrides.split(",") if o]
    images = load_mnist_images(args.data_root, train=True)
    # the runs' checkpoints, event files and grids: hundreds of MB a command, gone with it
    with tempfile.TemporaryDirectory(prefix="gan_throughput_", ignore_cleanup_errors=True) as workdir:
        results = measure(args, variants, images, Path(workdir))
    if args.json:
        Path(args.json).write_text(json.dumps([{"contender": k[0], "batch": k[1], "loss": k[2], "images_per_s": v} for k, v in results.items()], indent=1))
    print()
    print("## Training, images/s (median over repeats); ratios: median of the ratios within each repeat")
    print()
    # the columns of the contenders that ran
    names = {"tuned": "(0) tuned loop", "plain": "(1) plain loop", "project": "(2) project", "common": "(4) common example"}
    ran = [n for n in names if n in args.contenders]
    ratios = {"tuned": "(2)/(0) median (min-max)", "plain": "(2)/(1)", "common": "(2)/(4)"}
    ratio_of = [n for n in ratios if n in ran] if "project" in ran else []
    print("| batch | loss | " + " | ".join([names[n] for n in ran] + [ratios[n] for n in ratio_of]) + " |")
    print("|---:|---|" + "---:|" * (len(ran) + len(ratio_of)))
    for batch_size in args.batch_sizes:
        for loss in args.losses:
            rates = {n: results.get((n, batch_size, loss), []) for n in ran}
            cells = [f"{median(rates[n]):,.0f}" for n in ran]
            cells += [ratio_range(rates["project"], rates[n]) if n == "tuned" else f"{paired_ratio(rates['project'], rates[n]):.2f}" for n in ratio_of]
            print(f"| {batch_size} | {loss} | " + " | ".join(cells) + " |")
    if variants:
        print()
        print("## Project variants (levers), images/s (median) and ratio to the project as configured")
        print()
        tuned = "tuned" in args.contenders  # then also each variant against the tuned loop, as (2) above
        print("| batch | loss | variant | overrides | images/s | vs (2) |" + (" vs (0) median (min-max) |" if tuned else ""))
        print("|---:|---|---|---|---:|---:|" + ("---:|" if tuned else ""))
        for batch_size in args.batch_sizes:
            for loss in args.losses:
                project = results.get(("project", batch_size, loss), [])
                for name, overrides in variants.items():
                    rates = results[(name, batch_size, loss)]
                    vs_tuned = f" {ratio_range(rates, results[('tuned', batch_size, loss)])} |" if tuned else ""
                    print(f"| {batch_size} | {loss} | {name} | {' '.join(overrides)} | {median(rates):,.0f} | {paired_ratio(rates, project):.2f} |{vs_tuned}")
    if "data" in args.contenders:
        print()
        print("## Data pipeline alone, images/s (median)")
        print()
        print("| batch | (3a) torchvision per-sample | (3b) project | (3b)/(3a) |")
        print("|---:|---:|---:|---:|")
        for batch_size in args.batch_sizes:
            tv, ours = (results[(n, batch_size, "-")] for n in ("data_torchvision", "data_project"))
            print(f"| {batch_size} | {median(tv):,.0f} | {median(ours):,.0f} | {paired_ratio(ours, tv):.1f} |")
    if args.ddp:
        one, two = (results[(f"ddp_{d}proc", args.ddp_batch, "non_saturating")] for d in (1, 2))
        print()
        print(f"## train.py, CPU, global batch {args.ddp_batch}: 1 process vs 2 DDP processes (gloo), images/s (median)")
        print()
        print("| 1 process | 2 processes | 2/1 |")
        print("|---:|---:|---:|")
        print(f"| {median(one):,.0f} | {median(two):,.0f} | {paired_ratio(two, one):.2f} |")
    print()
    print(f"# load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
