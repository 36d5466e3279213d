"""Generalization vs memorization of a random-features score model ([BUBM] sec. 2-4, docs/theory.md section 7).

ONE run (``point``) trains the score ``s_A(x) = (A/sqrt(p)) g(W x/sqrt(d))`` at one OU time ``t``
from ``A = 0`` on ``n = psi_n d`` Gaussian points ``x0 ~ N(0, data_std^2 I)``, with the DSM loss
per dimension (``L(A = 0) = 1``) and training time ``tau = k eta / d^2``. It computes

* the feature statistics ``U, V`` of the training set, the noise averaged exactly
  (:func:`diffdyn.models.denoisers.random_features.expected_feature_statistics`), and the exact
  population statistics; or, with ``feature_statistics = "gaussian-equivalent"``, docs/theory.md
  section 7's Gaussian-equivalent model restricted to its ``(d + n)``-dim invariant subspace
  (:func:`diffdyn.dynamics.theory.random_features.equivalent_statistics`, any ``psi_p``: the regime
  ``psi_p >> psi_n`` of ``tau_mem ~ n``, preset ``asymptotic``; closed form only);
* the closed-form gradient flow's training loss, test loss and score error
  ``(1/d) E||s_A - grad log P_t||^2`` on the ``tau`` grid and, beside them, plain GD on the same
  quadratic loss (``gd_steps`` steps of ``eta = simulate_tau_max d^2 / gd_steps``);
* in-graph times (:mod:`diffdyn.dynamics.measures`): ``tau_gen`` (the score error has made half of its
  drop to its minimum), ``tau_mem`` (the train/test gap has reached half of its final value) and
  the gap's reach times at other fractions; all ``p`` eigenvalues of ``U`` (and of the Gaussian
  equivalent of the same training set), histogrammed against the theoretical density in
  ``summarize``;
* optionally (``generator.samples > 0``, [BUBM] sec. 2) the fraction ``f_mem(tau)`` of samples
  of the time-indexed generator (:func:`diffdyn.models.denoisers.random_features.sample_trained_generator`)
  that copy a training point, and ``tau_mem_generated``, the first ``tau`` with ``f_mem`` at a level.

Keys: every draw comes from the run key, so every ``psi_n`` of a seed shares ``W`` and the
training sets are nested (point ``i`` is drawn from ``fold_in(key, i)``). ``summarize`` pools the
seeds (median of times, histograms of all eigenvalues) and predicts the times on the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from diffdyn.dynamics import measures
from diffdyn.dynamics.config import LogGrid, StudyConfig, setting
from diffdyn.dynamics.schedules import vp_noise_variance
from diffdyn.dynamics.study import Outputs, Row, Summary
from diffdyn.dynamics.theory import random_features as theory
from diffdyn.dynamics.training import log_spaced_steps
from diffdyn.dynamics.validation import ConfigError
from diffdyn.experiments import figures as plots
from diffdyn.experiments.runner import bind
from diffdyn.models.denoisers import random_features as rf

NAME = "memorization"
REFERENCE = "Bonnaire, Urfin, Biroli, Mezard, arXiv 2505.17638, sec. 2-4; docs/theory.md section 7"
CONVENTIONS = "OU time t; DSM loss per dimension (L(A = 0) = 1); tau = k eta / d^2"
PRECISION = "float64"
FEATURE_STATISTICS = ("exact", "gaussian-equivalent")
GAP_FRACTIONS = (0.1, 0.25, 0.5)  # onset of memorization at these fractions of the final gap (0.5: tau_mem)
FEATURES, POINTS, POINT_FEATURES, BIAS, START = range(5)  # fold_in tags of the run key


@dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the memorization study (times ``tau = k eta / d^2``, OU time ``t``)."""

    psi_n: tuple[float, ...] = setting((2.0, 4.0, 8.0, 16.0), "training-set size n / d (sets n: one program each)", grid=True, low=0.0, low_open=True)
    dim: int = setting(20, "data dimension d", low=2)
    psi_p: float = setting(32.0, "features per dimension p / d", low=0.0, low_open=True)
    time: float = setting(0.1, "OU time t at which the score is trained", traced=True, low=0.0, low_open=True)
    data_std: float = setting(1.0, "data scale: x0 ~ N(0, data_std^2 I)", traced=True, low=0.0, low_open=True)
    activation: str = setting("tanh", "activation g of the features", choices=tuple(theory.ACTIVATIONS))
    feature_statistics: str = setting("exact", "exact: the features' U (p x p); gaussian-equivalent: the theory's model, any psi_p", choices=FEATURE_STATISTICS)
    tau: LogGrid = setting(LogGrid(1e-2, 1e6, 141), "training times of the closed-form flow")
    simulate_tau_max: float = setting(300.0, "plain GD runs to this tau (0: no simulation)", low=0.0)
    gd_steps: int = setting(500, "GD steps up to simulate_tau_max (stable while gd_step_fraction < 1)", low=1)
    num_records: int = setting(40, "recorded GD steps, log-spaced", low=2)
    mehler_order: int = setting(8, "Hermite order of the exact noise average", low=1)
    num_bins: int = setting(40, "log-spaced bins of the eigenvalue histograms", low=4)
    generator: rf.Generator = setting(rf.Generator(taus=tuple(float(f"{10**k:.4g}") for k in np.arange(1.0, 8.01, 0.5))), "time-indexed generator")
    copy_levels: tuple[float, ...] = setting(
        (0.1, 0.05, 0.25), "f_mem levels of tau_mem_generated (the first is the headline)", low=0.0, high=1.0, low_open=True
    )


PRESETS = {
    "quick": Config(),
    "tiny": Config(dim=8, psi_p=4.0, psi_n=(1.0, 2.0), tau=LogGrid(1e-2, 1e5, 40), simulate_tau_max=30.0, gd_steps=100, num_records=12, num_bins=12),
    "paper": Config(dim=100, psi_p=64.0, psi_n=(4.0, 8.0, 16.0, 32.0), simulate_tau_max=100.0, gd_steps=200),
    # the regime of tau_mem ~ n (psi_p >> psi_n >> 1), in the model the theory solves
    "asymptotic": Config(
        dim=100, psi_p=1024.0, psi_n=(4.0, 8.0, 16.0, 32.0), simulate_tau_max=0.0, tau=LogGrid(1e-2, 1e7, 281), feature_statistics="gaussian-equivalent"
    ),
}


def sizes(config: Config) -> tuple[int, int, int]:
    """``(d, p, n)`` of one grid point."""
    return config.dim, round(config.psi_p * config.dim), round(config.psi_n * config.dim)


def validate(config: Config) -> None:
    """Cross-field checks of one grid point."""
    for field in ("psi_p", "psi_n"):
        count = getattr(config, field) * config.dim
        if not math.isclose(count, round(count)) or round(count) < 2:
            raise ConfigError(f"{field}: {getattr(config, field)} x dim={config.dim} must be an integer >= 2")
    if config.simulate_tau_max > config.tau.high:
        raise ConfigError(f"simulate_tau_max: allowed [0, tau.high={config.tau.high:g}]; got {config.simulate_tau_max:g}")
    if config.feature_statistics == "gaussian-equivalent":
        for field, value in (("simulate_tau_max", config.simulate_tau_max), ("generator.samples", config.generator.samples)):
            if value:
                raise ConfigError(f"{field}: must be 0 with feature_statistics=gaussian-equivalent (closed form only: no GD, no generator); got {value}")
    if not config.copy_levels or len(set(config.copy_levels)) != len(config.copy_levels):
        raise ConfigError(f"copy_levels: needs distinct values; got {config.copy_levels}")


# ----------------------------------------------------------------------------- one run


def nested_normals(key: PRNGKeyArray, count: int, shape: tuple[int, ...]) -> Float[Array, "count ..."]:
    """``count`` standard normal arrays, number ``i`` from ``fold_in(key, i)``: a smaller count
    draws the first ones of a larger count (nested training sets)."""
    return jax.vmap(lambda index: jax.random.normal(jax.random.fold_in(key, index), shape))(jnp.arange(count))


def draws(key: PRNGKeyArray, config: Config) -> tuple[Float[Array, "p d"], Float[Array, "n d"], Float[Array, "p n"]]:
    """The run's features ``W`` (the same for every ``psi_n``), standardised training points and
    the Gaussian-equivalent model's point features ``Omega`` (both nested in ``n``)."""
    d, p, n = sizes(config)
    tagged = lambda tag: jax.random.fold_in(key, tag)
    return rf.sample_features(tagged(FEATURES), d, p), nested_normals(tagged(POINTS), n, (d,)), nested_normals(tagged(POINT_FEATURES), n, (p,)).T


def gd_times(config: Config) -> np.ndarray:
    """The recorded GD times ``k eta / d^2`` (``eta = simulate_tau_max d^2 / gd_steps``)."""
    return np.asarray(log_spaced_steps(config.gd_steps, config.num_records)) * config.simulate_tau_max / config.gd_steps


def simulate_gd(key: PRNGKeyArray, config: Config, stats: rf.TrainingStatistics) -> dict:
    """Plain GD on the quadratic loss beside the closed form, ``[curve][source, record]``, and its
    step as a fraction of the stability limit ``d p / (Delta_t lambda_max)`` (curves NaN at >= 1)."""
    d, p, _ = sizes(config)
    t, eta = config.time, config.simulate_tau_max * d**2 / config.gd_steps
    train = rf.make_quadratic_train(num_steps=config.gd_steps, record_steps=log_spaced_steps(config.gd_steps, config.num_records))
    simulated = rf.weight_curves(train(key, {"U": stats.U, "V": stats.V, "t": t, "learning_rate": eta}).params["A"], stats, t, config.data_std)
    closed = rf.flow_curves(stats, t, jnp.asarray(gd_times(config)), config.data_std)
    fraction = eta * vp_noise_variance(t) * stats.spectrum.eigenvalues[-1] / (d * p)
    both = jnp.where(fraction < 1, jnp.stack([closed, simulated], axis=1), jnp.nan)
    return {f"{name}_gd": curves for name, curves in zip(rf.CURVES, both)} | {"gd_step_fraction": fraction}


def generated_copies(key: PRNGKeyArray, config: Config, W, x0, bias) -> dict:
    """``f_mem`` at every ``generator.taus``, the first ``tau`` at which it reaches each of
    ``copy_levels`` (NaN if never) and its half-rise time (to half of its last value)."""
    settings, taus = config.generator, jnp.asarray(config.generator.taus)
    statistics = lambda t: rf.expected_feature_statistics(W, x0, t, config.activation, order=config.mehler_order, bias=bias)
    samples = rf.sample_trained_generator(
        key, statistics, W, x0, jnp.asarray(settings.time.values()), taus, settings.samples, config.activation, bias, num_steps=settings.steps
    )
    fraction = jax.vmap(lambda x: measures.memorization_fraction(x, x0))(samples).astype(x0.dtype)
    return {
        "memorization_fraction": fraction,
        "tau_mem_generated": jax.vmap(lambda level: measures.first_reach_time(taus, fraction, level))(jnp.asarray(config.copy_levels)),
        "tau_half_rise_generated": jnp.where(fraction[-1] > fraction[0], measures.half_relaxation_time(taus, fraction), jnp.nan),
    }


def point(key: PRNGKeyArray, config: Config) -> dict:
    """One training-set size and one seed (see the module docstring)."""
    _, p, _ = sizes(config)
    W, points, omega = draws(key, config)
    t, std, exact = config.time, config.data_std, config.feature_statistics == "exact"
    stats = rf.training_statistics(W, points, t, std, config.activation, order=config.mehler_order, omega=None if exact else omega)
    taus = jnp.asarray(config.tau.values())
    train, test, score = rf.flow_curves(stats, t, taus, std)
    gap = test - train
    relative_gap = (gap - gap[0]) / (gap[-1] - gap[0])
    constants = theory.equivalence_constants(t, std, config.activation)
    outputs = {
        "train_loss": train,
        "test_loss": test,
        "score_error": score,
        "tau_gen": measures.generalization_time(taus, score),
        "tau_gen_test": measures.generalization_time(taus, test),
        "tau_mem": measures.memorization_time(taus, train, test),
        "gap_fraction_time": jax.vmap(lambda level: measures.first_reach_time(taus, relative_gap, level))(jnp.asarray(GAP_FRACTIONS)),
        "eigenvalue": theory.full_eigenvalues(stats.spectrum.eigenvalues, p, constants.s2),
    }
    if exact:  # the spectrum of the same training set's Gaussian equivalent, beside U's
        equivalent = theory.equivalent_statistics(W, points.T, omega, constants, t).U
        outputs["eigenvalue_equivalent"] = theory.full_eigenvalues(jnp.linalg.eigvalsh(equivalent), p, constants.s2)
    if config.simulate_tau_max:
        outputs |= simulate_gd(key, config, stats)
    if config.generator.samples:
        bias = config.generator.bias * jax.random.normal(jax.random.fold_in(key, BIAS), (p,))
        outputs |= generated_copies(jax.random.fold_in(key, START), config, W, std * points, bias)
    return outputs


def outputs(config: Config) -> Outputs:
    """The schema of :func:`point` (GD and generator outputs only when switched on)."""
    gd = ("source", "tau_gd")
    return Outputs(
        dims={
            **{name: ("tau",) for name in rf.CURVES},
            **{f"{name}_gd": gd for name in rf.CURVES},
            "gap_fraction_time": ("gap_fraction",),
            "eigenvalue": ("eigen",),
            "eigenvalue_equivalent": ("eigen",),
            "memorization_fraction": ("tau_sample",),
            "tau_mem_generated": ("copy_level",),
        },
        coords={
            "tau": config.tau.values(),
            "source": np.array(["closed_form", "gd"]),
            "tau_gd": gd_times(config),
            "gap_fraction": np.asarray(GAP_FRACTIONS),
            "tau_sample": np.asarray(config.generator.taus),
            "copy_level": np.asarray(config.copy_levels),
        },
        checked=(*rf.CURVES, *(f"{name}_gd" for name in rf.CURVES), "eigenvalue", "memorization_fraction"),  # a time is NaN where never reached
        long_names={
            "train_loss": "closed-form gradient flow, training loss (train-set U, V)",
            "test_loss": "closed-form gradient flow, test loss (population U, V)",
            "score_error": "(1/d) E|s_A - grad log P_t|^2 under P_t, closed-form flow",
            "tau_gen": "score error has made half of its drop to its minimum",
            "tau_gen_test": "test loss has made half of its drop to its minimum",
            "tau_mem": "train/test gap has reached half of its final value",
            "gap_fraction_time": "train/test gap has reached this fraction of its final value",
            "eigenvalue": "eigenvalues of the training U (ascending)",
            "eigenvalue_equivalent": "eigenvalues of the Gaussian-equivalent U of the same training set",
            "gd_step_fraction": "GD step / stability limit d p / (Delta_t lambda_max)",
            "memorization_fraction": "fraction of generated samples that copy a training point ([BUBM] ratio 1/3)",
            "tau_mem_generated": "first generator tau at which the copy fraction reaches copy_level",
            "tau_half_rise_generated": "generator tau at which the copy fraction has made half of its rise",
        },
    )


# ----------------------------------------------------------------------------- summary and figures


def predictions(config: Config, psi_n) -> dict[str, np.ndarray]:
    """:func:`diffdyn.dynamics.theory.random_features.time_scales` at every ``psi_n`` (host)."""
    rows = [predicted_times(config.time, config.data_std, config.activation, config.psi_p, float(value)) for value in psi_n]
    return {name: np.array([row[name] for row in rows]) for name in rows[0]}


@lru_cache(maxsize=256)
def predicted_times(time: float, data_std: float, activation: str, psi_p: float, psi_n: float) -> dict[str, float]:
    """The predicted times of one grid point (cached: the solved edge takes ~0.5 s)."""
    return theory.time_scales(theory.equivalence_constants(time, data_std, activation), time, psi_p, psi_n)


def spectra(dataset, config: Config) -> dict[float, dict]:
    """Per ``psi_n``: the eigenvalues of every seed's ``U`` (``empirical``) and of its Gaussian
    equivalent (``equivalent``) histogrammed against the theory
    (:func:`diffdyn.dynamics.theory.random_features.spectrum_comparison`); psi_n whose runs all failed are left out."""
    constants = theory.equivalence_constants(config.time, config.data_std, config.activation)
    result = {}
    for value in dataset.psi_n.values:
        one = dataset.sel(psi_n=value)
        sets = {kind: one[name].values for kind, name in (("empirical", "eigenvalue"), ("equivalent", "eigenvalue_equivalent")) if name in one}
        comparison = theory.spectrum_comparison(sets, constants, config.psi_p, float(value), config.num_bins)
        if comparison is not None:
            result[float(value)] = comparison
    return result


def slope(x, y) -> float | None:
    """OLS slope of ``log y`` on ``log x`` over the finite points (None with fewer than 2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(y) & (y > 0)
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0]) if keep.sum() >= 2 else None


def summarize(dataset, config: Config) -> Summary:
    """The cross-``psi_n`` numbers with the seeds pooled: medians over seeds of the in-graph times
    and of the score-error minimum, histograms of every seed's eigenvalues, the largest deviation
    of GD from the closed form over every run, and the generator's numbers."""
    psi_n, labels = dataset.psi_n.values, [f"{value:g}" for value in dataset.psi_n.values]
    median = lambda array: array.median("seed").values
    measured = {name: median(dataset[name]) for name in ("tau_gen", "tau_gen_test", "tau_mem")} | {"min_score_error": median(dataset.score_error.min("tau"))}
    predicted, spectrum, gap_times = predictions(config, psi_n), spectra(dataset, config), median(dataset.gap_fraction_time)
    tau_gen, tau_mem = measured["tau_gen"], measured["tau_mem"]
    values = {
        "pooling": "median over seeds (times, score-error minimum); histograms of all seeds' eigenvalues",
        "equivalence_constants": theory.equivalence_constants(config.time, config.data_std, config.activation)._asdict(),
        "tau_mem_slope": slope(psi_n, tau_mem),
        "tau_mem_local_slopes": {f"{labels[i]}-{labels[i + 1]}": slope(psi_n[i : i + 2], tau_mem[i : i + 2]) for i in range(len(labels) - 1)},
        "tau_mem_slope_by_gap_fraction": {str(level): slope(psi_n, gap_times[:, i]) for i, level in enumerate(GAP_FRACTIONS)},
        "tau_mem_slope_predicted": slope(psi_n, predicted["tau_mem"]),
        "tau_mem_slope_predicted_exact_edge": slope(psi_n, predicted["tau_mem_exact_edge"]),
        "tau_gen_relative_change": float(np.nanmax(tau_gen) / np.nanmin(tau_gen) - 1),
        "score_error_plateau_slope": slope(psi_n, measured["min_score_error"]),
        "per_psi_n": {
            label: {name: series[i] for name, series in measured.items()}
            | {f"{name}_predicted": predicted[name][i] for name in ("tau_gen", "tau_mem", "tau_mem_exact_edge")}
            | {f"spectrum_{name}": distance for name, distance in spectrum.get(float(value), {}).get("distances", {}).items()}
            for i, (label, value) in enumerate(zip(labels, psi_n))
        },
    }
    rows = [Row("tau_gen", tau_gen[i], predicted["tau_gen"][i], f"psi_n={label}", "half drop of the score error") for i, label in enumerate(labels)]
    rows += [
        Row("tau_mem", tau_mem[i], predicted["tau_mem"][i], f"psi_n={label}", "half rise of the gap; predicted: lower edge of rho_1")
        for i, label in enumerate(labels)
    ]
    rows += [
        Row("slope of log tau_mem on log n", values["tau_mem_slope"], values["tau_mem_slope_predicted"], note="1 where psi_p >> psi_n"),
        Row("tau_gen max / min - 1 across psi_n", values["tau_gen_relative_change"], 0.0, note="tau_gen independent of n"),
        Row("slope of log (min score error) on log n", values["score_error_plateau_slope"], -0.59),
    ]
    for value, entry in spectrum.items():
        rows += [
            Row(f"spectrum L1 ({kind})", entry["distances"][f"{kind}_l1"], 0.0, f"psi_n={value:g}") for kind in ("empirical", "equivalent") if kind in entry
        ]
    if "train_loss_gd" in dataset:
        largest = lambda array: float(np.nanmax(array)) if np.isfinite(array).any() else None  # None: every run failed
        values["closed_form_vs_gd_max_abs"] = {name: largest(np.abs(dataset[f"{name}_gd"].diff("source")).values) for name in rf.CURVES}
        values["gd_step_fraction_max"] = float(dataset.gd_step_fraction.max())
        note = f"largest GD step / stability limit {values['gd_step_fraction_max']:.3g}"
        rows += [Row(f"max |closed form - GD|, {name}", gap, 0.0, note=note) for name, gap in values["closed_form_vs_gd_max_abs"].items()]
    if "memorization_fraction" in dataset:
        values["generated_samples"] = generated_summary(dataset, config)
        headline = values["generated_samples"]["tau_mem_generated"]
        level = str(config.copy_levels[0])
        rows += [Row(f"tau_mem_generated (f_mem = {level})", headline[label][level], None, f"psi_n={label}") for label in labels]
        rows.append(Row("slope of log tau_mem_generated on log n", values["generated_samples"]["tau_mem_generated_slope_by_level"][level], None))
    notes = (
        (
            "tau_gen: the score error has made half of its drop to its minimum; tau_mem: the train/test gap has grown to half of its final"
            " value (dynamics.measures); medians over seeds. Predictions (docs/theory.md section 7): tau_mem = psi_p / (Delta_t"
            " lambda_min(rho_1)), tau_gen = psi_p ln 2 / (4 Delta_t lambda_2), min score error ~ psi_n^-0.59."
        ),
        "Spectrum L1: the eigenvalues of U (and of its Gaussian equivalent), all seeds, vs the theoretical density (reconstruction).",
    )
    return Summary(rows, values, notes)


def generated_summary(dataset, config: Config) -> dict:
    """Per ``psi_n``: the copy fraction ``f_mem(tau)`` (mean over seeds), ``tau_mem_generated`` at
    every copy level and the half-rise time of ``f_mem`` (medians over seeds), with their slopes
    on ``log n`` (None where a time is NaN)."""
    psi_n, labels = dataset.psi_n.values, [f"{value:g}" for value in dataset.psi_n.values]
    times, half_rise = dataset.tau_mem_generated.median("seed").values, dataset.tau_half_rise_generated.median("seed").values
    complete = lambda series: slope(psi_n, series) if np.all(np.isfinite(series)) else None
    return {
        "samples_per_run": config.generator.samples,
        "memorization_fraction_mean": dict(zip(labels, dataset.memorization_fraction.mean("seed").values)),
        "tau_mem_generated": {label: dict(zip(map(str, config.copy_levels), row)) for label, row in zip(labels, times)},
        "tau_mem_generated_slope_by_level": {str(level): complete(times[:, i]) for i, level in enumerate(config.copy_levels)},
        "tau_half_rise": dict(zip(labels, half_rise)),
        "tau_half_rise_slope": complete(half_rise),
    }


def figures(dataset, config: Config) -> dict:
    """Curves of seed 0 (lines: closed form, circles: GD; dotted: tau_mem), the spectrum of U vs
    theory per psi_n, the time scales against their predictions, and f_mem(tau) if generated."""
    psi_n, first = dataset.psi_n.values, dataset.isel(seed=0)
    colours = plots.mode_colours(psi_n.size)
    curves, axes = plots.panels(3, "closed-form flow (lines)" + (", GD (circles)" if "train_loss_gd" in dataset else "") + "; dotted: tau_mem")
    for colour, value in zip(colours, psi_n):
        one = first.sel(psi_n=value)
        for axis, name in zip(axes, rf.CURVES):
            axis.plot(one.tau, one[name], color=colour, label=f"psi_n = {value:g}")
            if f"{name}_gd" in one:
                axis.plot(one.tau_gd, one[f"{name}_gd"].sel(source="gd"), "o", ms=3, mfc="none", color=colour)
            axis.axvline(float(one.tau_mem), color=colour, ls=":", lw=0.8)
            axis.set(xscale="log", title=name.replace("_", " "), xlabel="tau = k eta / d^2")
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    histograms = spectra(dataset, config)
    spectrum, spectrum_axes = plots.panels(max(len(histograms), 1), "eigenvalues of U, all seeds (per unit log lambda)")
    for axis, (value, entry) in zip(spectrum_axes, histograms.items()):
        edges, widths = entry["edges"], np.diff(np.log(entry["edges"]))  # fraction per unit log lambda
        axis.bar(edges[:-1], entry["empirical"] / widths, width=np.diff(edges), align="edge", alpha=0.4, label="U")
        axis.step(edges[:-1], entry["theory"] / widths, where="post", color="k", label="theory (reconstruction)")
        if "equivalent" in entry:
            axis.step(edges[:-1], entry["equivalent"] / widths, where="post", color="tab:red", ls="--", lw=1, label="Gaussian equivalent")
        axis.set(xscale="log", yscale="log", ylim=(1e-4 / config.num_bins, 10.0), title=f"psi_n = {value:g}", xlabel="lambda")
    if histograms:
        spectrum_axes[0].legend(fontsize=7)
    scales, (axis,) = plots.panels(1, "time scales (median over seeds)")
    predicted = predictions(config, psi_n)
    for name in ("tau_mem", "tau_gen"):
        plots.power_law(axis, psi_n, dataset[name].median("seed"), label=f"{name} measured", marker="o-")
        plots.power_law(axis, psi_n, predicted[name], label=f"{name} predicted", marker="s--")
    axis.set(xlabel="psi_n = n / d", ylabel="tau")
    axis.set_xticks(psi_n, [f"{value:g}" for value in psi_n], minor=False)
    axis.minorticks_off()
    axis.legend(fontsize=7)
    result = {"curves": curves, "spectrum": spectrum, "time_scales": scales}
    if "memorization_fraction" in dataset:
        result["generated_memorization"], (axis,) = plots.panels(1, "generated samples copying a training point (mean over seeds)")
        for colour, value in zip(colours, psi_n):
            axis.semilogx(dataset.tau_sample, dataset.memorization_fraction.sel(psi_n=value).mean("seed"), "o-", color=colour, label=f"psi_n = {value:g}")
        axis.axhline(config.copy_levels[0], color="k", ls=":", lw=0.8)
        axis.set(xlabel="generator training time tau", ylabel="f_mem")
        axis.legend(fontsize=7)
    return result


run = bind(__name__)
