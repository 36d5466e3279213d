"""Speciation and the minority delay of exact-score diffusion, measured vs predicted ([BBdBM]).

Data ``omega N(mu, I) + (1 - omega) N(-mu, I)`` in ``d`` dimensions with ``|mu|^2 = d mu~^2``
(``omega`` the majority weight; class 1 is the minority), exact scores from the numpyro mixture
(docs/theory.md section 8). ONE run (``point``) takes one ``d``, one ``omega`` and one seed:

* cloning ([BBdBM] protocol, :func:`diffdyn.models.distributions.backward.commitment_curves`): per
  reference class, the probability that two clones launched at OU time ``t`` end in the same
  class, and that a clone ends in the reference's class, on a window of ``t`` around the balanced
  ``t_S = 1/2 ln(1 + d mu~^2)``; beside them the exact 1-D curves
  (:func:`diffdyn.dynamics.theory.speciation.commitment_theory`). The speciation time is where
  ``P(clones agree)`` (reference drawn from the mixture) falls through the midpoint of its limits
  ``1`` and ``sum_c rho_c^2``; the commitment time of class ``c`` where ``P(stay in c)`` falls
  through ``(1 + rho_c) / 2``; both on the cloning and on the exact curves.
* basins: the latest ``t`` at which the minority class has its own stable zero of the exact
  backward drift (:func:`diffdyn.models.distributions.backward.basin_appearance_time`, bisection in the
  graph) vs the closed form ``K(t) = 2 |mu|^2 e^-2t = K*(h)``.

``summarize`` compares across points: the minority delay (basin time at ``omega = 0.5`` minus
at ``omega``) vs ``1/2 ln K*(h)``, so the grid must hold ``omega = 0.5``. The midpoint crossing
of the balanced cloning curve sits at ``1/2 ln(|mu|^2 / a_x^2)`` with ``a_x^2 = 0.851``:
``1/2 ln Lambda`` + 0.081 - ``1/2 ln(Lambda/(Lambda-1))``, a universal offset plus a finite-``d``
term; the summary reports both predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from diffdyn.dynamics.config import StudyConfig, setting
from diffdyn.dynamics.study import Outputs, Row, Summary
from diffdyn.dynamics.theory import speciation as theory
from diffdyn.dynamics.validation import ConfigError
from diffdyn.experiments import figures as plots
from diffdyn.experiments.runner import bind
from diffdyn.models.distributions import backward, mixtures

NAME = "speciation"
REFERENCE = "Biroli, Bonnaire, de Bortoli & Mezard, Nat. Commun. 15:9957 (2024), arXiv 2402.18491; docs/theory.md section 8"
CONVENTIONS = "OU time t; backward SDE dx = [x + 2 score] ds + sqrt(2) dW in s = -t (Euler-Maruyama); exact mixture scores"
PRECISION = "float64"
SOURCES = ("theory", "measured")  # closed forms and exact 1-D curves; cloning and drift zeros in d dims
CLASSES = ("majority", "minority")
BALANCED = 0.5


@dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the speciation study (OU time ``t``)."""

    dim: tuple[int, ...] = setting((8, 32), "data dimension d, one program each", grid=True, low=1)
    omega: tuple[float, ...] = setting(
        (0.5, 0.9, 0.999), "majority weight omega in [0.5, 1); 0.5 (the reference of the delays) must be among them", grid=True, traced=True, low=0.5, high=1.0
    )
    centroid_norm: float = setting(1.0, "mu~: |mu|^2 = d mu~^2", traced=True, low=0.0, low_open=True)
    num_pairs: int = setting(150, "cloning experiments per class and clone time", low=1)
    num_times: int = setting(11, "clone times", low=3)
    window: float = setting(1.0, "clone times span t_S +- window (t_S = 1/2 ln(1 + d mu~^2))", traced=True, low=0.0, low_open=True)
    num_steps: int = setting(40, "Euler-Maruyama steps of each clone's backward SDE", low=1)
    t_end: float = setting(0.02, "OU time at which the clones stop and their classes are read", low=0.0, high=0.5, low_open=True)
    bisection_steps: int = setting(30, "bisection steps of the basin appearance time", low=1)
    num_grid: int = setting(4001, "points of the centroid line on which the drift's zeros are counted", low=101)


PRESETS = {
    "quick": Config(),
    "tiny": Config(dim=(4,), omega=(0.5, 0.9), num_pairs=8, num_times=5, num_steps=8, bisection_steps=12, num_grid=401),
    "paper": Config(dim=(8, 32, 128, 512), omega=(0.5, 0.7, 0.9, 0.99, 0.999), num_pairs=2000, num_times=25, num_steps=200),
}


def validate(config: Config) -> None:
    """One grid point: ``omega < 1`` (the field allows ``[0.5, 1]``)."""
    if not config.omega < 1.0:
        raise ConfigError(f"omega: must be < 1 (a minority needs weight); got {config.omega}")


def validate_sweep(config: Config, swept: tuple[str, ...]) -> None:
    """The minority delay is measured against the balanced point: ``omega`` must hold 0.5."""
    if BALANCED not in config.omega:
        raise ConfigError(f"omega: must include 0.5, the balanced reference of the minority delay; got {config.omega}")


# ----------------------------------------------------------------------------- one run


def mixture_at(config: Config) -> mixtures.GaussianMixture:
    """The run's mixture: the checked balanced unit-``mu~`` mixture with the (traceable) weights
    ``(omega, 1 - omega)`` and centroids scaled by ``mu~``."""
    unit = mixtures.two_class_mixture(config.dim)
    return unit._replace(weights=jnp.stack([config.omega, 1.0 - config.omega]), means=config.centroid_norm * unit.means)


def balanced_speciation_time(config: Config) -> jax.Array:
    """``1/2 ln Lambda``, ``Lambda = 1 + d mu~^2`` the top covariance eigenvalue of the balanced mixture."""
    return theory.speciation_time(1.0 + config.dim * config.centroid_norm**2)


def clone_times(config: Config) -> jax.Array:
    """``num_times`` clone times on ``t_S +- window``, kept ``0.05`` above ``t_end``."""
    centre = balanced_speciation_time(config)
    return jnp.linspace(jnp.maximum(centre - config.window, config.t_end + 0.05), centre + config.window, config.num_times)


def cloning_times(times, weights, same, stay):
    """The speciation time (the ``rho``-pooled ``P(clones agree)`` through the midpoint of ``1``
    and ``sum rho^2``) and the commitment time per class (``P(stay in c)`` through
    ``(1 + rho_c) / 2``) of the curves ``same, stay[reference, time]``."""
    speciation_time = theory.crossing_time(times, weights @ same, 0.5 * (1.0 + jnp.sum(jnp.square(weights))))
    commitment_time = jax.vmap(theory.crossing_time, in_axes=(None, 0, 0))(times, stay, 0.5 * (1.0 + weights))
    return speciation_time, commitment_time


def point(key, config: Config) -> dict:
    """One ``(d, omega)`` and one seed (see the module docstring)."""
    mixture, times = mixture_at(config), clone_times(config)
    measured = backward.commitment_curves(mixture, key, times, config.num_pairs, t_end=config.t_end, num_steps=config.num_steps)
    signal = theory.signal_strength(times, config.centroid_norm * np.sqrt(config.dim))
    reference_signs = jnp.array([1.0, -1.0])  # class 0 sits at +mu
    exact = theory.commitment_theory(signal[None, :], theory.imbalance_field(config.omega), reference_signs[:, None])
    same, stay = jax.tree.map(lambda *curves: jnp.stack(curves), exact, measured)  # [source, reference, time]
    speciation_time, commitment_time = jax.vmap(cloning_times, in_axes=(None, None, 0, 0))(times, mixture.weights, same, stay)
    basin = backward.basin_appearance_time(mixture, 0.0, times[-1] + 2.0, iterations=config.bisection_steps, num_grid=config.num_grid)
    return {
        "clone_time": times,
        "same_class": same,
        "stay_in_class": stay,
        "speciation_time": speciation_time,
        "commitment_time": commitment_time,
        "basin_time": jnp.stack([theory.minority_basin_time(config.omega, config.dim * config.centroid_norm**2), basin]),
        "balanced_speciation_time": balanced_speciation_time(config),
    }


def outputs(config: Config) -> Outputs:
    curves = ("source", "reference", "time_index")
    return Outputs(
        dims={
            "clone_time": ("time_index",),
            "same_class": curves,
            "stay_in_class": curves,
            "speciation_time": ("source",),
            "commitment_time": ("source", "reference"),
            "basin_time": ("source",),
        },
        coords={"source": np.array(SOURCES), "reference": np.array(CLASSES)},
        checked=("clone_time", "same_class", "stay_in_class", "basin_time"),  # a curve may never cross: NaN time
        long_names={
            "same_class": "P(two clones end in the same class), per reference class",
            "stay_in_class": "P(a clone ends in the reference's class)",
            "speciation_time": "rho-pooled P(clones agree) through the midpoint of 1 and sum rho^2",
            "commitment_time": "P(stay in c) through (1 + rho_c) / 2",
            "basin_time": "latest t with a stable zero of the backward drift for each class (theory: K(t) = K*)",
            "balanced_speciation_time": "1/2 ln(1 + d mu~^2), the centre of the clone times",
        },
    )


# ----------------------------------------------------------------------------- summary and figures


def summarize(dataset, config: Config) -> Summary:
    """Per ``d``: the balanced speciation time (cloning vs exact curve vs ``1/2 ln Lambda``), per
    ``omega``: the minority delay behind ``omega = 0.5`` (drift zeros vs ``1/2 ln K*``) and the
    minority's commitment time (cloning vs exact curve); seeds averaged."""
    mean = dataset.mean("seed")
    rows, points = [], []
    for dim in mean.dim.values:
        balanced = mean.sel(dim=dim, omega=BALANCED)
        speciation = balanced.speciation_time
        rows.append(
            Row(
                "speciation time (cloning)",
                float(speciation.sel(source="measured")),
                float(balanced.balanced_speciation_time),
                f"d={dim}",
                f"exact curve {float(speciation.sel(source='theory')):.4g}; prediction 1/2 ln Lambda",
            )
        )
        for omega in mean.omega.values:
            one = mean.sel(dim=dim, omega=omega)
            delay = balanced.basin_time - one.basin_time
            minority = one.commitment_time.sel(reference="minority")
            entry = {
                "dim": int(dim),
                "omega": float(omega),
                "speciation_time_measured": float(one.speciation_time.sel(source="measured")),
                "speciation_time_exact_curve": float(one.speciation_time.sel(source="theory")),
                "speciation_time_half_log_lambda": float(one.balanced_speciation_time),
                "basin_time_measured": float(one.basin_time.sel(source="measured")),
                "basin_time_predicted": float(one.basin_time.sel(source="theory")),
                "minority_delay_measured": float(delay.sel(source="measured")),
                "minority_delay_predicted": float(delay.sel(source="theory")),
                "commitment_time_minority_measured": float(minority.sel(source="measured")),
                "commitment_time_minority_exact_curve": float(minority.sel(source="theory")),
            }
            points.append(entry)
            if omega != BALANCED:
                rows.append(
                    Row(
                        "minority delay (exact drift zeros)",
                        entry["minority_delay_measured"],
                        entry["minority_delay_predicted"],
                        f"d={dim}, omega={omega:g}",
                        "prediction 1/2 ln K*(h)",
                    )
                )
            rows.append(
                Row(
                    "minority commitment time (cloning)",
                    entry["commitment_time_minority_measured"],
                    entry["commitment_time_minority_exact_curve"],
                    f"d={dim}, omega={omega:g}",
                    "prediction: exact 1-D curve",
                )
            )
    largest = lambda measured, predicted, where=lambda p: True: max((abs(p[measured] - p[predicted]) for p in points if where(p)), default=None)
    balanced = lambda p: p["omega"] == BALANCED
    values = {
        "points": points,
        "max_abs_speciation_time_minus_half_log_lambda": largest("speciation_time_measured", "speciation_time_half_log_lambda", balanced),
        "max_abs_speciation_time_minus_exact_curve": largest("speciation_time_measured", "speciation_time_exact_curve", balanced),
        "max_abs_minority_commitment_time_minus_exact_curve": largest("commitment_time_minority_measured", "commitment_time_minority_exact_curve"),
        "max_abs_minority_delay_error": largest("minority_delay_measured", "minority_delay_predicted", lambda p: not balanced(p)),
    }
    notes = (
        (
            "speciation time: midpoint crossing of P(two clones agree), reported at omega = 0.5 (with imbalance its range "
            "1 - sum rho^2 is too small to locate); it sits at 1/2 ln Lambda + 0.081 - 1/2 ln(Lambda/(Lambda-1)), the exact curve's value."
        ),
        "minority delay: basin appearance time of the exact backward drift at omega = 0.5 minus at omega.",
    )
    return Summary(rows, values, notes)


def figures(dataset, config: Config) -> dict:
    """Balanced cloning (dots) vs the exact curve (lines) against ``t - 1/2 ln Lambda``, and the
    minority delay per ``d`` vs ``1/2 ln K*(h)``; seed 0."""
    figure, (cloning, delays) = plots.panels(2, width=4.75, height=3.6)
    one = dataset.isel(seed=0)
    for index, dim in enumerate(one.dim.values):
        balanced = one.sel(dim=dim, omega=BALANCED)
        shifted = balanced.clone_time - balanced.balanced_speciation_time
        agree = balanced.same_class.mean("reference")
        cloning.plot(shifted, agree.sel(source="measured"), "o", color=f"C{index}", mfc="none", label=f"d={dim} cloning")
        cloning.plot(shifted, agree.sel(source="theory"), "-", color=f"C{index}")
        delay = balanced.basin_time.sel(source="measured") - one.sel(dim=dim).basin_time.sel(source="measured")
        delays.plot(one.omega, delay, "o", mfc="none", color=f"C{index}", label=f"d={dim} exact-score basins")
    cloning.axvline(0.0, color="k", lw=0.5)
    cloning.set(xlabel="t - 1/2 ln Lambda", ylabel="P(two clones agree)", title="speciation (balanced)")
    fine = np.linspace(BALANCED, max(float(one.omega.max()), 0.51), 200)
    delays.plot(fine, theory.minority_delay(fine), "k-", label="1/2 ln K*(h)")
    delays.set(xlabel="omega (majority weight)", ylabel="minority delay", title="minority basin delay")
    for axis in (cloning, delays):
        axis.legend(fontsize=7)
    return {"speciation": figure}


run = bind(__name__)
