"""Achieved FLOP/s of the training step vs the machine's measured large-matmul FLOP/s.

The limit: the best time of a large square ``jnp.dot`` (``n = 2048``; ``--quick`` 1024) in
float32 and in float64 (x64 enabled only for that product), with ``torch.mm`` beside it, measured
before and after the workloads (the larger of the two is kept: on a shared machine the load varies).

The workloads (``benchmarks/workloads.py``): the linear-denoiser study at ``d = 64, 256, 512``
and the small MLP denoiser. FLOPs per training step are counted twice: analytically (the matrix
products of the forward and backward pass, e.g. ``4 d^3`` for the linear study) and by XLA
(``cost_analysis()["flops"]`` of one compiled optimizer step, which adds the elementwise work).
Achieved FLOP/s = XLA FLOPs per step x (steps + 1) x runs / wall time of the compiled program
(``make_train``, vmapped over the runs; compile time reported separately), and the same for the
single-run program and for the PyTorch eager loop (one run). All float32.

    python benchmarks/flops.py [--quick] [--write]

Prints markdown; ``--write`` puts it into benchmarks/RESULTS.md (section ``flops``).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from report import (
    best_time,
    load_average,
    machine_description,
    run_blocking,
    write_section,
)
from workloads import Workload, linear_study, mlp_study

# (workload, runs in the vmapped program): steps shrink with d^3 so that each row takes seconds.
FULL = ((lambda: linear_study(64, 1000), 256), (lambda: linear_study(256, 100), 16),
        (lambda: linear_study(512, 20), 4), (lambda: mlp_study(steps=1000), 256))  # fmt: skip
QUICK = ((lambda: linear_study(64, 200), 16), (lambda: linear_study(256, 20), 4),
         (lambda: linear_study(512, 5), 2), (lambda: mlp_study(steps=200), 16))  # fmt: skip


def matmul_peak(size: int) -> dict[str, float]:
    """GFLOP/s of one ``size x size`` matrix product: jnp.dot and torch.mm, float32 and float64."""
    flops = 2.0 * size**3
    peaks = {}
    for dtype in ("float32", "float64"):
        with jax.enable_x64(dtype == "float64"):
            a = jax.random.normal(jax.random.key(0), (size, size), dtype=dtype)
            product = jax.jit(jnp.dot).lower(a, a).compile()
            peaks[f"jax {dtype}"] = flops / best_time(run_blocking, product, a, a, min_total=3.0, max_repeats=20) / 1e9
    try:
        import torch

        for dtype in (torch.float32, torch.float64):
            b = torch.randn(size, size, dtype=dtype)
            peaks[f"torch {str(dtype).split('.')[1]}"] = flops / best_time(torch.mm, b, b, min_total=3.0, max_repeats=20) / 1e9
    except ImportError:
        pass
    return peaks


def step_flops(workload: Workload) -> float:
    """XLA's FLOP count of one compiled optimizer step (loss, gradient and update) of one run."""
    compiled = jax.jit(workload.step()).lower(*workload.step_arguments()).compile()
    cost = compiled.cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def achieved(workload: Workload, runs: int, with_torch: bool) -> dict[str, float]:
    """Compile time, wall times and GFLOP/s of the vmapped and single-run programs (and PyTorch)."""
    train = workload.train()
    keys, hparams = workload.grid(runs)
    start = time.perf_counter()
    batched = jax.jit(jax.vmap(train)).lower(keys, hparams).compile()
    compile_vmap = time.perf_counter() - start
    single = jax.jit(train).lower(keys[0], jax.tree.map(lambda v: v[0], hparams)).compile()
    one = (keys[0], jax.tree.map(lambda v: v[0], hparams))
    per_step = step_flops(workload)
    evaluations = workload.steps + 1  # make_train evaluates loss and gradient at steps 0..steps
    result = {
        "xla_flops": per_step,
        "compile_vmap": compile_vmap,
        "vmap": per_step * evaluations * runs / best_time(run_blocking, batched, keys, hparams) / 1e9,
        "single": per_step * evaluations / best_time(run_blocking, single, *one) / 1e9,
    }
    if with_torch:
        torch_train = workload.torch_trainer()
        sigma, rate = float(hparams["sigma"][0]), float(hparams["learning_rate"][0])
        result["torch"] = per_step * evaluations / best_time(torch_train, 0, sigma, rate) / 1e9
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller matmul, fewer steps and runs")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads (see vmap_vs_loop.py)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--write", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if not args.no_torch:
        import torch

        torch.set_num_threads(args.torch_threads)
    header = machine_description("float32 (matmul limit also float64)")
    size = 1024 if args.quick else 2048
    peaks_before = matmul_peak(size)
    rows = []
    for make, runs in QUICK if args.quick else FULL:
        workload = make()
        rows.append((workload, runs, achieved(workload, runs, not args.no_torch)))
        print(f"  {workload.name} done", flush=True)
    peaks_after = matmul_peak(size)
    peaks = {name: max(value, peaks_after[name]) for name, value in peaks_before.items()}
    limit = peaks["jax float32"]
    lines = [
        "## Achieved FLOP/s of the training step vs large-matmul FLOP/s (`benchmarks/flops.py`)",
        "",
        f"`python benchmarks/flops.py{' --quick' if args.quick else ''}`. {header}",
        "",
        f"Limit: one {size}x{size} matrix product, best of repeats: "
        + ", ".join(f"{name} {value:.1f} GFLOP/s" for name, value in peaks.items())
        + f". Fractions below are of jax float32 ({limit:.1f} GFLOP/s).",
        "",
        "| workload | runs x steps | FLOPs/step analytic (matmuls) | FLOPs/step XLA | compile vmapped (s) | vmapped GFLOP/s (fraction) | single-run GFLOP/s (fraction) | PyTorch loop GFLOP/s (fraction) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for workload, runs, r in rows:
        torch_cell = f"{r['torch']:.2f} ({r['torch'] / limit:.0%})" if "torch" in r else "-"
        lines.append(
            f"| {workload.name} | {runs} x {workload.steps} | {workload.matmul_flops:.3g} | {r['xla_flops']:.3g} | "
            f"{r['compile_vmap']:.2f} | {r['vmap']:.2f} ({r['vmap'] / limit:.0%}) | "
            f"{r['single']:.2f} ({r['single'] / limit:.0%}) | {torch_cell} |"
        )
    lines += ["", f"1-min load average at the end {load_average()}."]
    markdown = "\n".join(lines)
    print(markdown)
    if args.write:
        write_section("flops", markdown)


if __name__ == "__main__":
    main()
