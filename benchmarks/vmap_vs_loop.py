"""Runs/s of one vmapped, jit-compiled training program vs a Python loop over runs.

The workload is the linear-denoiser study: plain gradient descent (``make_train`` with optax SGD)
on the exact population loss of a one-layer denoiser ``W x + b`` in ``d`` dimensions, one run =
(seed, noise level, learning rate), ``steps`` updates with log-spaced recording. Both sides run
the same jitted single-run function; the loop calls it once per run, the vmapped program takes
all runs at once. Compile time is measured separately from run time.

    python benchmarks/vmap_vs_loop.py [--dim 64] [--steps 1000] [--runs 1 16 256]

Prints a markdown table (and the machine) to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp

from dynamics.objectives import population_loss
from dynamics.training import log_spaced_steps, make_train
from models.denoisers import Linear
from models.distributions.gaussian import random_rotation


def build(dim: int, steps: int):
    model = Linear(dim)
    lam = jnp.geomspace(1e-2, 10.0, dim)
    basis = random_rotation(jax.random.key(0), dim)
    cov = (basis * lam[None, :]) @ basis.T

    def init(key, hparams):
        return model.init(key, 0.1)

    def loss(params, key, hparams):
        return population_loss(model.affine, params, jnp.zeros(dim), cov, hparams["sigma"])

    return make_train(init, loss, num_steps=steps, record_steps=log_spaced_steps(steps, 20))


def grid(runs: int):
    keys = jax.random.split(jax.random.key(1), runs)
    sigma = jnp.geomspace(0.05, 2.0, runs)
    return keys, {"sigma": sigma, "learning_rate": 0.02 / (1.0 + sigma**2)}


def timed(function, *args):
    start = time.perf_counter()
    jax.block_until_ready(function(*args))
    return time.perf_counter() - start


def measure(train, runs: int) -> dict[str, float]:
    keys, hparams = grid(runs)
    single = jax.jit(train)
    batched = jax.jit(jax.vmap(train))
    one = lambda i: (keys[i], jax.tree.map(lambda v: v[i], hparams))
    compile_single = timed(single, *one(0))
    compile_batched = timed(batched, keys, hparams)
    start = time.perf_counter()
    for index in range(runs):
        jax.block_until_ready(single(*one(index)))
    loop = time.perf_counter() - start
    vmapped = timed(batched, keys, hparams)
    return {"loop": runs / loop, "vmap": runs / vmapped, "compile_single": compile_single, "compile_vmap": compile_batched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 16, 256])
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", False)
    train = build(args.dim, args.steps)
    device = jax.devices()[0]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} on {device.platform} ({device.device_kind}); float32")
    print(f"workload: linear denoiser d = {args.dim}, {args.steps} GD steps per run\n")
    print("| runs | Python loop runs/s | vmapped runs/s | speed-up | compile single (s) | compile vmapped (s) |")
    print("|---|---|---|---|---|---|")
    for runs in args.runs:
        r = measure(train, runs)
        print(f"| {runs} | {r['loop']:.1f} | {r['vmap']:.1f} | {r['vmap'] / r['loop']:.1f}x | {r['compile_single']:.2f} | {r['compile_vmap']:.2f} |")


if __name__ == "__main__":
    main()
