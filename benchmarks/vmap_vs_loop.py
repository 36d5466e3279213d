"""Runs/s of one vmapped, jit-compiled training program vs Python loops over runs (JAX and PyTorch).

For each workload of ``benchmarks/workloads.py`` (the linear-denoiser study at several ``d``
and a small MLP denoiser) and each number of runs, in ONE process:

* JAX vmapped: ``jax.jit(jax.vmap(train))`` of the library's ``make_train`` over all runs;
* JAX loop: a Python loop calling the same ``jax.jit(train)`` once per run (compiled once);
* PyTorch loop: the same training written as published research scripts do it (one run at a
  time, eager per-step loop, ``torch.optim``), same sizes, steps, loss and dtype (float32).

Compile time (``lower`` + ``compile``, ahead of time) is reported separately from run time; the
runs/s columns time the compiled programs only (the best of repeated calls when one call takes
under a second). The loops are measured only up to ``--loop-max`` / ``--torch-max`` runs; larger
rows show ``-`` (nothing is extrapolated). Before timing, the script checks that both frameworks
compute the same thing: the linear study's recorded losses (deterministic population loss) agree
between JAX and PyTorch, and the PyTorch MLP reproduces the JAX MLP's outputs on copied parameters.

    python benchmarks/vmap_vs_loop.py [--quick] [--write] [--dims 8 64] [--runs 1 16 256]

Prints markdown; ``--write`` puts it into benchmarks/RESULTS.md (section ``vmap_vs_loop``).
"""

from __future__ import annotations

import argparse
import operator
import time

import jax
import jax.numpy as jnp
import numpy as np
from report import (
    best_time,
    load_average,
    machine_description,
    run_blocking,
    write_section,
)
from workloads import (
    Workload,
    linear_study,
    mlp_apply,
    mlp_init,
    mlp_study,
    torch_mlp_from_jax,
)

FULL_RUNS = (1, 4, 16, 64, 256, 1024, 4096)
QUICK_RUNS = (1, 4, 16, 64)


def compile_timed(function, *args):
    """Ahead-of-time compile ``function`` for ``args``; returns (compiled, seconds)."""
    start = time.perf_counter()
    compiled = jax.jit(function).lower(*args).compile()
    return compiled, time.perf_counter() - start


def per_run_arguments(workload: Workload, runs: int) -> list[tuple]:
    """``(key, hparams)`` of each run of the grid, sliced before any timing."""
    keys, hparams = workload.grid(runs)
    return [(keys[i], jax.tree.map(operator.itemgetter(i), hparams)) for i in range(runs)]


def loop_over_runs(train, arguments) -> None:
    """Call ``train(*a)`` once per run, one after the other (blocking on JAX results)."""
    for a in arguments:
        run_blocking(train, *a)


def measure(workload: Workload, runs_list, loop_max: int, torch_max: int) -> list[dict]:
    """One row per number of runs: runs/s of each side and the vmapped compile time."""
    train = workload.train()
    single, compile_single = compile_timed(train, *per_run_arguments(workload, 1)[0])
    torch_train = workload.torch_trainer() if torch_max > 0 else None
    rows = []
    for runs in runs_list:
        keys, hparams = workload.grid(runs)
        batched, compile_vmap = compile_timed(jax.vmap(train), keys, hparams)
        row = {"runs": runs, "compile_vmap": compile_vmap, "compile_single": compile_single}
        row["vmap"] = runs / best_time(run_blocking, batched, keys, hparams)
        if runs <= loop_max:
            arguments = per_run_arguments(workload, runs)
            row["loop"] = runs / best_time(loop_over_runs, single, arguments)
        if torch_train is not None and runs <= torch_max:
            settings = [(i, float(s), float(lr)) for i, (s, lr) in enumerate(zip(hparams["sigma"], hparams["learning_rate"]))]
            row["torch"] = runs / best_time(loop_over_runs, torch_train, settings)
        rows.append(row)
        print(f"  {workload.name}: {runs} runs done", flush=True)
    return rows


def equivalence_checks(linear: Workload, mlp_dim: int, mlp_width: int) -> list[str]:
    """Evidence that both frameworks do the same arithmetic (float32)."""
    keys, hparams = linear.grid(4)
    sigma, rate = float(hparams["sigma"][2]), float(hparams["learning_rate"][2])
    jax_losses = np.asarray(jax.jit(linear.train())(keys[2], jax.tree.map(lambda v: v[2], hparams)).loss)
    torch_losses = np.asarray(linear.torch_trainer()(2, sigma, rate))
    linear_error = np.max(np.abs(jax_losses - torch_losses) / np.abs(jax_losses))
    import torch

    params = mlp_init(jax.random.key(5), mlp_dim, mlp_width)
    x = jax.random.normal(jax.random.key(6), (16, mlp_dim))
    jax_out = np.asarray(jax.vmap(mlp_apply, in_axes=(None, 0, None))(params, x, jnp.asarray(0.3)))
    with torch.no_grad():
        torch_out = torch_mlp_from_jax(params)(torch.tensor(np.asarray(x)), 0.3).numpy()
    mlp_error = np.max(np.abs(jax_out - torch_out))
    return [
        (
            f"- {linear.name}, sigma = {sigma:.3g}: recorded losses of JAX `make_train` and the PyTorch loop "
            f"agree to max relative difference {linear_error:.1e} over {jax_losses.size} records."
        ),
        (
            f"- MLP d={mlp_dim} width={mlp_width}: PyTorch `TorchMLP` with the JAX parameters copied in reproduces "
            f"`mlp_apply` to max abs difference {mlp_error:.1e} on 16 samples."
        ),
    ]


def cell(row: dict, key: str, digits: int = 1) -> str:
    return f"{row[key]:.{digits}f}" if key in row else "-"


def ratio(row: dict, key: str) -> str:
    return f"{row['vmap'] / row[key]:.1f}x" if key in row else "-"


def table(workload: Workload, rows: list[dict]) -> str:
    lines = [
        (
            f"**{workload.name}** ({workload.optimizer}, {workload.steps} steps, {len(workload.record_steps)} records per run; "
            f"JAX single-run compile {rows[0]['compile_single']:.2f} s, once for all loop rows)"
        ),
        "",
        "| runs | JAX vmapped runs/s | JAX loop runs/s | PyTorch loop runs/s | vmapped / JAX loop | vmapped / PyTorch | compile vmapped (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['runs']} | {cell(row, 'vmap')} | {cell(row, 'loop')} | {cell(row, 'torch')} | "
            f"{ratio(row, 'loop')} | {ratio(row, 'torch')} | {row['compile_vmap']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 steps, runs up to 64 (for development)")
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 64], help="linear-study dimensions")
    parser.add_argument("--mlp-width", type=int, default=32)
    parser.add_argument("--mlp-dim", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default 1000, quick 200)")
    parser.add_argument("--runs", type=int, nargs="+", default=None)
    parser.add_argument("--loop-max", type=int, default=256, help="largest run count timed with the JAX loop")
    parser.add_argument("--torch-max", type=int, default=256, help="largest run count timed with PyTorch (0: skip)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads (default 1: faster than 2 on a loaded machine, see RESULTS.md)")
    parser.add_argument("--write", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = parser.parse_args()
    steps = args.steps or (200 if args.quick else 1000)
    runs_list = args.runs or (QUICK_RUNS if args.quick else FULL_RUNS)
    if args.torch_max > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    header = machine_description("float32")
    workloads = [linear_study(d, steps) for d in args.dims] + [mlp_study(args.mlp_dim, args.mlp_width, steps=steps)]
    checks = equivalence_checks(workloads[0], args.mlp_dim, args.mlp_width) if args.torch_max > 0 else []
    tables = [table(w, measure(w, runs_list, args.loop_max, args.torch_max)) for w in workloads]
    command = "python benchmarks/vmap_vs_loop.py" + (" --quick" if args.quick else "")
    markdown = "\n\n".join(
        [
            "## Vmapped scan vs Python loops over runs, JAX and PyTorch (`benchmarks/vmap_vs_loop.py`)",
            f"`{command}`. {header} 1-min load average at the end {load_average()}.",
            "Same arithmetic on both sides (float32, same loss, batch, steps and optimizer):\n" + "\n".join(checks),
            *tables,
        ]
    )
    print(markdown)
    if args.write:
        write_section("vmap_vs_loop", markdown)


if __name__ == "__main__":
    main()
