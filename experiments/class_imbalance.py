"""Which class is learned, and memorized, first: random-features score models on a two-class
Gaussian mixture, over class variances, centroid norms and imbalance ratios.

**Reconstruction** (THEORY.md 8): [N] (Nicoletti, Ma, Ventura, Saglietti, Sarao Mannelli,
arXiv 2605.06367) studies classes and imbalance on top of the [BUBM] random-features model;
its exact settings could not be read, so this study rebuilds the model of THEORY.md 7-8 with
every parameter configurable:

* data: class 0 ``N(mu_0, sigma_0^2 I)``, class 1 ``N(mu_1, sigma_1^2 I)``, ``mu_0 = mu~_0 sqrt(d) e_1``,
  ``mu_1 = mu~_1 sqrt(d) e_2`` (orthogonal centroids, so the norms vary independently);
  ``n_0 = base_count`` training points of class 0 and ``n_1 = round(ratio * n_0)`` of class 1
  (``ratio`` = ``imbalance_ratios``); grids over ``sigma_1^2 / sigma_0^2`` (``variance_ratios``,
  ``sigma_0 = 1``), ``mu~_1`` (``centroid_norms``; ``mu~_0 = centroid_norm_0``) and ``ratio``;
* model: the [BUBM] score ``s_A(x) = (A/sqrt(p)) g(W x/sqrt(d))`` at one OU time ``t``
  (:mod:`models.denoisers.random_features`), trained from ``A = 0`` by the exact gradient flow of
  the DSM loss on the whole training set, whose statistics are the count-weighted class ones,
  ``U = sum_c (n_c/n) U_c``, ``V = sum_c (n_c/n) V_c`` (``U_c, V_c`` over class ``c``'s training
  points, ``num_noise`` noise draws each). With ``class_weights`` ``w_c`` the loss of class ``c``
  is weighted: ``U_w = sum_c w_c n_c U_c / sum_c w_c n_c`` (same for ``V``);
* per class ``c``: train loss with ``(U_c, V_c)``, test loss with the statistics of ``num_test``
  fresh class-``c`` points; generalization time (half of the test-loss drop,
  :func:`dynamics.measures.generalization_time`) and memorization time (half-rise of the
  train/test gap, :func:`dynamics.measures.memorization_time`).

Optional generated samples (``generate_samples > 0``; THEORY.md 7-8, [BUBM] sec. 2): a
time-indexed random-features score (:func:`models.denoisers.random_features.time_indexed_weights`)
with the study's ``W``, a frozen bias ``b ~ N(0, generate_bias^2)`` (without it ``tanh`` makes the
generated law symmetric under ``x -> -x``, which puts half of a memorizing model's samples on
mirror images of the training points) and one ``A`` per OU time node (``generate_num_times``
nodes log-spaced in ``[generate_time_min, generate_time_max]``), each trained on the same
(class-weighted) training set by the exact flow with exactly noise-averaged statistics, read at
the common training times ``generate_taus``. Samples: the OU probability-flow ODE from a Gaussian
with the training set's moments at ``t_max`` down to ``t_min`` (Heun, ``generate_steps``
levels, then Tweedie). Output ``memorization_fraction_generated[..., class_, tau_sample]``: the
fraction of samples whose nearest training point is in class ``c`` that copy it (ratio of
nearest to second-nearest distance < 1/3, [BUBM] sec. 2), and the overall fraction
``memorization_fraction_generated_total``.

Time ``tau = k eta / d^2`` of plain gradient descent with step ``eta`` (THEORY.md 7); losses per
dimension, ``L(A = 0) = 1``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from dynamics import measures
from dynamics.sweep import Workload, require_one_value_per_run, with_values
from dynamics.validation import (
    ConfigError,
    require_choice,
    require_increasing,
    require_positive_int,
    require_range,
)
from models.denoisers import random_features as rf
from models.distributions import mixtures

NAME = "class-imbalance"
CLASSES = ("class_0", "class_1")


@dataclass(frozen=True)
class Config:
    """Settings of the class-imbalance study (OU time ``t``; ``tau = k eta / d^2``)."""

    dim: int = 16
    num_features: int = 128  # p; psi_p = p / d
    time: float = 0.5  # OU time t of the score model (at 0.1 the attainable drop, ~Delta_t = 0.18, is small)
    activation: str = "tanh"
    base_count: int = 32  # n_0, training points of class 0
    variance_ratios: tuple[float, ...] = (1.0, 4.0)  # sigma_1^2 / sigma_0^2, sigma_0 = 1
    centroid_norm_0: float = 1.0  # mu~_0
    centroid_norms: tuple[float, ...] = (1.0, 2.0)  # mu~_1
    imbalance_ratios: tuple[float, ...] = (0.125, 1.0, 8.0)  # n_1 / n_0 (one compilation per count)
    class_weights: tuple[float, ...] = (1.0, 1.0)  # per-class loss weights w_c
    num_noise: int = 16  # noise draws per training point in U_c, V_c
    num_test: int = 256  # fresh points per class for the test statistics (test_noise draws each)
    test_noise: int = 4
    tau_min: float = 1e-3
    tau_max: float = 1e6
    num_tau: int = 61
    seeds: int = 2
    seed: int = 0
    generate_samples: int = 0  # generated samples per run for the memorization fraction (0: off)
    generate_taus: tuple[float, ...] = (1e2, 1e3, 1e4, 1e5, 1e6, 1e8)  # training times tau_sample of the generator
    generate_time_min: float = 0.01  # OU time nodes of the time-indexed score, log-spaced in [min, max]
    generate_time_max: float = 3.0
    generate_num_times: int = 6
    generate_steps: int = 32  # Heun levels of the probability-flow sampler
    generate_bias: float = 1.0  # std of the generator's frozen feature bias (0: [BUBM]'s bias-free features)


PRESETS = {
    "quick": Config(),
    "paper": Config(
        dim=100,
        num_features=6400,
        base_count=400,
        variance_ratios=(0.25, 0.5, 1.0, 2.0, 4.0),
        centroid_norms=(0.0, 0.5, 1.0, 2.0),
        imbalance_ratios=(1 / 16, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
        num_noise=32,
        num_test=2000,
        num_tau=121,
        tau_max=1e7,
        seeds=3,
    ),
}


def validate(config: Config) -> Config:
    require_positive_int("dim", config.dim, minimum=2)
    require_positive_int("num_features", config.num_features)
    require_range("time", config.time, low=0.0, low_open=True)
    require_choice("activation", config.activation, rf.ACTIVATIONS)
    require_positive_int("base_count", config.base_count)
    for field in ("variance_ratios", "imbalance_ratios"):
        values = getattr(config, field)
        if not values:
            raise ConfigError(f"{field}: needs at least one value")
        require_range(field, values, low=0.0, low_open=True)
    require_range("centroid_norm_0", config.centroid_norm_0, low=0.0)
    if not config.centroid_norms:
        raise ConfigError("centroid_norms: needs at least one value")
    require_range("centroid_norms", config.centroid_norms, low=0.0)
    require_range("class_weights", config.class_weights, low=0.0, low_open=True)
    if len(config.class_weights) != 2:
        raise ConfigError(f"class_weights: needs one weight per class (2); got {len(config.class_weights)}")
    for ratio in config.imbalance_ratios:
        if round(ratio * config.base_count) < 1:
            raise ConfigError(f"imbalance_ratios: {ratio} x base_count {config.base_count} leaves class 1 without training points")
    require_positive_int("num_noise", config.num_noise)
    require_positive_int("num_test", config.num_test)
    require_positive_int("test_noise", config.test_noise)
    require_range("tau_min", config.tau_min, low=0.0, low_open=True)
    require_increasing("tau_min", config.tau_min, "tau_max", config.tau_max)
    require_positive_int("num_tau", config.num_tau, minimum=4)
    require_positive_int("seeds", config.seeds)
    rf.validate_generator_fields(config)
    return config


def taus(config: Config) -> np.ndarray:
    return np.geomspace(config.tau_min, config.tau_max, config.num_tau)


def class_counts(config: Config) -> list[tuple[int, int]]:
    return [(config.base_count, round(ratio * config.base_count)) for ratio in config.imbalance_ratios]


def mixture(config: Config, variance_ratio, centroid_norm) -> mixtures.GaussianMixture:
    """The two-class mixture (equal population weights; the imbalance is in the counts). Traced
    ``variance_ratio`` and ``centroid_norm`` are fine (no validation here)."""
    scale = jnp.sqrt(config.dim)
    means = jnp.zeros((2, config.dim)).at[0, 0].set(config.centroid_norm_0 * scale).at[1, 1].set(centroid_norm * scale)
    variances = jnp.stack([jnp.ones_like(jnp.asarray(variance_ratio, float)), jnp.asarray(variance_ratio, float)])
    return mixtures.GaussianMixture(jnp.array([0.5, 0.5]), means, variances)


def study_features(config: Config, key):
    """The frozen features ``W`` of a run (``fold_in(key, 0)``)."""
    return rf.sample_features(jax.random.fold_in(key, 0), config.dim, config.num_features)


def class_training_points(config: Config, key, data: mixtures.GaussianMixture, c: int, count: int):
    """Class ``c``'s ``count`` training points, from ``fold_in(key, 1 + c)``: the first ``count``
    of the largest count in the study, so they are the same for every larger count."""
    largest = max(n for pair in class_counts(config) for n in pair)
    return mixtures.sample_classes(jax.random.fold_in(key, 1 + c), data, jnp.full((largest,), c))[:count]


def class_statistics(config: Config, key, variance_ratio, centroid_norm, counts, test_key=None):
    """Per class ``c``: training statistics ``(U_c, V_c)`` of ``counts[c]`` points and test ones of
    ``num_test`` fresh points. Keys: features from ``fold_in(key, 0)``, class ``c``'s training
    points from ``fold_in(key, 1 + c)`` (so a class's first ``n`` points are the same for every
    larger count) and their noise from ``fold_in(key, 10 + c)``; test points and their noise from
    folds 20 + c and 30 + c of ``test_key`` (default ``key``; another key gives a fresh test set
    for the same model). Returns ``W, train, test`` with ``train = (U[c], V[c])``."""
    test_key = key if test_key is None else test_key
    W = study_features(config, key)
    data = mixture(config, variance_ratio, centroid_norm)

    def statistics(points, stats_key, num_noise):
        return rf.feature_statistics(W, points, config.time, stats_key, num_noise, config.activation)

    train, test = [], []
    for c, count in enumerate(counts):
        points = class_training_points(config, key, data, c, count)
        train.append(statistics(points, jax.random.fold_in(key, 10 + c), config.num_noise))
        fresh = mixtures.sample_classes(jax.random.fold_in(test_key, 20 + c), data, jnp.full((config.num_test,), c))
        test.append(statistics(fresh, jax.random.fold_in(test_key, 30 + c), config.test_noise))
    stack = lambda pairs: jax.tree.map(lambda *xs: jnp.stack(xs), *pairs)
    return W, stack(train), stack(test)


def weighted_statistics(train, counts, class_weights):
    """``(U_w, V_w) = sum_c w_c n_c (U_c, V_c) / sum_c w_c n_c``: the training set's statistics
    with class ``c``'s loss weighted by ``w_c`` (``w = 1``: the plain training set)."""
    shares = jnp.asarray(class_weights) * jnp.asarray(counts, float)
    shares = shares / jnp.sum(shares)
    return jax.tree.map(lambda s: jnp.tensordot(shares, s, axes=1), train)


def class_curves(config: Config, train, test, counts, class_weights):
    """Per-class train and test losses ``[class, tau]`` along the exact gradient flow of the
    (weighted) training loss."""
    U, V = weighted_statistics(train, counts, class_weights)
    trajectory = rf.gradient_flow_weights(U, V, config.time, jnp.asarray(taus(config)))
    loss = lambda A, stats: rf.quadratic_loss(A, stats[0], stats[1], config.time)
    return measures.per_class_curves(loss, trajectory, train), measures.per_class_curves(loss, trajectory, test)


def class_times(config: Config, train_loss, test_loss):
    """Per-class ``(generalization time, memorization time)``."""
    times = jnp.asarray(taus(config))
    generalization = jax.vmap(lambda curve: measures.generalization_time(times, curve))(test_loss)
    memorization = jax.vmap(lambda tr, te: measures.memorization_time(times, tr, te))(train_loss, test_loss)
    return generalization, memorization


def generated_memorization(config: Config, key, variance_ratio, centroid_norm, counts):
    """Memorization fractions of ``generate_samples`` generated samples at every ``generate_taus``
    (see the module docstring): ``(per_class[class, tau_sample], total[tau_sample])``.

    The generator shares the run's ``W`` and training set; its loss is the (class-weighted)
    training loss of the study at every node, with exactly noise-averaged statistics. Keys: bias
    ``fold_in(key, 40)``, start ``fold_in(key, 50)``."""
    data = mixture(config, variance_ratio, centroid_norm)
    points = [class_training_points(config, key, data, c, count) for c, count in enumerate(counts)]
    W = study_features(config, key)
    bias = config.generate_bias * jax.random.normal(jax.random.fold_in(key, 40), (config.num_features,))

    def statistics(t):
        per_class = [rf.expected_feature_statistics(W, x, t, config.activation, bias=bias) for x in points]
        return weighted_statistics(jax.tree.map(lambda *xs: jnp.stack(xs), *per_class), counts, config.class_weights)

    times = rf.generator_times(config.generate_time_min, config.generate_time_max, config.generate_num_times)
    train = jnp.concatenate(points)
    labels = jnp.concatenate([jnp.full((count,), c) for c, count in enumerate(counts)])
    samples = rf.sample_trained_generator(
        jax.random.fold_in(key, 50), statistics, W, train, times, jnp.asarray(config.generate_taus, float),
        config.generate_samples, config.activation, bias, num_steps=config.generate_steps,
    )
    per_class = jax.vmap(lambda x: measures.per_class_memorization_fraction(x, train, labels, len(CLASSES)))(samples)
    return per_class.T, jax.vmap(lambda x: measures.memorization_fraction(x, train))(samples)


@partial(jax.jit, static_argnames=("config", "counts"))
def _generator_program(config: Config, counts: tuple[int, int], seeds, variance_ratios, centroid_norms):
    """:func:`generated_memorization` for flat arrays of (seed, variance ratio, centroid norm),
    one after the other (``lax.map``: memory ``K p^2`` per run, not per grid)."""

    def one(args):
        seed, variance_ratio, centroid_norm = args
        key = jax.random.fold_in(jax.random.key(config.seed), seed)
        return generated_memorization(config, key, variance_ratio, centroid_norm, counts)

    return jax.lax.map(one, (seeds, variance_ratios, centroid_norms))


@partial(jax.jit, static_argnames=("config", "counts"))
def _grid_program(config: Config, counts: tuple[int, int], seeds, variance_ratios, centroid_norms):
    """Curves and times for flat arrays of (seed, variance ratio, centroid norm), one ``counts``.
    Jitted with the (hashable) config static, so a repeated study reuses the compiled program."""

    def one(seed, variance_ratio, centroid_norm):
        key = jax.random.fold_in(jax.random.key(config.seed), seed)
        _, train, test = class_statistics(config, key, variance_ratio, centroid_norm, counts)
        train_loss, test_loss = class_curves(config, train, test, counts, config.class_weights)
        return train_loss, test_loss, *class_times(config, train_loss, test_loss)

    return jax.vmap(one)(seeds, variance_ratios, centroid_norms)


def _simulate_counts(config: Config, counts):
    """All seeds x variance ratios x centroid norms for one ``counts`` (one compiled program)."""
    grid = jnp.meshgrid(
        jnp.arange(config.seeds), jnp.asarray(config.variance_ratios, float), jnp.asarray(config.centroid_norms, float), indexing="ij"
    )
    flat = _grid_program(config, tuple(counts), *(g.ravel() for g in grid))
    if config.generate_samples:
        flat = (*flat, *_generator_program(config, tuple(counts), *(g.ravel() for g in grid)))
    shape = grid[0].shape
    return [np.asarray(x).reshape(shape + x.shape[1:]) for x in flat]


def run(config: Config = PRESETS["quick"]) -> xr.Dataset:
    config = validate(config)
    with jax.enable_x64(True):
        results = [_simulate_counts(config, counts) for counts in class_counts(config)]
    # stack over imbalance: (ratio, seed, variance, norm, ...) -> (seed, variance, norm, ratio, ...)
    stacked = [np.moveaxis(np.stack(parts), 0, 3) for parts in zip(*results)]
    train_loss, test_loss, generalization, memorization, *generated = stacked
    dims = ("seed", "variance_ratio", "centroid_norm", "imbalance_ratio")
    coords = {
        "seed": np.arange(config.seeds),
        "variance_ratio": np.asarray(config.variance_ratios, float),
        "centroid_norm": np.asarray(config.centroid_norms, float),
        "imbalance_ratio": np.asarray(config.imbalance_ratios, float),
        "class_": list(CLASSES),
        "tau": taus(config),
    }
    counts = np.asarray(class_counts(config))
    variables = {
        "train_loss": (dims + ("class_", "tau"), train_loss),
        "test_loss": (dims + ("class_", "tau"), test_loss),
        "generalization_time": (dims + ("class_",), generalization),
        "memorization_time": (dims + ("class_",), memorization),
        "count": (("imbalance_ratio", "class_"), counts),
    }
    if generated:
        coords["tau_sample"] = np.asarray(config.generate_taus, float)
        variables["memorization_fraction_generated"] = (dims + ("class_", "tau_sample"), generated[0])
        variables["memorization_fraction_generated_total"] = (dims + ("tau_sample",), generated[1])
    return xr.Dataset(
        variables,
        coords=coords,
        attrs={
            "experiment": NAME,
            "config": repr(dataclasses.asdict(config)),
            "conventions": "OU time t; DSM loss per dimension (L(0) = 1); tau = k eta / d^2; reconstruction of [N] on [BUBM] (THEORY.md 8)",
        },
    )


def first_class(times: xr.DataArray) -> xr.DataArray:
    """Index of the class with the smaller seed-median time (0 or 1), over the grid."""
    median = times.median("seed")
    return (median.sel(class_="class_1") < median.sel(class_="class_0")).astype(int)


def reversal_ratio(order: np.ndarray, ratios: np.ndarray) -> float | None:
    """Over increasing ``ratios``: the geometric mean of the two neighbouring ratios at the first
    change of ``order`` (which class comes first), or ``None`` if it never changes."""
    changes = np.nonzero(np.diff(order) != 0)[0]
    if changes.size == 0:
        return None
    i = int(changes[0])
    return float(np.sqrt(ratios[i] * ratios[i + 1]))


def summary(dataset: xr.Dataset, config: Config) -> dict:
    ratios = dataset.imbalance_ratio.values
    balanced = int(np.argmin(np.abs(np.log(ratios))))
    phases, rows = {}, []
    for measure in ("generalization_time", "memorization_time"):
        order = first_class(dataset[measure])
        phases[measure] = order.values.tolist()
    for v in dataset.variance_ratio.values:
        for m in dataset.centroid_norm.values:
            row = {"variance_ratio": float(v), "centroid_norm": float(m)}
            for measure, label in (("generalization_time", "learned"), ("memorization_time", "memorized")):
                order = first_class(dataset[measure]).sel(variance_ratio=v, centroid_norm=m).values
                median = dataset[measure].median("seed").sel(variance_ratio=v, centroid_norm=m)
                row[f"{label}_first_at_balance"] = CLASSES[int(order[balanced])]
                row[f"{label}_reversal_ratio"] = reversal_ratio(order, ratios)
                row[f"{label}_time_ratio_1_over_0"] = (median.sel(class_="class_1") / median.sel(class_="class_0")).values.tolist()
            rows.append(row)
    high_variance = [r for r in rows if r["variance_ratio"] > 1.0]
    result = {
        "grid": {
            "variance_ratios": dataset.variance_ratio.values.tolist(),
            "centroid_norms": dataset.centroid_norm.values.tolist(),
            "centroid_norm_0": config.centroid_norm_0,
            "imbalance_ratios (n_1/n_0)": ratios.tolist(),
            "base_count n_0": config.base_count,
        },
        "model": {"dim": config.dim, "num_features": config.num_features, "psi_p": config.num_features / config.dim, "time": config.time, "activation": config.activation, "seeds": config.seeds},
        "higher_variance_learned_first_at_balance": all(r["learned_first_at_balance"] == "class_1" for r in high_variance),
        "higher_variance_memorized_first_at_balance": all(r["memorized_first_at_balance"] == "class_1" for r in high_variance),
        "rows": rows,
        "phase_map": phases,
        "reconstruction": "THEORY.md 8: [N]'s model rebuilt on the [BUBM] random-features score; every parameter configurable",
    }
    if "memorization_fraction_generated" in dataset:
        result["generated_samples"] = generated_summary(dataset, config)
    return result


def generated_summary(dataset: xr.Dataset, config: Config) -> dict:
    """Seed-mean memorization fractions of the generated samples per grid point, class and
    ``tau_sample``, and whether the higher-variance class copies more (mean over ``tau_sample``)
    at balance in every row with ``sigma_1^2 > sigma_0^2``."""
    per_class = dataset.memorization_fraction_generated.mean("seed")
    total = dataset.memorization_fraction_generated_total.mean("seed")
    balanced = float(dataset.imbalance_ratio.values[int(np.argmin(np.abs(np.log(dataset.imbalance_ratio.values))))])
    rows = []
    for v in dataset.variance_ratio.values:
        for m in dataset.centroid_norm.values:
            for r in dataset.imbalance_ratio.values:
                point = dict(variance_ratio=v, centroid_norm=m, imbalance_ratio=r)
                row = {key: float(value) for key, value in point.items()}
                row.update({c: per_class.sel(**point, class_=c).values.tolist() for c in CLASSES})
                row["total"] = total.sel(**point).values.tolist()
                rows.append(row)
    at_balance = [r for r in rows if r["variance_ratio"] > 1.0 and r["imbalance_ratio"] == balanced]
    return {
        "settings": {
            "samples": config.generate_samples,
            "time_nodes": [config.generate_time_min, config.generate_time_max, config.generate_num_times],
            "heun_steps": config.generate_steps,
            "bias_std": config.generate_bias,
            "criterion": "nearest / second-nearest training-point distance < 1/3 ([BUBM] sec. 2); class = nearest point's",
        },
        "tau_sample": dataset.tau_sample.values.tolist(),
        "higher_variance_copied_more_at_balance": all(np.nanmean(r["class_1"]) > np.nanmean(r["class_0"]) for r in at_balance),
        "rows": rows,
    }


def _generated_markdown(generated: dict) -> list[str]:
    taus = generated["tau_sample"]
    settings = generated["settings"]
    lines = [
        "",
        f"## Memorization fraction of generated samples ({settings['samples']} per run, seed mean; {settings['criterion']})",
        "",
        f"Time-indexed score: {settings['time_nodes'][2]} OU nodes in [{settings['time_nodes'][0]:g}, {settings['time_nodes'][1]:g}], "
        f"bias std {settings['bias_std']:g}, {settings['heun_steps']} Heun levels. "
        f"Higher-variance class copied more at balance: {generated['higher_variance_copied_more_at_balance']}.",
        "",
        "| sigma_1^2/sigma_0^2 | mu~_1 | n_1/n_0 | class | " + " | ".join(f"tau={t:.3g}" for t in taus) + " |",
        "|---|---|---|---|" + "---|" * len(taus),
    ]
    for row in generated["rows"]:
        for c in (*CLASSES, "total"):
            values = " | ".join(f"{x:.3f}" for x in row[c])
            lines.append(f"| {row['variance_ratio']:.3g} | {row['centroid_norm']:.3g} | {row['imbalance_ratio']:.3g} | {c} | {values} |")
    return lines


def _show(value) -> str:
    return "no reversal in grid" if value is None else f"{value:.3g}"


def summary_markdown(result: dict) -> str:
    grid = result["grid"]
    lines = [
        "# class-imbalance: which class is learned and memorized first (reconstruction of [N], THEORY.md 8)",
        "",
        f"Grid: sigma_1^2/sigma_0^2 in {grid['variance_ratios']}, mu~_1 in {grid['centroid_norms']} (mu~_0 = {grid['centroid_norm_0']}), "
        f"n_1/n_0 in {grid['imbalance_ratios (n_1/n_0)']} with n_0 = {grid['base_count n_0']}.",
        "",
        f"Higher-variance class learned first at balance: {result['higher_variance_learned_first_at_balance']}; "
        f"memorized first: {result['higher_variance_memorized_first_at_balance']}.",
        "",
        "| sigma_1^2/sigma_0^2 | mu~_1 | learned first (balance) | reversal n_1/n_0 | memorized first (balance) | reversal n_1/n_0 |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['variance_ratio']:.3g} | {row['centroid_norm']:.3g} | {row['learned_first_at_balance']} | {_show(row['learned_reversal_ratio'])} "
            f"| {row['memorized_first_at_balance']} | {_show(row['memorized_reversal_ratio'])} |"
        )
    if "generated_samples" in result:
        lines += _generated_markdown(result["generated_samples"])
    return "\n".join(lines + [""])


def plot(dataset: xr.Dataset, config: Config) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    norms = dataset.centroid_norm.values
    figure, axes = plt.subplots(2, len(norms), figsize=(4.2 * len(norms), 6.4), squeeze=False)
    for j, norm in enumerate(norms):
        for i, measure in enumerate(("generalization_time", "memorization_time")):
            median = dataset[measure].median("seed").sel(centroid_norm=norm)
            log_ratio = np.log10(median.sel(class_="class_1") / median.sel(class_="class_0"))
            bound = float(np.nanmax(np.abs(log_ratio))) or 1.0
            image = axes[i, j].pcolormesh(
                np.arange(dataset.imbalance_ratio.size), np.arange(dataset.variance_ratio.size), log_ratio, cmap="RdBu_r", vmin=-bound, vmax=bound, shading="nearest"
            )
            axes[i, j].set_xticks(np.arange(dataset.imbalance_ratio.size), [f"{r:.3g}" for r in dataset.imbalance_ratio.values], fontsize=7)
            axes[i, j].set_yticks(np.arange(dataset.variance_ratio.size), [f"{v:.3g}" for v in dataset.variance_ratio.values])
            axes[i, j].set(xlabel="n_1 / n_0", ylabel="sigma_1^2 / sigma_0^2", title=f"{measure.split('_')[0]}: log10 tau_1/tau_0, mu~_1={norm:g}")
            figure.colorbar(image, ax=axes[i, j])
    figure.suptitle("log10 tau_1/tau_0 < 0 (blue): class 1 first; > 0 (red): class 0 first")
    figure.tight_layout()
    figures["phase_map"] = figure

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    one = dataset.isel(seed=0, centroid_norm=0).sel(variance_ratio=dataset.variance_ratio.values[-1])
    for k, ratio in enumerate(one.imbalance_ratio.values[:: max(1, one.imbalance_ratio.size // 3)]):
        for c, style in zip(CLASSES, ("-", "--")):
            curves = one.sel(imbalance_ratio=ratio, class_=c)
            axes[0].semilogx(one.tau, curves.test_loss, style, color=f"C{k}", label=f"{c} n1/n0={ratio:g}")
            axes[1].semilogx(one.tau, curves.test_loss - curves.train_loss, style, color=f"C{k}")
    axes[0].set(xlabel="tau", ylabel="test loss", title="per-class test loss")
    axes[1].set(xlabel="tau", ylabel="test - train", title="per-class generalization gap")
    axes[0].legend(fontsize=6)
    figure.tight_layout()
    figures["class_curves"] = figure
    if "memorization_fraction_generated" in dataset:
        figures["generated_memorization"] = _generated_figure(dataset, plt)
    return figures


def _generated_figure(dataset: xr.Dataset, plt):
    """Seed-mean memorization fraction of generated samples vs ``tau_sample``, per class (line
    style) and imbalance ratio (colour), one panel per variance ratio, first centroid norm."""
    fractions = dataset.memorization_fraction_generated.mean("seed").isel(centroid_norm=0)
    variances = dataset.variance_ratio.values
    figure, axes = plt.subplots(1, len(variances), figsize=(4.2 * len(variances), 3.4), squeeze=False)
    for j, v in enumerate(variances):
        for k, ratio in enumerate(dataset.imbalance_ratio.values):
            for c, style in zip(CLASSES, ("-", "--")):
                axes[0, j].semilogx(dataset.tau_sample, fractions.sel(variance_ratio=v, imbalance_ratio=ratio, class_=c), style, marker="o", color=f"C{k}", label=f"{c} n1/n0={ratio:g}")
        axes[0, j].set(xlabel="tau (generator training time)", ylabel="memorized fraction", ylim=(-0.02, 1.02), title=f"sigma_1^2/sigma_0^2={v:g}, mu~_1={float(dataset.centroid_norm.values[0]):g}")
    axes[0, 0].legend(fontsize=6)
    figure.tight_layout()
    return figure


# ----------------------------------------------------------------------------- sweeps

SCAN_TRACED = ("time", "variance_ratios", "centroid_norm_0", "centroid_norms")  # vary inside one compiled sweep program
POINT_FIELDS = ("variance_ratios", "centroid_norms", "imbalance_ratios")  # one value each per sweep run


def validate_sweep(config: Config, fields: tuple[str, ...]) -> None:
    """A sweep run is ONE grid point (variance ratio, centroid norm, imbalance ratio): each of
    :data:`POINT_FIELDS` is swept or holds one value; ``class_weights`` (a pair) is not sweepable."""
    if "class_weights" in fields:
        raise ConfigError("class_weights: a pair (one weight per class), not sweepable; set it with --class-weights W0,W1")
    require_one_value_per_run(config, POINT_FIELDS, fields)


def scan_workload(config: Config) -> Workload:
    """One run for :func:`dynamics.sweep.sweep`: the study (THEORY.md 8) at one (variance ratio,
    centroid norm, imbalance ratio) point and one seed; times ``tau = k eta / d^2``.

    Traced (:data:`SCAN_TRACED`): OU time ``time``, ``sigma_1^2/sigma_0^2`` and both centroid
    norms; ``imbalance_ratios`` sets the class counts (static: one program per ratio). The key of
    seed ``s`` is the one :func:`run` gives it (``fold_in(key(seed), s)``), so a sweep run equals
    the corresponding entry of :func:`run`. Outputs: ``train_loss``, ``test_loss[class_, tau]``,
    ``generalization_time``, ``memorization_time[class_]``, and ``learned_first``,
    ``memorized_first``: 1 if class 1's time is the shorter, else 0 (one seed's
    :func:`first_class`). With ``generate_samples > 0`` also
    ``memorization_fraction_generated[class_, tau_sample]`` and
    ``memorization_fraction_generated_total[tau_sample]`` (:func:`generated_memorization`, the
    same keys as :func:`run`).
    """
    (counts,) = class_counts(config)

    def run_one(key, values):
        point = with_values(config, values)
        variance_ratio, centroid_norm = point.variance_ratios[0], point.centroid_norms[0]
        _, train, test = class_statistics(point, key, variance_ratio, centroid_norm, counts)
        train_loss, test_loss = class_curves(point, train, test, counts, point.class_weights)
        generalization, memorization = class_times(point, train_loss, test_loss)
        first = lambda times: (times[1] < times[0]).astype(jnp.int32)
        outputs = {
            "train_loss": train_loss,
            "test_loss": test_loss,
            "generalization_time": generalization,
            "memorization_time": memorization,
            "learned_first": first(generalization),
            "memorized_first": first(memorization),
        }
        if config.generate_samples:
            per_class_fraction, total_fraction = generated_memorization(point, key, variance_ratio, centroid_norm, counts)
            outputs["memorization_fraction_generated"] = per_class_fraction
            outputs["memorization_fraction_generated_total"] = total_fraction
        return outputs

    per_class = ("class_",)
    generated_dims = {"memorization_fraction_generated": ("class_", "tau_sample"), "memorization_fraction_generated_total": ("tau_sample",)}
    return Workload(
        run=run_one,
        dims={
            "train_loss": ("class_", "tau"),
            "test_loss": ("class_", "tau"),
            "generalization_time": per_class,
            "memorization_time": per_class,
            **(generated_dims if config.generate_samples else {}),
        },
        coords={"class_": np.array(CLASSES), "tau": taus(config), **({"tau_sample": np.asarray(config.generate_taus, float)} if config.generate_samples else {})},
        divergence_outputs=("train_loss", "test_loss"),  # a time is NaN when its curve never gets there
    )
