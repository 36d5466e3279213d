"""EDM training samples/s of the MLP-UNet: K models vmapped vs one at a time (issue 4).

The training is the nonlinear spectral-bias study's ([WP] sec. 6, docs/theory.md 6,
``experiments/nonlinear_spectral_bias.py``): its Gaussian training set and
:class:`diffdyn.models.denoisers.mlp.MLPUNet` (from the study's ``training_set`` / ``model_for``), the EDM
loss :func:`diffdyn.dynamics.edm.make_loss` (preconditioning, log-normal sigmas, EDM weighting,
minibatches of ``batch_size`` drawn with replacement) and :func:`diffdyn.dynamics.training.make_train`
with Adam, parameters recorded at the study's log-spaced checkpoints inside the compiled loop.
K models differ by their seed (init and noise stream, ``fold_in(key, s)`` as in the study) and
share the learning rate. For each K, in ONE process:

* vmapped: ``jax.jit(jax.vmap(train, in_axes=(0, None)))`` over the K seed keys (as the study runs);
* loop: a Python loop calling the same ``jax.jit(train)`` once per seed (compiled once).

Both programs are compiled ahead of time (``lower`` + ``compile``, reported apart), called once as
a warm-up, whose recorded losses must agree between the two sides (``--rtol``; same arithmetic
timed), then timed ``--repeats`` times each, the two sides alternating so that load from other
processes on a shared machine hits both alike; the fastest call of each side counts (blocking
until the results are ready). Throughput counts the training
examples whose loss and gradient are computed: ``K x batch_size x (num_steps + 1)`` per call
(``make_train`` evaluates the gradient at ``num_steps + 1`` points and discards the last update).

Two sizes, float32: the study's ``quick`` preset model (d = 32, width 128, depth 4, embedding 64,
batch 256) and its ``paper`` preset model ([WP]: d = 256, width 256, depth 5, embedding 256,
batch 1024), the latter with few steps so that a CPU finishes.

    python benchmarks/edm_throughput.py [--quick] [--write] [--models 1 2 4 8 16]
        [--sizes quick paper] [--quick-steps 100] [--paper-steps 5] [--paper-dim 256] [--repeats 3]

Prints markdown; ``--write`` puts it into benchmarks/RESULTS.md (section ``edm_throughput``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys

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
from vmap_vs_loop import cell, compile_timed, loop_over_runs, ratio

from diffdyn.dynamics import edm
from diffdyn.dynamics.config import at_point
from diffdyn.dynamics.training import make_train
from diffdyn.experiments.nonlinear_spectral_bias import (
    PRESETS,
    Config,
    model_for,
    record_steps,
    training_set,
)

SIZES = ("quick", "paper")
FULL_MODELS = (1, 2, 4, 8, 16)
QUICK_MODELS = (1, 4, 16)


def seed_keys(config: Config, models: int) -> jax.Array:
    """The engine's run keys: ``fold_in(key(seed), s)`` for ``s < models``."""
    root = jax.random.key(config.seed)
    return jax.vmap(lambda s: jax.random.fold_in(root, s))(jnp.arange(models))


def study_training(config: Config):
    """``(train, num_params)``: the study's single-model EDM training function in float32."""
    data = jnp.asarray(training_set(config), jnp.float32)
    model = model_for(config, tuple(data.shape[1:]))
    loss = edm.make_loss(edm.precondition(model.network), data, config.batch_size)
    init = lambda key, hparams: model.init(key, data.dtype)
    train = make_train(init, loss, num_steps=config.num_steps, record_steps=record_steps(config), optimizer="adam")
    num_params = sum(leaf.size for leaf in jax.tree.leaves(jax.eval_shape(init, jax.random.key(0), None)))
    return train, num_params


def max_relative_difference(a: jax.Array, b: jax.Array) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))))


def measure(config: Config, models_list, rtol: float, repeats: int) -> tuple[list[dict], float, int]:
    """Rows (one per K) of samples/s of both sides, the loss agreement and the vmapped compile
    time; also the single-model compile time and the parameter count."""
    train, num_params = study_training(config)
    hparams = {"learning_rate": jnp.asarray(config.learning_rate, jnp.float32)}
    single, compile_single = compile_timed(train, seed_keys(config, 1)[0], hparams)
    rows = []
    for models in models_list:
        keys = seed_keys(config, models)
        batched, compile_vmap = compile_timed(jax.vmap(train, in_axes=(0, None)), keys, hparams)
        arguments = [(keys[i], hparams) for i in range(models)]
        vmapped_losses = run_blocking(batched, keys, hparams).loss  # warm-up calls, checked below
        looped_losses = jnp.stack([run_blocking(single, *a).loss for a in arguments])
        np.testing.assert_allclose(vmapped_losses, looped_losses, rtol=rtol, err_msg=f"K={models}: vmapped vs loop")
        vmap_seconds = loop_seconds = math.inf
        for _ in range(repeats):
            vmap_seconds = min(vmap_seconds, best_time(run_blocking, batched, keys, hparams, max_repeats=1))
            loop_seconds = min(loop_seconds, best_time(loop_over_runs, single, arguments, max_repeats=1))
        samples = models * config.batch_size * (config.num_steps + 1)
        rows.append(
            {
                "models": models,
                "vmap": samples / vmap_seconds,
                "loop": samples / loop_seconds,
                "loss_difference": max_relative_difference(vmapped_losses, looped_losses),
                "compile_vmap": compile_vmap,
            }
        )
        print(f"  {config.dim}-d: K = {models} done", flush=True)
    return rows, compile_single, num_params


def table(name: str, config: Config, rows: list[dict], compile_single: float, num_params: int) -> str:
    settings = (
        f"**{name} preset MLP-UNet** (d={config.dim}, width {config.width}, depth {config.depth}, "
        f"embedding {config.embedding}, {num_params:,} parameters; Gaussian n_train={config.n_train}; "
        f"batch {config.batch_size}, Adam lr {config.learning_rate:g}, {config.num_steps} steps "
        f"({config.num_steps + 1} gradient evaluations), {len(record_steps(config))} checkpoints per model; "
        f"single-model compile {compile_single:.2f} s, once for all loop rows)"
    )
    header = "| models K | vmapped samples/s | loop samples/s | vmapped / loop | max rel. diff. of recorded losses | compile vmapped (s) |"
    body = [
        f"| {row['models']} | {cell(row, 'vmap', 0)} | {cell(row, 'loop', 0)} | {ratio(row, 'loop')} | "
        f"{row['loss_difference']:.1e} | {row['compile_vmap']:.2f} |"
        for row in rows
    ]
    return "\n".join([settings, "", header, "|---:|---:|---:|---:|---:|---:|", *body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="K in 1 4 16, 50 / 3 steps (a few minutes on 2 CPU cores)")
    parser.add_argument("--models", type=int, nargs="+", default=None, help="numbers K of models (default 1 2 4 8 16)")
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES), help="study presets whose model is timed")
    parser.add_argument("--quick-steps", type=int, default=None, help="steps of the quick-preset model (default 100, quick 50)")
    parser.add_argument("--paper-steps", type=int, default=None, help="steps of the paper-preset model (default 5, quick 3)")
    parser.add_argument("--paper-dim", type=int, default=PRESETS["paper"].dim, help="data dimension of the paper-preset model")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of each side (alternating); the fastest counts")
    parser.add_argument("--rtol", type=float, default=1e-4, help="allowed relative difference of vmapped and looped losses")
    parser.add_argument("--write", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = parser.parse_args()
    models_list = args.models or (QUICK_MODELS if args.quick else FULL_MODELS)
    steps = {
        "quick": args.quick_steps or (50 if args.quick else 100),
        "paper": args.paper_steps or (3 if args.quick else 5),
    }
    dims = {"quick": PRESETS["quick"].dim, "paper": args.paper_dim}
    header = machine_description("float32")
    tables = []
    for name in args.sizes:
        config = at_point(dataclasses.replace(PRESETS[name], num_steps=steps[name], dim=dims[name]), {"architecture": "mlp"})
        tables.append(table(name, config, *measure(config, models_list, args.rtol, args.repeats)))
    command = shlex.join(["python", "benchmarks/edm_throughput.py", *(a for a in sys.argv[1:] if a != "--write")])
    markdown = "\n\n".join(
        [
            "## EDM training throughput (MLP-UNet, issue 4) (`benchmarks/edm_throughput.py`)",
            f"`{command}`. {header} 1-min load average at the end {load_average()}.",
            (
                "K seeds of the nonlinear spectral-bias study's EDM training (`dynamics.edm.make_loss` + "
                "`make_train`, Adam) trained by one vmapped program vs a Python loop over the same compiled "
                "single-model program. samples/s = K x batch x (steps + 1) / seconds of the compiled calls "
                f"(fastest of {args.repeats} calls per side, the sides alternating, after a warm-up call whose recorded "
                "losses the two sides must share)."
            ),
            *tables,
        ]
    )
    print(markdown)
    if args.write:
        write_section("edm_throughput", markdown)


if __name__ == "__main__":
    main()
