"""Simplicity bias in the mixed cumulant model: pair-wise statistics before higher cumulants ([BMG]).

Our implementation of the model and tied denoiser of the authors' released code (docs/theory.md
section 9; :mod:`diffdyn.dynamics.theory.cumulants`, :mod:`diffdyn.models.distributions.cumulants`,
:mod:`diffdyn.models.denoisers.tied`). ONE run (``point``) takes one dimension ``d``, one coupling of the
cumulant latent to the covariance latent and one seed: the tied noise predictor
``z_hat = s x + sigma W^T g(c W x)`` is trained by online SGD (or Adam) on fresh MCM batches at one
OU time ``t``, with step ``learning_rate * d^-lr_exponent``. It records, at log-spaced steps, the
best hidden unit's normalised overlap with the mean, covariance and cumulant directions, the
skip ``s``, the test losses on the MCM and on its two Gaussian clones (Monte Carlo, one test set
per run, common noise), and the excess kurtosis along ``v`` of samples of the learned noised law
(Langevin with the learned score); and, at every step, the first step at which each overlap
reaches ``threshold`` (samples = steps x batch). Beside them: the clones' minimum losses and
the noised data's kurtosis along ``v`` in closed form.

``summarize`` fits ``log(samples to recovery)`` on ``log d`` per spike and coupling (censored
maximum likelihood: a seed that never recovered counts as "more than the budget"; 95% bootstrap
CI over seeds) against the exponent predicted
from each spike's overlap order in the single-neuron loss at this step-size scaling.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from diffdyn.dynamics import measures
from diffdyn.dynamics.config import StudyConfig, setting
from diffdyn.dynamics.study import Outputs, Row, Summary
from diffdyn.dynamics.theory import cumulants as theory
from diffdyn.dynamics.training import OPTIMIZERS, log_spaced_steps
from diffdyn.dynamics.validation import ConfigError
from diffdyn.experiments import figures as plots
from diffdyn.experiments.runner import bind
from diffdyn.models.denoisers.tied import ACTIVATIONS, TiedDenoiser, best_overlaps, langevin_sample, train_online
from diffdyn.models.distributions.cumulants import noised, sample_law, spike_frame

NAME = "simplicity-bias"
REFERENCE = "Bardone, Merger & Goldt, arXiv 2603.12901 (ICML 2026), sec. 3-4 (our implementation of their released code); docs/theory.md section 9"
CONVENTIONS = "OU time t fixed; loss = mean over coordinates of the squared noise-prediction error; online SGD steps, samples = steps x batch"
PRECISION = "float32"
CLONES = ("mean_clone", "covariance_clone")


@dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the simplicity-bias study (OU time ``t``; steps of online SGD)."""

    dim: tuple[int, ...] = setting((12, 16, 24, 32), "data dimension d, one program each", grid=True, low=4)
    coupling: tuple[str, ...] = setting(
        ("independent", "correlated"), "coupling of the cumulant latent nu to the covariance latent lambda", grid=True, choices=theory.COUPLINGS
    )
    spike: tuple[str, ...] = setting(
        theory.SPIKES, "the spike the data carry alone (the others off: mu = 0, no excess variance along u), one program each", grid=True, choices=theory.SPIKES
    )
    variant: str = setting("planted", "planted (the authors' code) or whitened (classic) MCM", choices=theory.VARIANTS)
    mu: float = setting(1.0, "mean spike: the mean is mu m", traced=True)
    beta_u: float = setting(1.5, "covariance spike: variance of the latent along u (the authors: 10)", traced=True, low=0.0)
    beta_v: float = setting(10.0, "whitened variant: cumulant spike strength (alpha^2 = beta_v / (1 + beta_v))", traced=True, low=0.0, low_open=True)
    latent: str = setting("rademacher", "law of the cumulant latent nu (unit variance)", choices=theory.LATENTS)
    latent_parameter: float = setting(
        0.05, "three_point: mass a of each outer atom; skewed: probability p of the positive atom; student_t: df", traced=True, low=0.0, low_open=True
    )
    directions: str = setting("random", "spike directions: Haar-random orthonormal (from the root seed) or the coordinate axes", choices=("random", "axes"))
    t: float = setting(0.1, "OU time of the denoiser", traced=True, low=0.0, low_open=True)
    width: int = setting(1, "hidden units m", low=1)
    activation: str = setting("tanh", "activation g", choices=tuple(ACTIVATIONS))
    readout: str = setting(
        "data",
        "noise: z_hat = s x + W^T g (the authors' code); data: z_hat = s x - W^T g (units write into the clean-data estimate)",
        choices=tuple(theory.READOUT_SIGNS),
    )
    optimizer: str = setting("sgd", "online optimizer", choices=tuple(OPTIMIZERS))
    spherical: bool = setting(True, "renormalise every row of W to row_norm after each step")
    row_norm: float = setting(0.5, "row length of W under spherical SGD", traced=True, low=0.0, low_open=True)
    init_scale: float = setting(0.1, "W(0) ~ N(0, init_scale^2 / d)", traced=True, low=0.0, low_open=True)
    learning_rate: float = setting(6.0, "step at d = 1: the step is learning_rate * d^-lr_exponent", traced=True, low=0.0, low_open=True)
    lr_exponent: float = setting(1.0, "q in step ~ d^-q (q >= 1 lets a fourth-order spike escape as d grows)", traced=True, low=0.0)
    batch: int = setting(100, "fresh samples per step", low=1)
    steps: int = setting(12_000, "online steps", low=1)
    records: int = setting(30, "log-spaced steps at which the measures are recorded", low=2)
    threshold: float = setting(0.6, "recovery: the best unit's normalised overlap reaches this", traced=True, low=0.0, high=1.0, low_open=True)
    test_samples: int = setting(1024, "Monte Carlo test samples per law", low=1)
    generated_samples: int = setting(128, "Langevin samples per record for the generated kurtosis (0: skip)", low=0)
    langevin_steps: int = setting(40, "Langevin steps per generated sample", low=1)
    langevin_step_size: float = setting(0.05, "Langevin step size", traced=True, low=0.0, low_open=True)


PRESETS = {
    "quick": Config(seeds=5),
    "tiny": Config(dim=(6,), spike=("cumulant",), learning_rate=3.0, steps=100, records=5, test_samples=32, generated_samples=8, langevin_steps=4, seeds=2),
    "paper": Config(dim=(16, 32, 64, 128), steps=1_500_000, records=60, test_samples=100_000, generated_samples=4096, langevin_steps=100, seeds=16),
}


def model_of(config: Config) -> theory.MixedCumulantModel:
    """The MCM of one grid point: the mean spike only in ``mean`` runs; the covariance spike in
    ``covariance`` runs and, as the latent the cumulant couples to, in ``cumulant`` runs with a
    coupling (else the covariance latent carries unit variance: no spike)."""
    covariance_on = config.spike == "covariance" or (config.spike == "cumulant" and config.coupling != "independent")
    no_excess = 1.0 if config.variant == "planted" else 0.0
    return theory.MixedCumulantModel(
        config.variant,
        config.mu if config.spike == "mean" else 0.0,
        config.beta_u if covariance_on else no_excess,
        config.beta_v,
        config.latent,
        config.latent_parameter,
        config.coupling,
    )


def validate(config: Config) -> None:
    """One grid point: the latent law's parameter, the coupling's need of a symmetric latent, and
    an SGD step the skip ``s`` survives."""
    model = model_of(config)
    model.check()
    if config.records > config.steps + 1:
        raise ConfigError(f"records: at most steps + 1 = {config.steps + 1}; got {config.records}")
    # the skip's loss has curvature 2 E|x_t|^2 / d: plain SGD on it diverges past d / E|x_t|^2
    decay = math.exp(-2 * config.t)
    limit = config.dim / (decay * (config.dim - model.gaussian_removed_along_u + model.beta_u + model.mu**2) + (1 - decay) * config.dim)
    step = config.learning_rate * config.dim ** (-config.lr_exponent)
    if config.optimizer == "sgd" and step >= limit:
        raise ConfigError(
            f"learning_rate: the step {step:.3g} at d = {config.dim} is past the skip's stability limit {limit:.3g} (step = learning_rate d^-lr_exponent)"
        )


def record_steps(config: Config) -> np.ndarray:
    return np.asarray(log_spaced_steps(config.steps, config.records))


# ----------------------------------------------------------------------------- one run


def draw(key, model, frame, law: str, num: int, t):
    """``num`` noised samples of ``law`` and their noise ``(x_t, z)``."""
    clean_keys, noise_keys = jnp.split(jax.random.split(key, 2 * num), 2)
    clean = jax.vmap(sample_law, in_axes=(0, None, None, None))(clean_keys, model, frame, law)
    return jax.vmap(noised, in_axes=(0, 0, None))(noise_keys, clean, t)


def point(key, config: Config) -> dict:
    """One dimension, one coupling, one seed (see the module docstring)."""
    model, dim = model_of(config), config.dim
    frame = spike_frame(jax.random.fold_in(jax.random.key(config.seed), dim), dim, config.directions == "random")
    denoiser = TiedDenoiser(dim, config.width, config.activation, config.readout)
    init_key, train_key, test_key, start_key, langevin_key = jax.random.split(key, 5)
    step_size = config.learning_rate * dim ** (-config.lr_exponent)
    trained = train_online(
        denoiser,
        denoiser.init(init_key, config.init_scale),
        lambda k: draw(k, model, frame, "mcm", config.batch, config.t),
        train_key,
        t=config.t,
        learning_rate=step_size,
        optimizer=config.optimizer,
        row_norm=config.row_norm,
        spherical=config.spherical,
        steps=config.steps,
        record_steps=record_steps(config),
        frame=frame,
        threshold=config.threshold,
    )
    tests = [draw(test_key, model, frame, law, config.test_samples, config.t) for law in theory.LAWS]  # same keys: common noise
    test_loss = lambda params, x, z: jnp.mean(jax.vmap(denoiser.loss, in_axes=(None, 0, 0, None))(params, x, z, config.t))
    losses = jax.vmap(lambda params: jnp.stack([test_loss(params, x, z) for x, z in tests]))(trained.params)
    outputs = {
        "overlap": jax.vmap(best_overlaps, in_axes=(0, None))(trained.params["W"], frame),
        "skip": trained.params["skip"],
        "loss": losses,
        "clone_floor": jnp.stack([theory.clone_mmse(model, config.t, dim, law) for law in CLONES]),
        "recovery_step": trained.first_recovery,
        "recovery_samples": trained.first_recovery * config.batch,
        "kurtosis_target": theory.noised_excess_kurtosis(model, config.t),
        "step_size": jnp.asarray(step_size),
    }
    if config.generated_samples:
        starts = draw(start_key, model, frame, "covariance_clone", config.generated_samples, config.t)[0]
        chains = jax.random.split(langevin_key, config.generated_samples)

        def kurtosis(params):
            run = lambda start, chain: langevin_sample(
                denoiser, params, start, chain, t=config.t, step_size=config.langevin_step_size, num_steps=config.langevin_steps
            )
            return theory.excess_kurtosis(jax.vmap(run)(starts, chains) @ frame[2])

        outputs["generated_kurtosis"] = jax.lax.map(kurtosis, trained.params)
    return outputs


def outputs(config: Config) -> Outputs:
    return Outputs(
        dims={
            "overlap": ("step", "direction"),
            "skip": ("step",),
            "loss": ("step", "law"),
            "clone_floor": ("clone",),
            "recovery_step": ("direction",),
            "recovery_samples": ("direction",),
            "kurtosis_target": (),
            "step_size": (),
            "generated_kurtosis": ("step",),
        },
        coords={"step": record_steps(config), "direction": np.array(theory.SPIKES), "law": np.array(theory.LAWS), "clone": np.array(CLONES)},
        checked=("overlap", "skip", "loss"),  # a spike never recovered has a NaN recovery step: a result, not a failure
        long_names={
            "overlap": "largest normalised overlap |w_i.e|/|w_i| over the hidden units",
            "loss": "test loss per coordinate (Monte Carlo) on the MCM and its Gaussian clones",
            "clone_floor": "minimum test loss on the Gaussian clone (closed form)",
            "recovery_step": "first step at which the overlap reaches the threshold (NaN: never)",
            "recovery_samples": "samples seen at recovery (steps x batch)",
            "kurtosis_target": "excess kurtosis of the noised data along v (closed form)",
            "generated_kurtosis": "excess kurtosis along v of Langevin samples of the learned noised law",
        },
    )


# ----------------------------------------------------------------------------- summary and figures


def fit_exponent(dims: np.ndarray, samples: np.ndarray, budget: float) -> dict:
    """Slope of ``log samples`` on ``log d`` (``samples[dim, seed]``; NaN: never recovered within
    ``budget`` samples) by censored maximum likelihood (:func:`diffdyn.dynamics.measures.censored_power_law`):
    a d where most seeds never recovered still counts, as the lower bound it is. 95% CI: seeds
    bootstrapped within each d. Also the median samples per d (``null``: over half censored)."""
    fit = measures.censored_power_law(dims, samples, budget)
    medians = np.median(np.where(np.isfinite(samples), samples, np.inf), axis=1)
    return {
        "value": fit["slope"],
        "ci": fit["ci"],
        "dims": dims.tolist(),
        "censored_seeds": fit["censored"],
        "median_samples": [m if np.isfinite(m) else None for m in medians.tolist()],
    }


def predicted_order(config: Config, spike: str, coupling: str) -> int | None:
    """The overlap order of ``spike`` in the single-neuron loss at the row norm (spherical) or
    the init norm, if it draws the unit (else None); the cumulant through its coupling at most
    ``1 +`` the coupling's Hermite order."""
    point_config = dataclasses.replace(config, spike=spike, coupling=coupling)
    norm = config.row_norm if config.spherical else config.init_scale
    order, coefficient = theory.spike_order(model_of(point_config), ACTIVATIONS[config.activation], config.readout, spike, norm, config.t)
    drawn = coefficient != 0 and (order % 2 == 1 or coefficient < 0)
    return theory.cumulant_order(model_of(point_config), order if drawn else None) if spike == "cumulant" else (order if drawn else None)


def summarize(dataset, config: Config) -> Summary:
    """Per spike and coupling: the measured sample-complexity exponent (with its CI and the dims
    used) against the prediction at this step-size scaling; the gaps cumulant - covariance and
    independent - correlated; the generated kurtosis at the largest d."""
    dims = dataset.dim.values
    rows, exponents = [], {}
    for coupling in dataset.coupling.values:
        for spike in dataset.spike.values:
            samples = dataset.recovery_samples.sel(coupling=coupling, spike=spike, direction=spike).transpose("dim", "seed").values
            fit = fit_exponent(dims, samples, config.steps * config.batch)
            order = predicted_order(config, str(spike), str(coupling))
            fit.update(order=order, predicted=theory.sample_complexity_exponent(order, config.lr_exponent), predicted_best_step=theory.optimal_exponent(order))
            exponents.setdefault(str(coupling), {})[str(spike)] = fit
            note = f"95% CI [{fit['ci'][0]:.3g}, {fit['ci'][1]:.3g}], dims {fit['dims']}, order {order}, seeds never recovered per d {fit['censored_seeds']}"
            rows.append(Row("sample-complexity exponent", fit["value"], fit["predicted"], f"spike={spike}, coupling={coupling}", note))
    gaps = {}
    if {"covariance", "cumulant"} <= set(dataset.spike.values) and "independent" in exponents:
        independent = exponents["independent"]
        gaps["cumulant_minus_covariance"] = independent["cumulant"]["value"] - independent["covariance"]["value"]
        rows.append(
            Row(
                "exponent gap cumulant - covariance",
                gaps["cumulant_minus_covariance"],
                independent["cumulant"]["predicted"] - independent["covariance"]["predicted"],
                "coupling=independent",
            )
        )
        for coupling in set(exponents) - {"independent"}:
            if "cumulant" in exponents[coupling]:
                gap = independent["cumulant"]["value"] - exponents[coupling]["cumulant"]["value"]
                gaps[f"cumulant_independent_minus_{coupling}"] = gap
                rows.append(
                    Row(
                        "exponent gap cumulant independent - coupled",
                        gap,
                        independent["cumulant"]["predicted"] - exponents[coupling]["cumulant"]["predicted"],
                        f"coupling={coupling}",
                    )
                )
    if "generated_kurtosis" in dataset and "cumulant" in dataset.spike.values:
        for coupling in dataset.coupling.values:
            final = dataset.sel(spike="cumulant", coupling=coupling, dim=dims[-1]).isel(step=-1)
            rows.append(
                Row(
                    "generated excess kurtosis along v (final)",
                    float(final.generated_kurtosis.mean()),
                    float(final.kurtosis_target.mean()),
                    f"spike=cumulant, coupling={coupling}, d={dims[-1]}",
                    f"{config.generated_samples} Langevin samples, seed mean; prediction: the noised data's",
                )
            )
    notes = (
        f"recovery: the first step at which the best unit's normalised overlap with the spike reaches {config.threshold:g}; samples = steps x batch {config.batch}; "
        f"step = {config.learning_rate:g} d^-{config.lr_exponent:g}. Predicted exponent 1 + q + max(k - 2, 0)/2 for overlap order k at step ~ d^-q (valid for q >= (k-2)/2); "
        "predicted_best_step: max(k - 1, 1) at the best q per spike.",
        f"fit: censored maximum likelihood of ln samples on ln d (a seed not recovered within {config.steps * config.batch} samples counts as more); 95% CI: seeds bootstrapped per d.",
        "orders from the single-neuron population loss (dynamics.theory.cumulants.spike_order) at the row norm; a spike that repels the unit has no prediction (None).",
    )
    return Summary(rows, {"sample_complexity_exponent": exponents, "exponent_gaps": gaps}, notes)


def figures(dataset, config: Config) -> dict:
    """Overlap with each run's own spike vs steps (seed mean, one line per d), samples to recovery
    vs d with the fitted power laws, test losses with the clone floors and the generated
    kurtosis at the largest d."""
    couplings, spikes, largest = list(dataset.coupling.values), list(dataset.spike.values), dataset.dim.values[-1]
    overlap_figure, overlap_axes = plots.panels(len(couplings) * len(spikes), "best unit's overlap with the spike (seed mean)", rows=len(couplings))
    recovery_figure, recovery_axes = plots.panels(len(couplings), "samples to recovery vs d")
    loss_figure, loss_axes = plots.panels(len(spikes), f"test loss at d = {largest}, {couplings[0]} (dashed: clone minima)")
    for row, coupling in enumerate(couplings):
        for column, spike in enumerate(spikes):
            axis = overlap_axes[row * len(spikes) + column]
            for dim in dataset.dim.values:
                curve = dataset.overlap.sel(coupling=coupling, spike=spike, direction=spike, dim=dim).mean("seed")
                axis.plot(np.maximum(dataset.step.values, 1), curve, label=f"d={dim}")
            axis.axhline(config.threshold, color="gray", ls=":")
            axis.set(xscale="log", title=f"{spike}, {coupling}", xlabel="step")
            axis.legend(fontsize=6)
            samples = dataset.recovery_samples.sel(coupling=coupling, spike=spike, direction=spike).transpose("dim", "seed").values
            finite = np.isfinite(samples) & (samples > 0)
            if finite.any():
                dims = np.broadcast_to(dataset.dim.values[:, None], samples.shape)
                x, y = np.log(dims[finite]), np.log(samples[finite])
                slope, intercept = np.polyfit(x, y, 1) if np.unique(x).size > 1 else (None, None)
                plots.power_law(recovery_axes[row], dims[finite], samples[finite], slope=slope, intercept=intercept, label=str(spike))
        recovery_axes[row].set(title=str(coupling), xlabel="d", ylabel="samples")
        recovery_axes[row].legend(fontsize=7)
    for axis, spike in zip(loss_axes, spikes):
        one = dataset.sel(coupling=couplings[0], spike=spike, dim=largest).mean("seed")
        for law in dataset.law.values:
            axis.plot(np.maximum(dataset.step.values, 1), one.loss.sel(law=law), label=str(law))
        for clone in dataset.clone.values:
            axis.axhline(float(one.clone_floor.sel(clone=clone)), ls="--", lw=0.8, color="gray")
        axis.set(xscale="log", title=str(spike), xlabel="step")
        axis.legend(fontsize=7)
    result = {"overlaps": overlap_figure, "recovery": recovery_figure, "losses": loss_figure}
    if "generated_kurtosis" in dataset and "cumulant" in spikes:
        figure, axes = plots.panels(1, f"excess kurtosis along v of Langevin samples, d = {largest}")
        for coupling in couplings:
            one = dataset.sel(coupling=coupling, spike="cumulant", dim=largest)
            axes[0].plot(np.maximum(dataset.step.values, 1), one.generated_kurtosis.mean("seed"), label=str(coupling))
        axes[0].axhline(
            float(dataset.kurtosis_target.isel(seed=0).sel(spike="cumulant", dim=largest).values.ravel()[0]), color="gray", ls="--", label="noised data"
        )
        axes[0].set(xscale="log", xlabel="step")
        axes[0].legend(fontsize=7)
        result["kurtosis"] = figure
    return result


run = bind(__name__)
