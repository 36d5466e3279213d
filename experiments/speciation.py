"""Speciation and the minority delay of exact-score diffusion, measured vs predicted ([BBdBM]).

Data ``omega N(mu, I) + (1 - omega) N(-mu, I)`` in ``d`` dimensions with ``|mu|^2 = d mu~^2``
(:func:`models.distributions.mixtures.two_class_mixture`; ``omega`` the majority weight), exact
scores from the numpyro mixture (THEORY.md 8). For every ``d`` and ``omega``:

* cloning ([BBdBM] protocol, :func:`dynamics.theory.speciation.commitment_curves`): per reference
  class, the probability that two clones launched at OU time ``t`` end in the same class, and
  that a clone ends in the reference's class, on a window of ``t`` around ``t_S = 1/2 ln Lambda``;
  beside them the exact 1-D curves (:func:`dynamics.theory.speciation.commitment_theory`). The
  measured speciation time is where ``P(clones agree)`` (reference drawn from the mixture) falls
  through the midpoint of its limits ``1`` and ``sum_c rho_c^2``; per class, where ``P(stay in c)``
  falls through ``(1 + rho_c) / 2``.
* basins: the latest ``t`` at which the minority class has its own stable zero of the exact
  backward drift (:func:`dynamics.theory.speciation.basin_appearance_time`) vs the closed form
  ``K(t) = 2 |mu|^2 e^-2t = K*(h)``; the delay behind the balanced split vs ``1/2 ln K*(h)``.

The midpoint crossing of the cloning curve sits at ``1/2 ln(|mu|^2 / a_x^2)`` with
``a_x^2 = 0.851`` for balanced classes: ``1/2 ln Lambda`` + 0.081 - ``1/2 ln(Lambda/(Lambda-1))``,
a universal offset plus a finite-``d`` term; the summary reports both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from dynamics.sweep import Workload, require_one_value_per_run, with_values
from dynamics.theory import speciation
from dynamics.validation import ConfigError, require_positive_int, require_range
from models.distributions import mixtures

NAME = "speciation"
CLASSES = ("majority", "minority")


@dataclass(frozen=True)
class Config:
    """Settings of the speciation study (OU time ``t``)."""

    dims: tuple[int, ...] = (8, 32)
    omegas: tuple[float, ...] = (0.5, 0.9, 0.999)  # majority weight; must include 0.5 for the delays
    centroid_norm: float = 1.0  # mu~, |mu|^2 = d mu~^2
    num_pairs: int = 150  # cloning experiments per class and time
    num_times: int = 11
    window: float = 1.0  # clone times in t_S +- window
    num_steps: int = 40  # Euler-Maruyama steps of each clone's backward SDE
    t_end: float = 0.02
    bisection_steps: int = 30
    num_grid: int = 4001
    seed: int = 0


PRESETS = {
    "quick": Config(),
    "paper": Config(dims=(8, 32, 128, 512), omegas=(0.5, 0.7, 0.9, 0.99, 0.999), num_pairs=2000, num_times=25, num_steps=200),
}


def validate(config: Config) -> Config:
    if not config.dims:
        raise ConfigError("dims: needs at least one dimension")
    for dim in config.dims:
        require_positive_int("dims", dim)
    require_range("omegas", config.omegas, low=0.5, high=1.0)
    if 0.5 not in config.omegas or any(omega >= 1.0 for omega in config.omegas):
        raise ConfigError(f"omegas: must include 0.5 (the balanced reference) and lie in [0.5, 1); got {config.omegas}")
    require_range("centroid_norm", config.centroid_norm, low=0.0, low_open=True)
    require_positive_int("num_pairs", config.num_pairs)
    require_positive_int("num_times", config.num_times, minimum=3)
    require_range("window", config.window, low=0.0, low_open=True)
    require_positive_int("num_steps", config.num_steps)
    require_range("t_end", config.t_end, low=0.0, high=0.5, low_open=True)
    require_positive_int("bisection_steps", config.bisection_steps)
    require_positive_int("num_grid", config.num_grid, minimum=101)
    return config


def balanced_speciation_time(config: Config, dim: int) -> jax.Array:
    """``1/2 ln Lambda``, ``Lambda = 1 + |mu|^2`` the top eigenvalue of the balanced mixture
    (traceable in ``centroid_norm``)."""
    return speciation.speciation_time(1.0 + dim * config.centroid_norm**2)


def clone_times(config: Config, dim: int) -> jax.Array:
    """``num_times`` clone times on ``t_S +- window``, kept ``0.05`` above ``t_end`` (traceable in
    ``centroid_norm`` and ``window``)."""
    centre = balanced_speciation_time(config, dim)
    return jnp.linspace(jnp.maximum(centre - config.window, config.t_end + 0.05), centre + config.window, config.num_times)


_curves = jax.jit(speciation.commitment_curves, static_argnames=("num_pairs", "num_steps", "t_end"))


def commitment(config: Config, dim: int, omega: float, centroid_norm, key, times):
    """At one ``(d, omega)``: the mixture (``centroid_norm`` may be traced: the unit-norm
    mixture's centroids scaled), the cloning curves ``same, stay[reference, time]`` from ``key``
    and the exact ones (:func:`dynamics.theory.speciation.commitment_theory`)."""
    unit = mixtures.two_class_mixture(dim, omega, 1.0)
    mixture = unit._replace(means=centroid_norm * unit.means)
    same, stay = _curves(mixture, key, times, num_pairs=config.num_pairs, num_steps=config.num_steps, t_end=config.t_end)
    signal, h = speciation.signal_strength(mixture, times), speciation.imbalance_field(omega)
    same_theory, stay_theory = map(jnp.stack, zip(*(speciation.commitment_theory(signal, h, sign) for sign in (1.0, -1.0))))
    return mixture, same, stay, same_theory, stay_theory


def run(config: Config = PRESETS["quick"]) -> xr.Dataset:
    config = validate(config)
    with jax.enable_x64(True):
        return _run(config)


def _run(config: Config) -> xr.Dataset:
    shape = (len(config.dims), len(config.omegas))
    same = np.zeros(shape + (2, config.num_times))
    stay, same_theory, stay_theory = np.zeros_like(same), np.zeros_like(same), np.zeros_like(same)
    basin = np.zeros(shape)
    times = np.stack([clone_times(config, dim) for dim in config.dims])
    key = jax.random.key(config.seed)
    for i, dim in enumerate(config.dims):
        for j, omega in enumerate(config.omegas):
            run_key = jax.random.fold_in(jax.random.fold_in(key, i), j)
            mixture, *curves = commitment(config, dim, omega, config.centroid_norm, run_key, jnp.asarray(times[i]))
            same[i, j], stay[i, j], same_theory[i, j], stay_theory[i, j] = map(np.asarray, curves)
            basin[i, j] = speciation.basin_appearance_time(mixture, 0.0, times[i, -1] + 2.0, iterations=config.bisection_steps, num_grid=config.num_grid)
    omegas = np.asarray(config.omegas)
    dims = np.asarray(config.dims)
    return xr.Dataset(
        {
            "same_class": (("dim", "omega", "reference", "time_index"), same),
            "stay_in_class": (("dim", "omega", "reference", "time_index"), stay),
            "same_class_theory": (("dim", "omega", "reference", "time_index"), same_theory),
            "stay_in_class_theory": (("dim", "omega", "reference", "time_index"), stay_theory),
            "clone_time": (("dim", "time_index"), times),
            "basin_time": (("dim", "omega"), basin),
            "basin_time_theory": (("dim", "omega"), np.asarray(speciation.minority_basin_time(omegas[None, :], dims[:, None] * config.centroid_norm**2))),
            "speciation_time_theory": (("dim",), np.array([balanced_speciation_time(config, dim) for dim in config.dims])),
            "minority_delay_theory": (("omega",), np.asarray(speciation.minority_delay(omegas))),
        },
        coords={"dim": dims, "omega": omegas, "reference": list(CLASSES), "time_index": np.arange(config.num_times)},
        attrs={"experiment": NAME, "config": repr(dataclasses.asdict(config)), "conventions": "OU time t; backward SDE dx = [x + 2 score] ds + sqrt(2) dW; [BBdBM]"},
    )


# ----------------------------------------------------------------------------- sweeps

SCAN_TRACED = ("centroid_norm", "window")  # vary inside one compiled sweep program


def validate_sweep(config: Config, fields: tuple[str, ...]) -> None:
    """A sweep run is one ``d`` (swept or single) with every ``omega`` of the config inside it."""
    if "omegas" in fields:
        raise ConfigError("omegas: every sweep run measures all omegas of the config (0.5, the balanced reference, among them); set them with --omegas")
    require_one_value_per_run(config, ("dims",), fields)


def scan_workload(config: Config) -> Workload:
    """One run for :func:`dynamics.sweep.sweep`: the cloning experiment at one ``d`` (static) for
    every ``omega`` of the config, at traced centroid norm ``mu~`` and window.

    ``omega`` number ``j`` uses ``fold_in(key, j)``: the sweep's seed ``s`` (key
    ``fold_in(key(seed), s)``) repeats the cloning of :func:`run`'s ``s``-th dimension, so seed 0
    of a one-``d`` sweep equals :func:`run` at that ``d``. Outputs: ``clone_time[time_index]``;
    ``same_class``, ``stay_in_class`` and their exact curves ``*_theory[omega, reference,
    time_index]``; the speciation time (midpoint crossing of ``P(clones agree)`` at ``omega =
    0.5``, measured and on the exact curve, with ``1/2 ln Lambda``) and the commitment times
    ``commitment_time``, ``commitment_time_exact_curve[omega, reference]`` (where ``P(stay in
    c)`` falls through ``(1 + rho_c) / 2``), as :func:`summary` defines them. The basin times are
    deterministic (no seed) and stay with :func:`run`.
    """
    (dim,) = config.dims
    balanced = config.omegas.index(0.5)
    weights = jnp.array([[omega, 1.0 - omega] for omega in config.omegas])  # rho_c per omega

    def run_one(key, values):
        point = with_values(config, values)
        times = clone_times(point, dim)
        per_omega = [commitment(point, dim, omega, point.centroid_norm, jax.random.fold_in(key, j), times)[1:] for j, omega in enumerate(config.omegas)]
        same, stay, same_theory, stay_theory = map(jnp.stack, zip(*per_omega))
        falls_to = lambda curve, level: speciation.crossing_time(times, curve, level)
        per_class = jax.vmap(jax.vmap(falls_to))  # over omega, reference
        # balanced classes: P(clones agree) pooled over the references, midpoint of 1 and 1/2
        speciation_time = lambda curves: falls_to(jnp.mean(curves[balanced], axis=0), 0.75)
        return {
            "clone_time": times,
            "same_class": same,
            "stay_in_class": stay,
            "same_class_theory": same_theory,
            "stay_in_class_theory": stay_theory,
            "speciation_time": speciation_time(same),
            "speciation_time_exact_curve": speciation_time(same_theory),
            "speciation_time_theory": balanced_speciation_time(point, dim),
            "commitment_time": per_class(stay, 0.5 * (1.0 + weights)),
            "commitment_time_exact_curve": per_class(stay_theory, 0.5 * (1.0 + weights)),
        }

    curves = ("omega", "reference", "time_index")
    per_class = ("omega", "reference")
    return Workload(
        run=run_one,
        dims={
            "clone_time": ("time_index",),
            "same_class": curves,
            "stay_in_class": curves,
            "same_class_theory": curves,
            "stay_in_class_theory": curves,
            "commitment_time": per_class,
            "commitment_time_exact_curve": per_class,
        },
        coords={"omega": np.asarray(config.omegas), "reference": np.array(CLASSES)},
        divergence_outputs=("same_class", "stay_in_class"),  # a crossing time is NaN when a curve never crosses
    )


def _crossings(times, curve, level):
    return float(speciation.crossing_time(jnp.asarray(times), jnp.asarray(curve), level))


def summary(dataset: xr.Dataset, config: Config) -> dict:
    rows = []
    for dim in dataset.dim.values:
        times = dataset.clone_time.sel(dim=dim).values
        balanced_basin = float(dataset.basin_time.sel(dim=dim, omega=0.5))
        for omega in dataset.omega.values:
            one = dataset.sel(dim=dim, omega=omega)
            weights = np.array([omega, 1.0 - omega])
            level = 0.5 * (1.0 + np.sum(weights**2))
            pooled = {name: np.tensordot(weights, one[name].values, axes=1) for name in ("same_class", "same_class_theory")}
            row = {
                "dim": int(dim),
                "omega": float(omega),
                "speciation_time_predicted": float(one.speciation_time_theory) if omega == 0.5 else None,
                "speciation_time_measured": _crossings(times, pooled["same_class"], level) if omega == 0.5 else None,
                "speciation_time_exact_curve": _crossings(times, pooled["same_class_theory"], level) if omega == 0.5 else None,
                "basin_time_measured": float(one.basin_time),
                "basin_time_predicted": float(one.basin_time_theory),
                "minority_delay_measured": balanced_basin - float(one.basin_time),
                "minority_delay_predicted": float(one.minority_delay_theory),
            }
            for c, name in enumerate(CLASSES):
                stay_level = 0.5 * (1.0 + weights[c])
                row[f"commitment_time_{name}_measured"] = _crossings(times, one.stay_in_class.values[c], stay_level)
                row[f"commitment_time_{name}_exact_curve"] = _crossings(times, one.stay_in_class_theory.values[c], stay_level)
            rows.append(row)
    balanced = [r for r in rows if r["omega"] == 0.5]
    delays = [r for r in rows if r["omega"] != 0.5]
    return {
        "rows": rows,
        "max_abs_speciation_time_minus_half_log_lambda": max(abs(r["speciation_time_measured"] - r["speciation_time_predicted"]) for r in balanced),
        "max_abs_speciation_time_minus_exact_curve": max(abs(r["speciation_time_measured"] - r["speciation_time_exact_curve"]) for r in balanced),
        "max_abs_minority_commitment_time_minus_exact_curve": max(
            abs(r["commitment_time_minority_measured"] - r["commitment_time_minority_exact_curve"]) for r in rows
        ),
        "max_abs_minority_delay_error": max((abs(r["minority_delay_measured"] - r["minority_delay_predicted"]) for r in delays), default=None),
        "note": (
            "speciation time = midpoint crossing of P(two clones agree) (balanced rows; with imbalance its range 1 - sum rho^2 "
            "is too small to locate); it sits at 1/2 ln Lambda + 0.081 - 1/2 ln(Lambda/(Lambda-1)). Minority delay = "
            "appearance of the minority's basin of the exact backward drift, behind the balanced split."
        ),
    }


def summary_markdown(result: dict) -> str:
    lines = [
        "# speciation: exact-score cloning and the minority delay ([BBdBM], THEORY.md 8)",
        "",
        "| d | omega | t_S = 1/2 ln Lambda | t_S measured (cloning) | exact curve | minority basin t measured | predicted | delay measured | 1/2 ln K* |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v: "" if v is None else f"{v:.4g}"
    for r in result["rows"]:
        lines.append(
            f"| {r['dim']} | {r['omega']:g} | {fmt(r['speciation_time_predicted'])} | {fmt(r['speciation_time_measured'])} | {fmt(r['speciation_time_exact_curve'])} "
            f"| {fmt(r['basin_time_measured'])} | {fmt(r['basin_time_predicted'])} | {fmt(r['minority_delay_measured'])} | {fmt(r['minority_delay_predicted'])} |"
        )
    lines += ["", result["note"], ""]
    return "\n".join(lines)


def plot(dataset: xr.Dataset, config: Config) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for i, dim in enumerate(dataset.dim.values):
        one = dataset.sel(dim=dim, omega=0.5)
        shifted = dataset.clone_time.sel(dim=dim) - one.speciation_time_theory
        axes[0].plot(shifted, one.same_class.mean("reference"), "o", color=f"C{i}", mfc="none", label=f"d={dim} cloning")
        axes[0].plot(shifted, one.same_class_theory.mean("reference"), "-", color=f"C{i}")
    axes[0].axvline(0.0, color="k", lw=0.5)
    axes[0].set(xlabel="t - 1/2 ln Lambda", ylabel="P(two clones agree)", title="speciation (balanced)")
    axes[0].legend(fontsize=7)
    omegas = dataset.omega.values
    for i, dim in enumerate(dataset.dim.values):
        delay = dataset.basin_time.sel(dim=dim, omega=0.5) - dataset.basin_time.sel(dim=dim)
        axes[1].plot(omegas, delay, "o", mfc="none", color=f"C{i}", label=f"d={dim} exact-score basins")
    fine = np.linspace(0.5, max(omegas.max(), 0.51), 200)
    axes[1].plot(fine, speciation.minority_delay(fine), "k-", label="1/2 ln K*(h)")
    axes[1].set(xlabel="omega (majority weight)", ylabel="minority delay", title="minority basin delay")
    axes[1].legend(fontsize=7)
    figure.tight_layout()
    return {"speciation": figure}
