"""Generalization vs memorization of a random-features score model ([BUBM] sec. 4, THEORY.md 7).

One random-features score ``s_A(x) = (A/sqrt(p)) tanh(W x/sqrt(d))`` at a single OU time ``t``,
trained from ``A = 0`` on ``n = psi_n d`` Gaussian points ``x0 ~ N(0, sx^2 I)`` by full-batch
gradient descent on the DSM loss (per dimension; ``tau = k eta / d^2``). For each ``psi_n`` the
study computes

* the feature statistics ``U, V`` of the training set with the noise average done exactly
  (:func:`models.denoisers.random_features.expected_feature_statistics`) and the population
  statistics of fresh data (exact, :func:`~models.denoisers.random_features.gaussian_population_statistics`);
* the closed-form gradient flow on a fine log grid of ``tau`` and, beside it, simulated plain GD
  on the same quadratic loss (step ``step_fraction`` of the stability limit, up to
  ``simulate_tau_max``): training loss, test loss and the score error
  ``(1/d) E||s_A - grad log P_t||^2`` (exact score of Gaussian data);
* the measured times (:mod:`dynamics.measures`, the same definitions as the class-imbalance study):
  ``tau_gen`` = time at which the score error has made half of its drop to its minimum, and
  ``tau_mem`` = time at which the train/test gap has grown to half of its final value; and the
  predicted ones (:func:`dynamics.theory.random_features.time_scales`);
* the eigenvalue histogram of ``U`` against the theoretical spectrum (**reconstruction**, see
  :mod:`dynamics.theory.random_features`), with its L1 and Kolmogorov-Smirnov distances.

Optional generated samples (``generate_samples > 0``, the class-imbalance study's fields and
semantics; [BUBM] sec. 2, THEORY.md 7-8): per ``psi_n`` the time-indexed generator
(:func:`models.denoisers.random_features.sample_trained_generator`: the study's ``W``, a frozen
bias ``b ~ N(0, generate_bias^2)`` shared by every ``psi_n``, one exactly trained ``A`` per OU time
node in ``[generate_time_min, generate_time_max]``, Heun probability flow) at the training times
``generate_taus``, and the fraction ``f_mem(tau)`` of its samples that copy a training point
(nearest / second-nearest distance < 1/3, :func:`dynamics.measures.memorization_fraction`).
``tau_mem_generated`` is the first ``tau`` at which ``f_mem`` reaches ``generate_fraction_level``
(:func:`dynamics.measures.first_reach_time`, linear in ``log tau``; NaN if never): [BUBM]'s
operational memorization time, beside the loss-gap ``tau_mem`` above.

``feature_statistics = "gaussian-equivalent"`` replaces the features' statistics by THEORY.md 7's
Gaussian-equivalent model restricted to its ``(d + n)``-dimensional invariant subspace
(:func:`dynamics.theory.random_features.equivalent_statistics`; exact for that model, cost
``O(p (d + n)^2)``), which reaches the regime ``psi_p >> psi_n >> 1`` of the ``tau_mem ~ n`` law
(preset ``asymptotic``); closed form only, and the spectrum is the model's own.

The same ``W`` serves every ``psi_n`` (only the training set changes). ``d``, ``p`` and ``n``
fix array shapes, so each ``psi_n`` is its own compiled program.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from dynamics import measures
from dynamics.schedules import vp_noise_variance
from dynamics.theory import random_features as theory
from dynamics.sweep import Workload, with_values
from dynamics.training import log_spaced_steps
from dynamics.validation import (
    ConfigError,
    require_choice,
    require_increasing,
    require_positive_int,
    require_range,
)
from models.denoisers import random_features as rf

NAME = "memorization"


@dataclass(frozen=True)
class Config:
    """Settings of the memorization study. Times are ``tau = steps * eta / d^2`` (THEORY.md 7)."""

    dim: int = 20  # d
    psi_p: float = 32.0  # p / d
    psi_n: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)  # n / d, one training set each
    time: float = 0.1  # OU diffusion time t
    data_std: float = 1.0  # x0 ~ N(0, data_std^2 I)
    activation: str = "tanh"
    tau_min: float = 1e-2
    tau_max: float = 1e6
    num_tau: int = 141  # closed-form grid, log-spaced in [tau_min, tau_max]
    simulate_tau_max: float = 300.0  # simulated GD runs up to this time (0: no simulation)
    num_records: int = 40  # recorded GD steps, log-spaced
    step_fraction: float = 0.1  # GD step as a fraction of the stability limit d p / (Delta lambda_max)
    mehler_order: int = 8  # Hermite order of the exact noise average
    num_bins: int = 40  # eigenvalue histogram bins (log-spaced)
    seed: int = 0
    generate_samples: int = 0  # generated samples per psi_n for the memorization fraction (0: off)
    generate_taus: tuple[float, ...] = tuple(float(10.0**k) for k in np.arange(1.0, 8.01, 0.5))  # generator training times
    generate_time_min: float = 0.01  # OU time nodes of the time-indexed score, log-spaced in [min, max]
    generate_time_max: float = 3.0
    generate_num_times: int = 6
    generate_steps: int = 32  # Heun levels of the probability-flow sampler
    generate_bias: float = 1.0  # std of the generator's frozen feature bias (0: [BUBM]'s bias-free features)
    generate_fraction_level: float = 0.1  # tau_mem_generated: first tau with f_mem >= this level
    feature_statistics: str = "exact"  # "exact": the features' U (p x p); "gaussian-equivalent": THEORY.md 7's model, any psi_p


FEATURE_STATISTICS = {
    "exact": "U, V of the activation's features with the noise average done exactly (p x p eigendecomposition)",
    "gaussian-equivalent": "THEORY.md 7's Gaussian-equivalent model in its (d + n)-dim invariant subspace (closed form only)",
}


SENSITIVITY_LEVELS = (0.05, 0.1, 0.25)  # f_mem levels of the tau_mem_generated slope check in the summary
GAP_FRACTIONS = (0.1, 0.25, 0.5)  # tau_mem onset check: the gap has reached this fraction of its final value

PRESETS = {
    "quick": Config(),
    "paper": Config(dim=100, psi_p=64.0, psi_n=(4.0, 8.0, 16.0, 32.0), simulate_tau_max=1e2),
    # the regime of THEORY.md's tau_mem ~ n (psi_p >> psi_n >> 1), in the model the theory solves
    "asymptotic": Config(
        dim=100, psi_p=1024.0, psi_n=(4.0, 8.0, 16.0, 32.0), simulate_tau_max=0.0, tau_max=1e7, num_tau=281,
        feature_statistics="gaussian-equivalent",
    ),
}


def validate(config: Config) -> Config:
    """Check every field on the host; raise :class:`ConfigError` naming the first bad one."""
    require_positive_int("dim", config.dim, minimum=2)
    require_range("psi_p", config.psi_p, low=0.0, low_open=True)
    if not config.psi_n:
        raise ConfigError("psi_n: at least one value > 0")
    require_range("psi_n", config.psi_n, low=0.0, low_open=True)
    for field, ratio in [("psi_p", config.psi_p)] + [("psi_n", value) for value in config.psi_n]:
        if not math.isclose(ratio * config.dim, round(ratio * config.dim)) or round(ratio * config.dim) < 2:
            raise ConfigError(f"{field}: {ratio} x dim={config.dim} must be an integer >= 2")
    require_range("time", config.time, low=0.0, low_open=True)
    require_range("data_std", config.data_std, low=0.0, low_open=True)
    require_choice("activation", config.activation, rf.ACTIVATIONS)
    require_range("tau_min", config.tau_min, low=0.0, low_open=True)
    require_increasing("tau_min", config.tau_min, "tau_max", config.tau_max)
    require_positive_int("num_tau", config.num_tau, minimum=8)
    require_range("simulate_tau_max", config.simulate_tau_max, low=0.0, high=config.tau_max)
    require_positive_int("num_records", config.num_records, minimum=2)
    require_range("step_fraction", config.step_fraction, low=0.0, high=1.0, low_open=True)
    require_positive_int("mehler_order", config.mehler_order, minimum=1)
    require_positive_int("num_bins", config.num_bins, minimum=4)
    require_positive_int("seed", config.seed, minimum=0)
    rf.validate_generator_fields(config)
    require_range("generate_fraction_level", config.generate_fraction_level, low=0.0, high=1.0, low_open=True)
    require_choice("feature_statistics", config.feature_statistics, FEATURE_STATISTICS)
    if config.feature_statistics == "gaussian-equivalent":
        for field in ("simulate_tau_max", "generate_samples"):
            if getattr(config, field) != 0:
                raise ConfigError(
                    f"{field}: must be 0 with feature_statistics='gaussian-equivalent' (its closed form is all it computes: no"
                    f" simulated GD, no generator), got {getattr(config, field)}"
                )
    return config


def sizes(config: Config) -> tuple[int, int, list[int]]:
    """``(d, p, [n per psi_n])``."""
    return config.dim, round(config.psi_p * config.dim), [round(v * config.dim) for v in config.psi_n]


def taus(config: Config) -> np.ndarray:
    return np.geomspace(config.tau_min, config.tau_max, config.num_tau)


def simulate_gd(config: Config, U, V, population, spectrum):
    """Plain GD on the quadratic loss up to ``simulate_tau_max``: ``(tau, train, test, score)``
    and the closed form's ``(train, test, score)`` at the same times, at ``num_records``
    log-spaced steps (NaN-padded where rounding merged steps)."""
    d, p, _ = sizes(config)
    t, empty = config.time, np.full(config.num_records + 1, np.nan)
    if config.simulate_tau_max == 0:
        return (empty,) * 7
    largest = float(spectrum.eigenvalues[-1])
    eta = config.step_fraction * d * p / (float(vp_noise_variance(t)) * largest)
    num_steps = max(1, math.ceil(config.simulate_tau_max * d**2 / eta))
    records = log_spaced_steps(num_steps, config.num_records)
    train = jax.jit(rf.make_quadratic_train(num_steps=num_steps, record_steps=records))
    weights = train(jax.random.key(config.seed), {"U": U, "V": V, "t": t, "learning_rate": eta}).params["A"]
    curves = (
        jax.vmap(lambda A: rf.quadratic_loss(A, U, V, t))(weights),
        jax.vmap(lambda A: rf.quadratic_loss(A, population.U, population.V, t))(weights),
        jax.vmap(lambda A: rf.gaussian_score_error(A, population.U, population.phi_x, t, config.data_std))(weights),
    )
    recorded_taus = jnp.asarray(records) * eta / d**2
    closed = closed_form_curves(config, U, V, population, spectrum, recorded_taus)
    pad = lambda values: np.concatenate([np.asarray(values), empty[len(records):]])
    return (pad(recorded_taus), *(pad(c) for c in curves), *(pad(c) for c in closed))


def exact_population(config: Config, W, t, data_std):
    """The features' exact population statistics, shared by every ``psi_n`` (``None`` for the
    Gaussian-equivalent model, which :func:`flow_statistics` restricts per training set)."""
    if config.feature_statistics != "exact":
        return None
    return rf.gaussian_population_statistics(W, t, data_std, config.activation, order=config.mehler_order)


def flow_statistics(config: Config, W, standard_x0, omega_key, t, data_std, constants, population=None):
    """``(U, V, population, spectrum)`` of the training set ``x0 = data_std * standard_x0``.

    ``feature_statistics = "exact"``: the features' statistics with the noise average done
    exactly, the given exact ``population`` statistics and the ``p x p`` eigendecomposition.
    ``"gaussian-equivalent"``: THEORY.md 7's equivalent model (point-specific features drawn
    from ``omega_key``) restricted to its ``(d + n)``-dim invariant subspace
    (:func:`dynamics.theory.random_features.equivalent_statistics`; ``population`` unused), so
    the flow's losses are exact for that model at any ``psi_p`` for ``O(p (d + n)^2)``.
    """
    if config.feature_statistics == "exact":
        U, V = rf.expected_feature_statistics(W, data_std * standard_x0, t, config.activation, order=config.mehler_order)
        return U, V, population, theory.flow_spectrum(U, V)
    omega = jax.random.normal(omega_key, (W.shape[0], standard_x0.shape[0]), W.dtype)
    restricted = theory.equivalent_statistics(W, standard_x0.T, omega, constants, t)
    population = rf.PopulationStatistics(restricted.population_U, restricted.population_V, restricted.phi_x)
    return restricted.U, restricted.V, population, theory.flow_spectrum(restricted.U, restricted.V, W.shape[0])


def full_spectrum(config: Config, spectrum, constants) -> np.ndarray:
    """All ``p`` eigenvalues of ``U``: the equivalent model's restriction adds ``s_t^2`` once per
    dimension off its subspace."""
    p = round(config.psi_p * config.dim)
    eigenvalues = np.asarray(spectrum.eigenvalues)
    return np.sort(np.concatenate([eigenvalues, np.full(p - eigenvalues.size, float(constants.s2))]))


def closed_form_curves(config: Config, U, V, population, spectrum, times):
    """Training loss, test loss and score error of the exact gradient flow at ``times``."""
    t = config.time
    return (
        theory.flow_loss_curve(spectrum, U, V, t, times),
        theory.flow_loss_curve(spectrum, population.U, population.V, t, times),
        theory.flow_score_error_curve(spectrum, population.U, population.phi_x, t, times, config.data_std),
    )


def histogram(config: Config, eigenvalues: np.ndarray, equivalent: np.ndarray, constants, psi_n: float):
    """Log-spaced bin edges, the fraction of eigenvalues per bin of ``U`` and of its Gaussian
    equivalent, and the theoretical one (:func:`dynamics.theory.random_features.spectral_mass`)."""
    both = np.concatenate([eigenvalues, equivalent])
    edges = np.geomspace(0.5 * both[both > 0].min(), 1.5 * both.max(), config.num_bins + 1)
    fraction = lambda values: np.histogram(values, edges)[0] / values.size
    return edges, fraction(eigenvalues), fraction(equivalent), theory.spectral_mass(edges, constants, config.psi_p, psi_n)


@partial(jax.jit, static_argnames="config")
def generated_memorization(config: Config, key, W, bias, x0) -> jax.Array:
    """``f_mem`` at every ``generate_taus`` of ``generate_samples`` samples of the generator
    trained on ``x0`` (exact noise-averaged statistics with bias ``bias``; start key ``key``)."""
    statistics = lambda t: rf.expected_feature_statistics(W, x0, t, config.activation, order=config.mehler_order, bias=bias)
    times = rf.generator_times(config.generate_time_min, config.generate_time_max, config.generate_num_times)
    samples = rf.sample_trained_generator(
        key, statistics, W, x0, times, jnp.asarray(config.generate_taus, float), config.generate_samples,
        config.activation, bias, num_steps=config.generate_steps,
    )
    return jax.vmap(lambda x: measures.memorization_fraction(x, x0))(samples)


def generated_memorization_time(generate_taus, fractions, level: float) -> float:
    """``tau_mem_generated``: first training time at which the copy fraction reaches ``level``."""
    return float(measures.first_reach_time(jnp.asarray(generate_taus, float), jnp.asarray(fractions), level))


def run(config: Config = PRESETS["quick"]) -> xr.Dataset:
    """Closed form, simulation, measured and predicted times, spectra (see the module docstring)."""
    config = validate(config)
    with jax.enable_x64(True):
        return _run(config)


def _run(config: Config) -> xr.Dataset:
    d, p, counts = sizes(config)
    t, grid = config.time, jnp.asarray(taus(config))
    key = jax.random.key(config.seed)
    W = rf.sample_features(jax.random.fold_in(key, 0), d, p)
    exact = config.feature_statistics == "exact"
    population = exact_population(config, W, t, config.data_std)
    constants = theory.equivalence_constants(t, config.data_std, config.activation)
    bias = config.generate_bias * jax.random.normal(jax.random.fold_in(key, 1000), (p,))
    rows, generated = [], []
    for index, (psi_n, n) in enumerate(zip(config.psi_n, counts)):
        standard_x0 = jax.random.normal(jax.random.fold_in(key, index + 1), (n, d))
        x0 = config.data_std * standard_x0
        if config.generate_samples:
            start_key = jax.random.fold_in(jax.random.fold_in(key, index + 1), 2)
            generated.append(np.asarray(generated_memorization(config, start_key, W, bias, x0)))
        equivalent_key = jax.random.fold_in(jax.random.fold_in(key, index + 1), 1)
        U, V, psi_population, spectrum = flow_statistics(config, W, standard_x0, equivalent_key, t, config.data_std, constants, population)
        closed = closed_form_curves(config, U, V, psi_population, spectrum, grid)
        eigenvalues = full_spectrum(config, spectrum, constants)
        simulated = simulate_gd(config, U, V, psi_population, spectrum)
        # the exact features' spectrum beside one draw of its Gaussian equivalent; in the equivalent model both are the same
        equivalent = np.linalg.eigvalsh(np.asarray(theory.gaussian_equivalent_matrix(equivalent_key, W, constants, n))) if exact else eigenvalues
        rows.append((closed, simulated, eigenvalues, *histogram(config, eigenvalues, equivalent, constants, psi_n)))

    stack = lambda pick: np.stack([np.asarray(pick(row)) for row in rows])
    curve_dims = ("psi_n", "tau")
    record_dims = ("psi_n", "record")
    dataset = xr.Dataset(
        {
            "train_loss": (curve_dims, stack(lambda r: r[0][0])),
            "test_loss": (curve_dims, stack(lambda r: r[0][1])),
            "score_error": (curve_dims, stack(lambda r: r[0][2])),
            "tau_simulated": (record_dims, stack(lambda r: r[1][0])),
            "train_loss_simulated": (record_dims, stack(lambda r: r[1][1])),
            "test_loss_simulated": (record_dims, stack(lambda r: r[1][2])),
            "score_error_simulated": (record_dims, stack(lambda r: r[1][3])),
            "train_loss_closed_at_records": (record_dims, stack(lambda r: r[1][4])),
            "test_loss_closed_at_records": (record_dims, stack(lambda r: r[1][5])),
            "score_error_closed_at_records": (record_dims, stack(lambda r: r[1][6])),
            "eigenvalues": (("psi_n", "eigen"), stack(lambda r: r[2])),
            "bin_edges": (("psi_n", "edge"), stack(lambda r: r[3])),
            "spectrum_empirical": (("psi_n", "bin"), stack(lambda r: r[4])),
            "spectrum_equivalent": (("psi_n", "bin"), stack(lambda r: r[5])),
            "spectrum_theory": (("psi_n", "bin"), stack(lambda r: r[6])),
        },
        coords={"psi_n": list(config.psi_n), "tau": np.asarray(grid), "record": np.arange(config.num_records + 1)},
        attrs={
            "experiment": NAME,
            "config": repr(dataclasses.asdict(config)),
            "conventions": "OU time t; DSM loss per dimension (L(A=0) = 1); tau = steps x eta / d^2",
            "source_reference": "Bonnaire, Urfin, Biroli, Mezard, arXiv 2505.17638, sec. 4",
            **{f"ge_{name}": float(value) for name, value in constants._asdict().items()},
        },
    )
    if generated:
        dataset = dataset.assign_coords(tau_sample=np.asarray(config.generate_taus, float))
        dataset["memorization_fraction_generated"] = (("psi_n", "tau_sample"), np.stack(generated))
        dataset["memorization_fraction_generated"].attrs["long_name"] = "fraction of generated samples that copy a training point ([BUBM] 1/3 ratio)"
        dataset["tau_mem_generated"] = (
            ("psi_n",),
            np.array([generated_memorization_time(config.generate_taus, row, config.generate_fraction_level) for row in generated]),
        )
    measured = _measured_times(dataset)
    for name, values in measured.items():
        dataset[name] = (("psi_n",), values)
    predicted = [theory.time_scales(constants, t, config.psi_p, psi_n) for psi_n in config.psi_n]
    for name in predicted[0]:
        dataset[f"{name}_predicted"] = (("psi_n",), np.array([row[name] for row in predicted]))
    dataset["train_loss"].attrs["long_name"] = "closed-form gradient flow, training loss (train-set U, V)"
    dataset["test_loss"].attrs["long_name"] = "closed-form gradient flow, test loss (population U, V)"
    dataset["score_error"].attrs["long_name"] = "(1/d) E|s_A - grad log P_t|^2 under P_t"
    return dataset


# ----------------------------------------------------------------------------- sweeps

SCAN_TRACED = ("time", "data_std")  # vary inside one compiled sweep program


def validate_sweep(config: Config, fields: tuple[str, ...]) -> None:
    """A sweep run trains on one training-set size: sweep ``psi_n`` or give one value."""
    if "psi_n" not in fields and len(config.psi_n) > 1:
        raise ConfigError(f"psi_n: a sweep runs one training-set size per run; sweep it with --grid psi_n=... or give one value, got {config.psi_n}")


def scan_workload(config: Config) -> Workload:
    """One run for :func:`dynamics.sweep.sweep`: features, training set and closed-form flow for
    one ``psi_n`` (static: it sets ``n``) at traced OU time ``time`` and data scale ``data_std``.

    Seed ``s`` draws ``W`` and the training set from ``fold_in(key(seed), s)``. Outputs: the
    closed-form ``train_loss``, ``test_loss``, ``score_error`` over ``tau`` and the measured
    ``tau_gen`` (score error), ``tau_mem`` (train/test gap).
    """
    d, p, (n,) = sizes(config)
    grid = taus(config)

    def run_one(key, values):
        traced = with_values(config, values)
        t, std = traced.time, traced.data_std
        W = rf.sample_features(jax.random.fold_in(key, 0), d, p)
        population = exact_population(config, W, t, std)
        constants = theory.equivalence_constants(t, std, config.activation)
        standard_x0 = jax.random.normal(jax.random.fold_in(key, 1), (n, d))
        U, V, population, spectrum = flow_statistics(config, W, standard_x0, jax.random.fold_in(key, 2), t, std, constants, population)
        train, test, score = closed_form_curves(traced, U, V, population, spectrum, jnp.asarray(grid))
        return {
            "train_loss": train,
            "test_loss": test,
            "score_error": score,
            "tau_gen": measures.generalization_time(jnp.asarray(grid), score),
            "tau_mem": measures.memorization_time(jnp.asarray(grid), train, test),
        }

    curve = ("tau",)
    return Workload(
        run=run_one,
        dims={"train_loss": curve, "test_loss": curve, "score_error": curve},
        coords={"tau": grid},
        divergence_outputs=("train_loss", "test_loss", "score_error"),  # a time is NaN when never reached
    )


def _measured_times(dataset: xr.Dataset) -> dict[str, np.ndarray]:
    """``tau_gen`` (score error and test loss) and ``tau_mem`` from the closed-form curves (the
    simulated GD is compared with the closed form curve by curve in :func:`summary`)."""
    grid = jnp.asarray(dataset.tau.values)
    result = {"tau_gen": [], "tau_gen_test": [], "tau_mem": []}
    for psi_n in dataset.psi_n.values:
        one = dataset.sel(psi_n=psi_n)
        result["tau_gen"].append(float(measures.generalization_time(grid, jnp.asarray(one.score_error.values))))
        result["tau_gen_test"].append(float(measures.generalization_time(grid, jnp.asarray(one.test_loss.values))))
        result["tau_mem"].append(
            float(measures.memorization_time(grid, jnp.asarray(one.train_loss.values), jnp.asarray(one.test_loss.values)))
        )
    return {name: np.array(values) for name, values in result.items()}


def gap_fraction_times(dataset: xr.Dataset, fraction: float) -> np.ndarray:
    """Per ``psi_n``: the first ``tau`` at which the train/test gap has covered ``fraction`` of its
    change from the first to the last record (``fraction = 0.5`` is ``tau_mem``); linear in
    ``log tau`` (:func:`dynamics.measures.first_reach_time`)."""
    gaps = (dataset.test_loss - dataset.train_loss).values
    relative = (gaps - gaps[:, :1]) / (gaps[:, -1:] - gaps[:, :1])
    with jax.enable_x64(True):  # the precision tau_mem was measured in
        grid = jnp.asarray(dataset.tau.values)
        return np.array([float(measures.first_reach_time(grid, jnp.asarray(row), fraction)) for row in relative])


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """OLS slope of ``log y`` on ``log x``."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def summary(dataset: xr.Dataset, config: Config) -> dict:
    """Headline numbers: the tau_mem ~ n slope, the tau_gen spread, the spectrum distances, and
    the closed form vs simulated GD deviation."""
    psi_n = dataset.psi_n.values
    tau_gen, tau_mem = dataset.tau_gen.values, dataset.tau_mem.values
    l1 = lambda name: np.abs(dataset[name] - dataset.spectrum_theory).sum("bin").values
    ks = lambda name: np.abs((dataset[name] - dataset.spectrum_theory).cumsum("bin")).max("bin").values
    distances = {f"{name}_{kind}": fn(f"spectrum_{name}") for name in ("empirical", "equivalent") for kind, fn in (("l1", l1), ("ks", ks))}
    deviation = {}
    for curve in ("train_loss", "test_loss", "score_error"):
        gap = np.abs(dataset[f"{curve}_closed_at_records"] - dataset[f"{curve}_simulated"]).values
        deviation[curve] = float(np.nanmax(gap)) if np.isfinite(gap).any() else None
    per_psi_n = {
        str(value): {
            "tau_gen": float(tau_gen[i]),
            "tau_gen_test_loss": float(dataset.tau_gen_test.values[i]),
            "tau_gen_predicted": float(dataset.tau_gen_predicted.values[i]),
            "tau_mem": float(tau_mem[i]),
            "tau_mem_predicted": float(dataset.tau_mem_predicted.values[i]),
            "tau_mem_predicted_exact_edge": float(dataset.tau_mem_exact_edge_predicted.values[i]),
            "min_score_error": float(dataset.score_error.sel(psi_n=value).min()),
            **{f"spectrum_{name}": float(values[i]) for name, values in distances.items()},
        }
        for i, value in enumerate(psi_n)
    }
    result = {
        "dim": config.dim,
        "psi_p": config.psi_p,
        "time": config.time,
        "feature_statistics": config.feature_statistics,
        "tau_mem_slope": _slope(psi_n, tau_mem),
        "tau_mem_local_slopes": {
            f"{a}-{b}": _slope(np.array([a, b]), np.array([x, y])) for a, b, x, y in zip(psi_n[:-1], psi_n[1:], tau_mem[:-1], tau_mem[1:])
        },
        "tau_mem_slope_by_gap_fraction": {str(fraction): _slope(psi_n, gap_fraction_times(dataset, fraction)) for fraction in GAP_FRACTIONS},
        "tau_mem_slope_predicted": _slope(psi_n, dataset.tau_mem_predicted.values),
        "tau_mem_slope_predicted_exact_edge": _slope(psi_n, dataset.tau_mem_exact_edge_predicted.values),
        "tau_gen_relative_change": float(tau_gen.max() / tau_gen.min() - 1),
        "score_error_plateau_slope": _slope(psi_n, dataset.score_error.min("tau").values),
        **{f"spectrum_{name}_max": float(values.max()) for name, values in distances.items()},
        "closed_form_vs_gd_max_abs": deviation,
        "per_psi_n": per_psi_n,
    }
    if "memorization_fraction_generated" in dataset:
        result["generated_samples"] = generated_summary(dataset, config)
    return result


def generated_summary(dataset: xr.Dataset, config: Config) -> dict:
    """``f_mem(tau)`` and ``tau_mem_generated`` per ``psi_n``, the slope of ``log
    tau_mem_generated`` on ``log n`` (None when a time is NaN), the slope at the
    :data:`SENSITIVITY_LEVELS` of ``f_mem``, and the scale-free half-rise time of ``f_mem``
    (to half of its last value, :func:`dynamics.measures.half_relaxation_time`) with its slope:
    ``f_mem`` saturates below 1 when ``n`` is not small against ``p``, which a fixed level mixes
    into the time."""
    psi_n, taus = dataset.psi_n.values, dataset.tau_sample.values
    fractions = dataset.memorization_fraction_generated.values
    slope = lambda times: _slope(psi_n, times) if np.all(np.isfinite(times)) and psi_n.size > 1 else None
    at_level = lambda level: np.array([generated_memorization_time(taus, row, level) for row in fractions])
    # scale-free companion: f_mem has made half of its rise to its last value (NaN if it never rises)
    half_rise = np.array([float(measures.half_relaxation_time(jnp.asarray(taus), jnp.asarray(row))) if row[-1] > row[0] else np.nan for row in fractions])
    return {
        "tau_sample": [float(tau) for tau in taus],
        "level": config.generate_fraction_level,
        "tau_mem_generated": {str(value): _finite(time) for value, time in zip(psi_n, dataset.tau_mem_generated.values)},
        "memorization_fraction": {str(value): [float(f) for f in row] for value, row in zip(psi_n, fractions)},
        "tau_mem_generated_slope": slope(dataset.tau_mem_generated.values),
        "tau_mem_generated_slope_by_level": {str(level): slope(at_level(level)) for level in SENSITIVITY_LEVELS},
        "f_mem_final": {str(value): float(row[-1]) for value, row in zip(psi_n, fractions)},
        "tau_half_rise": {str(value): _finite(time) for value, time in zip(psi_n, half_rise)},
        "tau_half_rise_slope": slope(half_rise),
        "settings": {
            "samples": config.generate_samples,
            "time_nodes": [config.generate_time_min, config.generate_time_max, config.generate_num_times],
            "heun_steps": config.generate_steps,
            "bias_std": config.generate_bias,
            "criterion": "nearest / second-nearest training distance < 1/3 ([BUBM] sec. 2)",
        },
    }


def _generated_markdown(generated: dict) -> list[str]:
    show = lambda value: "n/a" if value is None else f"{value:.3g}"
    lines = [
        "",
        f"## Memorization fraction of generated samples ({generated['settings']['samples']} per psi_n; {generated['settings']['criterion']})",
        "",
        "| psi_n | " + " | ".join(f"{tau:.3g}" for tau in generated["tau_sample"]) + f" | tau_mem_generated (f_mem = {generated['level']}) |",
        "|---|" + "---|" * (len(generated["tau_sample"]) + 1),
    ]
    for psi_n, row in generated["memorization_fraction"].items():
        lines.append(f"| {psi_n} | " + " | ".join(f"{f:.2f}" for f in row) + f" | {show(generated['tau_mem_generated'][psi_n])} |")
    lines += [
        "",
        f"- slope of log tau_mem_generated on log n: {show(generated['tau_mem_generated_slope'])}"
        + " (at f_mem levels " + ", ".join(f"{level}: {show(slope)}" for level, slope in generated["tau_mem_generated_slope_by_level"].items()) + ")",
        "- half-rise time of f_mem (half of its last value): "
        + ", ".join(f"psi_n {value}: {show(time)}" for value, time in generated["tau_half_rise"].items())
        + f"; slope {show(generated['tau_half_rise_slope'])}",
    ]
    return lines


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def summary_markdown(result: dict) -> str:
    """Measured vs predicted table of :func:`summary`."""
    lines = [
        f"# memorization: random-features score model, d = {result['dim']}, psi_p = {result['psi_p']}, t = {result['time']}",
        "",
        f"Feature statistics: {result['feature_statistics']} ({FEATURE_STATISTICS[result['feature_statistics']]}).",
        "",
        (
            "| psi_n | tau_gen measured | tau_gen predicted | tau_mem measured | tau_mem predicted | min score error |"
            " spectrum L1 (U) | KS (U) | L1 (Gaussian equiv.) | KS (Gaussian equiv.) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for psi_n, row in result["per_psi_n"].items():
        lines.append(
            f"| {psi_n} | {row['tau_gen']:.3g} | {row['tau_gen_predicted']:.3g} | {row['tau_mem']:.3g} | "
            f"{row['tau_mem_predicted']:.3g} | {row['min_score_error']:.3g} | {row['spectrum_empirical_l1']:.3f} | "
            f"{row['spectrum_empirical_ks']:.3f} | {row['spectrum_equivalent_l1']:.3f} | {row['spectrum_equivalent_ks']:.3f} |"
        )
    deviation = result["closed_form_vs_gd_max_abs"]
    show = lambda value: "n/a" if value is None else f"{value:.2e}"
    lines += [
        "",
        (
            f"- slope of log tau_mem on log n: measured {result['tau_mem_slope']:.3f}, predicted"
            f" {result['tau_mem_slope_predicted']:.3f} (THEORY.md edge), {result['tau_mem_slope_predicted_exact_edge']:.3f} (solved edge)"
        ),
        "- local slopes of log tau_mem on log n (between neighbouring psi_n): "
        + ", ".join(f"{pair}: {slope:.2f}" for pair, slope in result["tau_mem_local_slopes"].items()),
        "- slope of log tau_mem on log n with the gap at other fractions of its final value: "
        + ", ".join(f"{fraction}: {slope:.2f}" for fraction, slope in result["tau_mem_slope_by_gap_fraction"].items()),
        f"- relative change of tau_gen across psi_n: {result['tau_gen_relative_change']:.3f}",
        f"- slope of log (min score error) on log n: {result['score_error_plateau_slope']:.3f}",
        (
            f"- largest |closed form - simulated GD| (train loss, test loss, score error): {show(deviation['train_loss'])},"
            f" {show(deviation['test_loss'])}, {show(deviation['score_error'])}"
        ),
        "",
        (
            "tau_gen: the score error has made half of its drop to its minimum; tau_mem: the train/test gap"
            " has grown to half of its final value (dynamics.measures). Predictions: THEORY.md 7"
            " (tau_mem = psi_p / (Delta_t lambda_min(rho_1))). Spectrum distances: histogram of the"
            " eigenvalues of U (and of one Gaussian-equivalent matrix) vs the theoretical density"
            " (reconstruction), L1 over the bins and the largest CDF difference (KS)."
        ),
    ]
    if "generated_samples" in result:
        lines += _generated_markdown(result["generated_samples"])
    return "\n".join(lines) + "\n"


def plot(dataset: xr.Dataset, config: Config) -> dict:
    """Figures: loss and score-error curves over tau, the spectrum of U vs theory, the time scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    psi_n = dataset.psi_n.values
    colours = plt.cm.viridis(np.linspace(0, 0.9, psi_n.size))
    legend = " (lines: closed form, circles: GD)" if np.isfinite(dataset.tau_simulated.values).any() else " (closed form; dotted: tau_mem)"
    curves, axes = plt.subplots(1, 3, figsize=(14, 4))
    for colour, value in zip(colours, psi_n):
        one = dataset.sel(psi_n=value)
        for axis, (name, simulated) in zip(axes, [("train_loss", "train_loss_simulated"), ("test_loss", "test_loss_simulated"), ("score_error", "score_error_simulated")]):
            axis.plot(dataset.tau, one[name], color=colour, label=f"psi_n = {value:g}")
            axis.plot(one.tau_simulated, one[simulated], "o", ms=3, mfc="none", color=colour)
            axis.axvline(float(one.tau_mem), color=colour, ls=":", lw=0.8)
            axis.set_xscale("log")
            axis.set_title(name.replace("_", " ") + legend)
            axis.set_xlabel("tau = k eta / d^2")
    axes[2].set_yscale("log")
    axes[0].legend()
    curves.tight_layout()

    spectra, spectrum_axes = plt.subplots(1, psi_n.size, figsize=(3.6 * psi_n.size, 3.4), squeeze=False)
    for axis, value in zip(spectrum_axes[0], psi_n):
        one = dataset.sel(psi_n=value)
        edges = one.bin_edges.values
        widths = np.diff(np.log(edges))
        axis.bar(edges[:-1], one.spectrum_empirical / widths, width=np.diff(edges), align="edge", alpha=0.4, label="eigenvalues of U")
        axis.step(edges[:-1], one.spectrum_theory / widths, where="post", color="k", label="theory (reconstruction)")
        axis.step(edges[:-1], one.spectrum_equivalent / widths, where="post", color="tab:red", ls="--", lw=1, label="Gaussian-equivalent matrix")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_ylim(1e-4 / config.num_bins, 10.0)
        axis.set_title(f"psi_n = {value:g}")
        axis.set_xlabel("lambda")
    spectrum_axes[0][0].set_ylabel("fraction per unit log lambda")
    spectrum_axes[0][0].legend()
    spectra.tight_layout()

    scales, axis = plt.subplots(figsize=(4.5, 3.6))
    axis.loglog(psi_n, dataset.tau_mem, "o-", label="tau_mem measured")
    axis.loglog(psi_n, dataset.tau_mem_predicted, "s--", label="tau_mem predicted")
    axis.loglog(psi_n, dataset.tau_gen, "o-", label="tau_gen measured")
    axis.loglog(psi_n, dataset.tau_gen_predicted, "s--", label="tau_gen predicted")
    axis.set_xlabel("psi_n = n / d")
    axis.set_ylabel("tau")
    axis.legend(fontsize=8)
    scales.tight_layout()
    figures = {"curves": curves, "spectrum": spectra, "time_scales": scales}
    if "memorization_fraction_generated" in dataset:
        generated, axis = plt.subplots(figsize=(4.5, 3.6))
        for colour, value in zip(colours, psi_n):
            axis.semilogx(dataset.tau_sample, dataset.memorization_fraction_generated.sel(psi_n=value), "o-", color=colour, label=f"psi_n = {value:g}")
        axis.axhline(config.generate_fraction_level, color="k", ls=":", lw=0.8)
        axis.set_xlabel("generator training time tau")
        axis.set_ylabel("fraction of generated samples copying a training point")
        axis.legend(fontsize=8)
        generated.tight_layout()
        figures["generated_memorization"] = generated
    return figures
