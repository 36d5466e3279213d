"""Inverse design through the differentiable simulator (one-layer linear denoiser, [WP] sec. 3-4).

Gradient descent (optax Adam) through the closed-form learning dynamics and the probability-flow
ODE map, on smooth emergence times (:func:`dynamics.measures.soft_emergence_time`):

* ``spectrum``: find data variances ``lambda_k`` that make mode ``k`` emerge at a chosen time
  ``target_times[k]`` (parameters: ``log lambda``).
* ``flatten``: find a per-noise-level learning-rate profile ``eta(sigma)`` (equivalently a
  per-sigma loss weighting; piecewise linear in ``log sigma`` through ``num_profile_nodes``
  knots) that flattens the spectral law, i.e. makes all modes emerge within a factor 2 of each
  other, keeping the geometric-mean emergence time of the constant profile. The generated
  variance with a sigma-dependent rate is integrated by Gauss-Legendre quadrature in ``log sigma``.
* ``class-reweighting`` (issue 6 c): per-class loss weights ``w_c`` for the random-features score
  model on an imbalanced two-class mixture (:mod:`experiments.class_imbalance`, a reconstruction
  of [N] on [BUBM], THEORY.md 8) that make both classes generalize at the same time: gradient
  descent on ``(ln tau_gen,1 - ln tau_gen,0)^2`` in ``ln(w_1/w_0)`` through the closed-form
  gradient flow (``eigh`` of the weighted feature covariance) and the per-class test losses.

Every optimum of the linear tasks is verified by re-simulating: per-sigma denoisers trained by exact gradient flow
(with the designed spectrum or per-node learning rates), sampled through the PF-ODE by exact
covariance propagation, and the hard emergence times measured on the result. The class weights
are verified on test statistics of fresh class points (a new draw, not the one optimized on).
Conventions: EDM sigma time; summed un-halved loss; ``tau = learning rate x steps``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
import xarray as xr

from dynamics import measures
from dynamics.theory import linear
from dynamics.validation import ConfigError, require_choice, require_increasing, require_positive_int, require_range, require_subset
from experiments import class_imbalance, spectral_bias
from models.denoisers import Linear
from models.distributions.gaussian import GaussianData

NAME = "inverse-design"
TASKS = ("spectrum", "flatten", "class-reweighting")


@dataclass(frozen=True)
class Config:
    """Settings of the inverse-design study. Times are training times ``tau``; sigmas are EDM."""

    tasks: tuple[str, ...] = TASKS
    num_modes: int = 6
    lam_min: float = 1e-2  # initial spectrum: log-spaced in [lam_min, lam_max]
    lam_max: float = 10.0
    target_times: tuple[float, ...] = ()  # 'spectrum' targets per mode (default: log-spaced 0.05..0.5)
    q: float = 0.1  # aligned init scale
    eta: float = 1.0  # learning rate (the 'flatten' profile's geometric mean)
    tau_min: float = 1e-4
    tau_max: float = 1e3
    num_tau: int = 85  # ~12 records per decade: the soft time needs several per temperature
    num_profile_nodes: int = 8  # knots of log eta(sigma), log-spaced in [sigma_min, sigma_max]
    optimizer_steps: int = 300
    optimizer_lr: float = 0.3  # initial Adam step (in log-parameters), cosine-decayed
    temperature: float = 0.2  # width of the soft emergence step, in ln variance
    criterion: str = "geometric"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    quadrature_nodes: int = 128
    num_sigma_nodes: int = 64  # training nodes of the re-simulation
    rtol: float = 1e-7
    reweighting_variance_ratio: float = 0.25  # class-reweighting: sigma_1^2 / sigma_0^2 ...
    reweighting_imbalance: float = 0.125  # ... n_1 / n_0 ...
    reweighting_time: float = 0.1  # ... and OU time t; the rest as class_imbalance.Config()
    seed: int = 0


PRESETS = {
    "quick": Config(),
    "paper": Config(num_modes=20, lam_min=1e-3, lam_max=1e2, num_tau=169, num_profile_nodes=16, optimizer_steps=1000, num_sigma_nodes=96),
}


def validate(config: Config) -> Config:
    require_subset("tasks", config.tasks, TASKS)
    require_positive_int("num_modes", config.num_modes, minimum=2)
    require_range("lam_min", config.lam_min, low=0.0, low_open=True)
    require_increasing("lam_min", config.lam_min, "lam_max", config.lam_max)
    if config.target_times:
        require_range("target_times", config.target_times, low=config.tau_min, high=config.tau_max)
        if len(config.target_times) != config.num_modes:
            raise ConfigError(f"target_times: needs num_modes = {config.num_modes} values; got {len(config.target_times)}")
    require_range("q", config.q, low=0.0, high=1.0)
    require_range("eta", config.eta, low=0.0, low_open=True)
    require_range("tau_min", config.tau_min, low=0.0, low_open=True)
    require_increasing("tau_min", config.tau_min, "tau_max", config.tau_max)
    require_positive_int("num_tau", config.num_tau, minimum=4)
    require_positive_int("num_profile_nodes", config.num_profile_nodes, minimum=2)
    require_positive_int("optimizer_steps", config.optimizer_steps, minimum=0)
    require_range("optimizer_lr", config.optimizer_lr, low=0.0, low_open=True)
    require_range("temperature", config.temperature, low=0.0, low_open=True)
    require_choice("criterion", config.criterion, spectral_bias.CRITERIA)
    require_range("sigma_min", config.sigma_min, low=0.0, low_open=True)
    require_increasing("sigma_min", config.sigma_min, "sigma_max", config.sigma_max)
    require_positive_int("quadrature_nodes", config.quadrature_nodes, minimum=8)
    require_positive_int("num_sigma_nodes", config.num_sigma_nodes, minimum=2)
    require_range("rtol", config.rtol, low=0.0, high=1e-2, low_open=True)
    require_range("reweighting_variance_ratio", config.reweighting_variance_ratio, low=0.0, low_open=True)
    require_range("reweighting_time", config.reweighting_time, low=0.0, low_open=True)
    base = class_imbalance.Config().base_count
    if not round(float(require_range("reweighting_imbalance", config.reweighting_imbalance, low=0.0, low_open=True)) * base) >= 1:
        raise ConfigError(f"reweighting_imbalance: must leave class 1 at least one of {base} x ratio training points; got {config.reweighting_imbalance}")
    return config


def reweighting_config(config: Config) -> class_imbalance.Config:
    """The class-imbalance setting of the ``class-reweighting`` task: one variance ratio, one
    imbalance ratio, one time and one seed; the rest are :class:`class_imbalance.Config` defaults."""
    return class_imbalance.Config(
        time=config.reweighting_time,
        variance_ratios=(config.reweighting_variance_ratio,),
        imbalance_ratios=(config.reweighting_imbalance,),
        seeds=1,
        seed=config.seed,
    )


# ----------------------------------------------------------------------------- grids


def taus(config: Config) -> np.ndarray:
    return np.geomspace(config.tau_min, config.tau_max, config.num_tau)


def initial_spectrum(config: Config) -> np.ndarray:
    return np.geomspace(config.lam_min, config.lam_max, config.num_modes)


def target_times(config: Config) -> np.ndarray:
    if config.target_times:
        return np.asarray(config.target_times, dtype=float)
    return np.geomspace(0.5, 0.05, config.num_modes)  # small modes last, a 10x compressed law


def profile_knots(config: Config) -> np.ndarray:
    return np.geomspace(config.sigma_min, config.sigma_max, config.num_profile_nodes)


def learning_rate_profile(config: Config, log_profile, sigma):
    """``eta(sigma) = eta * exp(interp(log sigma; knots, log_profile))``, piecewise linear in log sigma."""
    log_knots = jnp.log(jnp.asarray(profile_knots(config)))
    return config.eta * jnp.exp(jnp.interp(jnp.log(sigma), log_knots, log_profile))


# ----------------------------------------------------------------------------- differentiable forward models


def soft_times(config: Config, variance, lam):
    """Soft emergence times of curves ``variance[tau, mode]`` toward targets ``lam[mode]``."""
    times = jnp.asarray(taus(config))
    soft = lambda curve, goal: measures.soft_emergence_time(
        times, curve, goal, criterion=config.criterion, temperature=config.temperature
    )[0]
    return jax.vmap(soft, in_axes=(1, 0))(variance, lam)


def theory_variance(config: Config, lam, log_profile=None):
    """Generated variance ``(tau, mode)`` from the closed form (constant eta) or, with a
    learning-rate profile, by quadrature of the closed-form weights in ``log sigma``."""
    tau = jnp.asarray(taus(config))[:, None]
    ends = dict(sigma_min=config.sigma_min, sigma_max=config.sigma_max)
    if log_profile is None:
        return linear.generated_variance(lam[None, :], config.q, tau, eta=config.eta, **ends)

    def weights(sigma):
        eta = learning_rate_profile(config, log_profile, sigma)
        return linear.weights(lam[None, :], config.q, tau, sigma, eta=eta)

    return linear.generated_variance_quadrature(weights, num_nodes=config.quadrature_nodes, **ends)


def spectrum_objective(config: Config, log_lam):
    """Mean squared log-ratio of soft emergence times to the targets."""
    lam = jnp.exp(log_lam)
    achieved = soft_times(config, theory_variance(config, lam), lam)
    return jnp.mean(jnp.square(jnp.log(achieved) - jnp.log(jnp.asarray(target_times(config)))))


def flatten_objective(config: Config, log_profile, reference_log_mean):
    """Variance of log emergence times across modes, plus a pin of their mean to the constant
    profile's (otherwise a profile that makes everything emerge instantly would be flat)."""
    lam = jnp.asarray(initial_spectrum(config))
    log_times = jnp.log(soft_times(config, theory_variance(config, lam, log_profile), lam))
    return jnp.var(log_times) + jnp.square(jnp.mean(log_times) - reference_log_mean)


def optimize(objective, start, config: Config):
    """Adam with a cosine-decayed step on ``objective`` from ``start``; returns the parameters
    and the loss history (one compiled ``lax.scan``)."""
    schedule = optax.cosine_decay_schedule(config.optimizer_lr, max(config.optimizer_steps, 1), alpha=0.01)
    optimizer = optax.adam(schedule)

    def step(carry, _):
        params, state = carry
        value, grad = jax.value_and_grad(objective)(params)
        updates, state = optimizer.update(grad, state, params)
        return (optax.apply_updates(params, updates), state), value

    (params, _), history = jax.lax.scan(step, (start, optimizer.init(start)), length=config.optimizer_steps)
    return params, jnp.append(history, objective(params))


def class_generalization_times(setting: class_imbalance.Config, train, test, counts, log_weight):
    """Per-class generalization times with loss weights ``(1, exp(log_weight))``."""
    weights = jnp.stack([jnp.ones_like(log_weight), jnp.exp(log_weight)])
    train_loss, test_loss = class_imbalance.class_curves(setting, train, test, counts, weights)
    return class_imbalance.class_times(setting, train_loss, test_loss)[0]


def reweighting_objective(setting, train, test, counts, log_weight):
    """``(ln tau_gen,1 - ln tau_gen,0)^2``: zero when both classes generalize together."""
    times = class_generalization_times(setting, train, test, counts, log_weight)
    return jnp.square(jnp.log(times[1]) - jnp.log(times[0]))


# ----------------------------------------------------------------------------- verification by simulation


def simulated_times(config: Config, lam, etas_at_nodes=None):
    """Hard emergence times from a re-simulation: exact gradient flow per sigma node (learning
    rate ``etas_at_nodes`` or ``eta``), exact PF-ODE covariance propagation, ``tau*`` per mode."""
    nodes = jnp.geomspace(config.sigma_min, config.sigma_max, config.num_sigma_nodes)
    etas = jnp.full(nodes.shape, config.eta) if etas_at_nodes is None else etas_at_nodes
    lam = jnp.asarray(lam)
    data = GaussianData(jnp.zeros(lam.shape), lam, jnp.eye(lam.shape[0]))
    model, times = Linear(lam.shape[0]), jnp.asarray(taus(config))
    trajectory = spectral_bias.train_denoisers(
        "one_layer", model, data.mean, data.covariance, config.q, jax.random.key(config.seed), nodes, etas, times, rtol=config.rtol
    )
    ends = dict(sigma_min=config.sigma_min, sigma_max=config.sigma_max, rtol=config.rtol)
    variance = jax.lax.map(lambda grid: spectral_bias.exact_mode_variances(model, data.basis, grid, nodes, **ends), trajectory)
    hard = lambda curve, goal: measures.emergence_time(times, curve, goal, criterion=config.criterion)[0]
    return jax.vmap(hard, in_axes=(1, 0))(variance, lam), nodes


# ----------------------------------------------------------------------------- the study


def run(config: Config = PRESETS["quick"]) -> xr.Dataset:
    config = validate(config)
    with jax.enable_x64(True):
        return _run(config)


def _run(config: Config) -> xr.Dataset:
    data_vars, coords = {}, {"mode": np.arange(config.num_modes), "stage": ["initial", "optimized"]}
    lam0 = jnp.asarray(initial_spectrum(config))
    if "spectrum" in config.tasks:
        log_lam, history = jax.jit(lambda start: optimize(lambda p: spectrum_objective(config, p), start, config))(jnp.log(lam0))
        lam = jnp.exp(log_lam)
        predicted = [soft_times(config, theory_variance(config, x), x) for x in (lam0, lam)]
        simulated = [simulated_times(config, x)[0] for x in (lam0, lam)]
        data_vars |= {
            "spectrum": (("stage", "mode"), np.stack([lam0, lam])),
            "spectrum_target_time": (("mode",), target_times(config)),
            "spectrum_time_theory": (("stage", "mode"), np.stack(predicted)),
            "spectrum_time_simulation": (("stage", "mode"), np.stack(simulated)),
            "spectrum_objective": (("iteration",), np.asarray(history)),
        }
    if "flatten" in config.tasks:
        flat = jnp.zeros(config.num_profile_nodes)
        reference = jnp.mean(jnp.log(soft_times(config, theory_variance(config, lam0, flat), lam0)))
        objective = lambda p: flatten_objective(config, p, reference)
        profile, history = jax.jit(lambda start: optimize(objective, start, config))(flat)
        predicted = [soft_times(config, theory_variance(config, lam0, p), lam0) for p in (flat, profile)]
        nodes = jnp.geomspace(config.sigma_min, config.sigma_max, config.num_sigma_nodes)
        simulated = [simulated_times(config, lam0, learning_rate_profile(config, p, nodes))[0] for p in (flat, profile)]
        coords["knot_sigma"] = profile_knots(config)
        data_vars |= {
            "flatten_spectrum": (("mode",), np.asarray(lam0)),
            "learning_rate_profile": (("stage", "knot_sigma"), config.eta * np.exp(np.stack([flat, profile]))),
            "flatten_time_theory": (("stage", "mode"), np.stack(predicted)),
            "flatten_time_simulation": (("stage", "mode"), np.stack(simulated)),
            "flatten_objective": (("iteration_flatten",), np.asarray(history)),
        }
    if "class-reweighting" in config.tasks:
        setting = reweighting_config(config)
        counts = class_imbalance.class_counts(setting)[0]
        key = jax.random.key(config.seed)
        mu = setting.centroid_norms[0]
        _, train, test = class_imbalance.class_statistics(setting, key, setting.variance_ratios[0], mu, counts)
        fresh_key = jax.random.fold_in(key, 1)  # same features and training set, new test points
        _, _, fresh_test = class_imbalance.class_statistics(setting, key, setting.variance_ratios[0], mu, counts, test_key=fresh_key)
        objective = lambda p: reweighting_objective(setting, train, test, counts, p)
        log_weight, history = jax.jit(lambda start: optimize(objective, start, config))(jnp.zeros(()))
        stages = (jnp.zeros(()), log_weight)
        coords["class_"] = list(class_imbalance.CLASSES)
        data_vars |= {
            "class_weight": (("stage", "class_"), np.array([[1.0, float(jnp.exp(w))] for w in stages])),
            "class_generalization_time": (("stage", "class_"), np.stack([class_generalization_times(setting, train, test, counts, w) for w in stages])),
            "class_generalization_time_fresh": (("stage", "class_"), np.stack([class_generalization_times(setting, train, fresh_test, counts, w) for w in stages])),
            "reweighting_objective": (("iteration_reweighting",), np.asarray(history)),
            "class_count": (("class_",), np.asarray(counts)),
        }
    return xr.Dataset(
        data_vars,
        coords=coords,
        attrs={
            "experiment": NAME,
            "config": repr(dataclasses.asdict(config)),
            "conventions": "EDM sigma time; loss summed over dims, un-halved; tau = learning rate x steps",
        },
    )


def _spread(times) -> float:
    times = np.asarray(times)
    return float(times.max() / times.min())


def summary(dataset: xr.Dataset, config: Config) -> dict:
    result: dict = {}
    if "spectrum" in dataset:
        target = dataset.spectrum_target_time.values
        error = lambda name, stage: float(np.max(np.abs(np.log(dataset[name].sel(stage=stage).values / target))))
        result["spectrum"] = {
            "objective_initial": float(dataset.spectrum_objective[0]),
            "objective_optimized": float(dataset.spectrum_objective[-1]),
            "max_abs_log_time_error_theory": {s: error("spectrum_time_theory", s) for s in ("initial", "optimized")},
            "max_abs_log_time_error_simulation": {s: error("spectrum_time_simulation", s) for s in ("initial", "optimized")},
            "optimized_spectrum": dataset.spectrum.sel(stage="optimized").values.tolist(),
        }
    if "flatten_time_theory" in dataset:
        result["flatten"] = {
            "objective_initial": float(dataset.flatten_objective[0]),
            "objective_optimized": float(dataset.flatten_objective[-1]),
            "spread_theory": {s: _spread(dataset.flatten_time_theory.sel(stage=s)) for s in ("initial", "optimized")},
            "spread_simulation": {s: _spread(dataset.flatten_time_simulation.sel(stage=s)) for s in ("initial", "optimized")},
            "within_factor_2_simulation": _spread(dataset.flatten_time_simulation.sel(stage="optimized")) <= 2.0,
            "learning_rate_profile": dataset.learning_rate_profile.sel(stage="optimized").values.tolist(),
        }
    if "class_weight" in dataset:
        ratio = lambda name, stage: float(dataset[name].sel(stage=stage, class_="class_1") / dataset[name].sel(stage=stage, class_="class_0"))
        result["class_reweighting"] = {
            "class_counts": dataset.class_count.values.tolist(),
            "variance_ratio": config.reweighting_variance_ratio,
            "objective_initial": float(dataset.reweighting_objective[0]),
            "objective_optimized": float(dataset.reweighting_objective[-1]),
            "generalization_time_ratio_1_over_0": {s: ratio("class_generalization_time", s) for s in ("initial", "optimized")},
            "generalization_time_ratio_fresh_test": {s: ratio("class_generalization_time_fresh", s) for s in ("initial", "optimized")},
            "optimized_class_weights": dataset.class_weight.sel(stage="optimized").values.tolist(),
        }
    return result


def summary_markdown(result: dict) -> str:
    lines = ["# inverse-design: gradient descent through the simulator", ""]
    if "spectrum" in result:
        row = result["spectrum"]
        lines += [
            "## (a) a spectrum for chosen emergence times",
            "",
            "| | objective | max abs log(tau*/target), theory | same, re-simulated |",
            "|---|---|---|---|",
            f"| initial | {row['objective_initial']:.4g} | {row['max_abs_log_time_error_theory']['initial']:.3g} | {row['max_abs_log_time_error_simulation']['initial']:.3g} |",
            f"| optimized | {row['objective_optimized']:.4g} | {row['max_abs_log_time_error_theory']['optimized']:.3g} | {row['max_abs_log_time_error_simulation']['optimized']:.3g} |",
            "",
        ]
    if "flatten" in result:
        row = result["flatten"]
        lines += [
            "## (b) a per-sigma learning-rate profile that flattens the spectral law",
            "",
            "| | objective | spread max/min tau*, theory | same, re-simulated |",
            "|---|---|---|---|",
            f"| constant eta | {row['objective_initial']:.4g} | {row['spread_theory']['initial']:.4g} | {row['spread_simulation']['initial']:.4g} |",
            f"| optimized eta(sigma) | {row['objective_optimized']:.4g} | {row['spread_theory']['optimized']:.4g} | {row['spread_simulation']['optimized']:.4g} |",
            "",
            f"All modes within a factor 2 (re-simulated): {row['within_factor_2_simulation']}.",
            "",
        ]
    if "class_reweighting" in result:
        row = result["class_reweighting"]
        lines += [
            "## (c) class loss weights that equalize per-class generalization times",
            "",
            f"Counts n_c = {row['class_counts']}, sigma_1^2/sigma_0^2 = {row['variance_ratio']:g}; optimized weights {row['optimized_class_weights']}.",
            "",
            "| | objective | tau_gen,1 / tau_gen,0 | same, fresh test points |",
            "|---|---|---|---|",
            f"| w = (1, 1) | {row['objective_initial']:.4g} | {row['generalization_time_ratio_1_over_0']['initial']:.4g} | {row['generalization_time_ratio_fresh_test']['initial']:.4g} |",
            f"| optimized | {row['objective_optimized']:.4g} | {row['generalization_time_ratio_1_over_0']['optimized']:.4g} | {row['generalization_time_ratio_fresh_test']['optimized']:.4g} |",
            "",
        ]
    return "\n".join(lines)


def plot(dataset: xr.Dataset, config: Config) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    if "spectrum" in dataset:
        figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for stage, marker in (("initial", "o"), ("optimized", "s")):
            axes[0].loglog(dataset.spectrum.sel(stage=stage), dataset.spectrum_time_simulation.sel(stage=stage), marker, mfc="none", label=f"{stage} (re-simulated)")
        axes[0].loglog(dataset.spectrum.sel(stage="optimized"), dataset.spectrum_target_time, "k+", ms=10, label="target")
        axes[0].set(xlabel="lambda", ylabel="tau*", title="(a) designed spectrum")
        axes[0].legend(fontsize=7)
        axes[1].semilogy(dataset.spectrum_objective)
        axes[1].set(xlabel="Adam step", ylabel="objective")
        figure.tight_layout()
        figures["inverse_spectrum"] = figure
    if "flatten_time_theory" in dataset:
        figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for stage, marker in (("initial", "o"), ("optimized", "s")):
            axes[0].loglog(dataset.flatten_spectrum, dataset.flatten_time_simulation.sel(stage=stage), marker, mfc="none", label=f"{stage} (re-simulated)")
        axes[0].set(xlabel="lambda", ylabel="tau*", title="(b) flattened law")
        axes[0].legend(fontsize=7)
        axes[1].loglog(dataset.knot_sigma, dataset.learning_rate_profile.sel(stage="optimized"), "o-")
        axes[1].set(xlabel="sigma", ylabel="eta(sigma)", title="optimized learning-rate profile")
        figure.tight_layout()
        figures["inverse_flatten"] = figure
    if "class_weight" in dataset:
        figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for stage, marker in (("initial", "o"), ("optimized", "s")):
            axes[0].semilogy([0, 1], dataset.class_generalization_time_fresh.sel(stage=stage), marker + "-", mfc="none", label=f"{stage} weights")
        axes[0].set(xticks=[0, 1], xticklabels=[f"class {c} (n={n})" for c, n in enumerate(dataset.class_count.values)], ylabel="tau_gen (fresh test)", title="(c) class re-weighting")
        axes[0].legend(fontsize=7)
        axes[1].semilogy(dataset.reweighting_objective)
        axes[1].set(xlabel="Adam step", ylabel="objective")
        figure.tight_layout()
        figures["inverse_class_reweighting"] = figure
    return figures
