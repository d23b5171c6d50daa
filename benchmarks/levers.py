"""Which changes to the GAN step pay on this machine? A plain loop in variants, timed interleaved.

    python benchmarks/levers.py --batch-sizes 64 256 --repeats 5 --threads 1

Variants (each adds to `base`, the plain loop of benchmarks/throughput.py):
  cat       one D pass over cat(real, fake) for the D step (D scores samples independently)
  frozen    D's parameters frozen (requires_grad False) during the G step: no D weight gradients
  cat+frozen        both (what gan_lightning.module.GAN does)
  cat+frozen+foreach  and Adam(foreach=True): one multi-tensor kernel per op instead of a loop
  cat+frozen+fused    and Adam(fused=True): one fused kernel (rounding may differ in the last bits)
  cat+frozen+compile  and torch.compile of both networks (compile time excluded: warm-up), default Adam
  cat+frozen+fused+compile        fused Adam and torch.compile of both networks
  cat+frozen+fused+compile_steps  fused Adam and torch.compile of G, of the D step's D pass and loss,
                                  and of the G step's D pass and loss (whole-step graphs; the G
                                  forward stays apart, its graph is used by both backward passes)
  cat+frozen+fused+bf16           fused Adam, the forward passes under bf16 autocast (trainer.precision=bf16-mixed)
  cat+frozen+fused+compile_steps+bf16   both: inductor may fuse autocast's casts into its kernels
  cat+frozen+fused+medium         fused Adam, fp32 throughout, torch.set_float32_matmul_precision("medium")
                                  (matmul_precision=medium: bf16 inside the matrix products on a CPU with AMX)
"""

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

import torch  # noqa: E402

from benchmarks.throughput import BETAS, LR, default_data_root, images_per_second  # noqa: E402
from gan_lightning.data import load_mnist_images, scale_to_tanh_range  # noqa: E402
from gan_lightning.losses import gan_discriminator_loss, non_saturating_generator_loss  # noqa: E402
from gan_lightning.module import frozen  # noqa: E402
from gan_lightning.networks import MLPDiscriminator, MLPGenerator  # noqa: E402
from gan_lightning.precision import matmul_precision  # noqa: E402

VARIANTS = ["base", "cat", "frozen", "cat+frozen", "cat+frozen+foreach", "cat+frozen+fused", "cat+frozen+compile",
            "cat+frozen+fused+compile", "cat+frozen+fused+compile_steps", "cat+frozen+fused+bf16", "cat+frozen+fused+compile_steps+bf16",
            "cat+frozen+fused+medium"]


def run(variant: str, data: torch.Tensor, batch_size: int, steps: int, warmup: int) -> float:
    with matmul_precision("medium" if "medium" in variant.split("+") else "highest"):
        return run_levers(variant, data, batch_size, steps, warmup)


def run_levers(variant: str, data: torch.Tensor, batch_size: int, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    G, D = MLPGenerator(), MLPDiscriminator()
    levers = set(variant.split("+"))
    adam = {"foreach": True} if "foreach" in levers else {"fused": True} if "fused" in levers else {}
    opt_g = torch.optim.Adam(G.parameters(), lr=LR, betas=BETAS, **adam)
    opt_d = torch.optim.Adam(D.parameters(), lr=LR, betas=BETAS, **adam)
    g, d = (torch.compile(G), torch.compile(D)) if "compile" in levers else (G, D)
    compile_steps = "compile_steps" in levers
    # as Lightning's bf16-mixed: autocast around the forward passes, without its weight cache
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in levers, cache_enabled=False)

    def d_step(real, fake):
        real_logits, fake_logits = D(torch.cat([real, fake])).float().split(batch_size)
        return gan_discriminator_loss(real_logits, fake_logits)

    def g_step(fake):
        return non_saturating_generator_loss(D(fake).float())

    compiled_g, compiled_d_step, compiled_g_step = torch.compile(G), torch.compile(d_step), torch.compile(g_step)
    times = []
    while len(times) < warmup + steps:
        order = torch.randperm(len(data))
        for i in range(len(data) // batch_size):
            real = data[order[i * batch_size : (i + 1) * batch_size]]
            with autocast:
                if compile_steps:
                    fake = compiled_g(torch.randn(batch_size, G.latent_dim))
                    loss_d = compiled_d_step(real, fake.detach())
                else:
                    fake = g(torch.randn(batch_size, G.latent_dim))
                    if "cat" in levers:
                        real_logits, fake_logits = d(torch.cat([real, fake.detach()])).float().split(batch_size)
                    else:
                        real_logits, fake_logits = d(real).float(), d(fake.detach()).float()
                    loss_d = gan_discriminator_loss(real_logits, fake_logits)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            with frozen(D) if compile_steps or "frozen" in levers else contextlib.nullcontext(), autocast:
                loss_g = compiled_g_step(fake) if compile_steps else non_saturating_generator_loss(d(fake).float())
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            times.append(time.perf_counter())
            if len(times) == warmup + steps:
                break
    return images_per_second(times, warmup, batch_size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=default_data_root())
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = scale_to_tanh_range(load_mnist_images(args.data_root))
    results = {}
    for _ in range(args.repeats):
        for batch_size in args.batch_sizes:
            for variant in args.variants:
                results.setdefault((batch_size, variant), []).append(run(variant, data, batch_size, args.steps, args.warmup))
    print(f"# torch threads {torch.get_num_threads()}, {args.repeats} repeats x {args.steps} steps; images/s, median (min-max)")
    first = args.variants[0]  # the one the others are compared with: base by default
    print(f"| batch | variant | images/s | vs {first} |")
    print("|---:|---|---:|---:|")
    for batch_size in args.batch_sizes:
        base = statistics.median(results[(batch_size, first)])
        for variant in args.variants:
            rates = results[(batch_size, variant)]
            med = statistics.median(rates)
            print(f"| {batch_size} | {variant} | {med:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | {med / base:.2f} |")


if __name__ == "__main__":
    main()
