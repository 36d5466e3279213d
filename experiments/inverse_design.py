"""Inverse design: gradient descent (optax Adam) through the differentiable simulator's closed forms.

ONE run (``point``) is one design task and one seed; each task is its own program and has its
own outputs (``objective``, the Adam loss history, is every task's):

* ``spectrum`` ([WP] sec. 3-4, docs/theory.md section 2): data variances ``lambda_k`` (parameters
  ``ln lambda``) that make mode ``k`` of the one-layer linear denoiser emerge at ``target_times[k]``;
  objective: mean squared ``ln`` ratio of smooth emergence times
  (:func:`diffdyn.dynamics.measures.soft_emergence_time` of the closed-form generated variance) to targets.
* ``flatten``: a per-noise-level learning rate ``eta(sigma)`` (a per-sigma loss weight; piecewise
  linear in ``ln sigma`` through ``num_profile_nodes`` knots) that makes every mode emerge at the
  same time: objective the variance of ``ln tau*`` across modes plus a pin of their mean to the
  constant profile's. The generated variance with a sigma-dependent rate is the Gauss-Legendre
  quadrature in ``ln sigma`` of the closed-form weights.
* ``class-reweighting`` (docs/theory.md sections 7-8, a reconstruction of [N] on [BUBM]): class
  loss weights ``w = (1, w_1)`` of the random-features score on an imbalanced two-class mixture
  (:mod:`diffdyn.models.classes`) that make both classes generalize together: objective
  ``(ln tau_gen,1 - ln tau_gen,0)^2`` in ``ln w_1`` through the closed-form flow.

Each optimum is verified away from the objective: the linear tasks by re-simulation (per-sigma
denoisers trained by exact gradient flow, the PF-ODE covariance propagated exactly by diffrax
within ``max_steps``, hard emergence times), the class weights on a fresh draw of test points.
Conventions: EDM sigma time, loss summed over dimensions and un-halved, ``tau`` = learning rate x
steps; the class task: OU time ``t``, loss per dimension, ``tau = k eta / d^2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from diffdyn.dynamics import measures, status
from diffdyn.dynamics.config import LogGrid, StudyConfig, setting
from diffdyn.dynamics.sampling import generated_mode_variances
from diffdyn.dynamics.status import Solved
from diffdyn.dynamics.study import STATUS, Outputs, Row, Summary
from diffdyn.dynamics.theory import linear
from diffdyn.dynamics.training import minimize, train_per_sigma
from diffdyn.dynamics.validation import ConfigError, require_increasing
from diffdyn.experiments import figures as plots
from diffdyn.experiments.runner import bind
from diffdyn.models import classes
from diffdyn.models.classes import CLASSES, ClassProblem
from diffdyn.models.denoisers import Linear
from diffdyn.models.distributions.gaussian import GaussianData

NAME = "inverse-design"
REFERENCE = (
    "Wang & Pehlevan, arXiv 2503.03206, sec. 3-4; Nicoletti et al., arXiv 2605.06367 on Bonnaire et al., arXiv 2505.17638; docs/theory.md sections 2, 7, 8"
)
CONVENTIONS = (
    "EDM sigma time; loss summed over dimensions, un-halved; tau = learning rate x steps (class-reweighting: OU time t, loss per dimension, tau = k eta / d^2)"
)
PRECISION = "float64"
TASKS = ("spectrum", "flatten", "class-reweighting")
STAGES = ("initial", "optimized")


@dataclass(frozen=True)
class Reweighting:
    """The two-class problem of the ``class-reweighting`` task (:mod:`diffdyn.models.classes`)."""

    variance_ratio: float = setting(0.25, "class variance ratio sigma_1^2 / sigma_0^2", traced=True, low=0.0, low_open=True)
    imbalance_ratio: float = setting(0.125, "training counts n_1 / n_0", low=0.0, low_open=True)
    time: float = setting(0.1, "OU time t of the score model", traced=True, low=0.0, low_open=True)
    centroid_norm: float = setting(1.0, "centroid norm mu~ of both classes", traced=True, low=0.0)
    problem: ClassProblem = setting(ClassProblem(), "the random-features problem")


@dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the inverse-design study (times tau = eta x steps; noise levels EDM sigmas)."""

    task: tuple[str, ...] = setting(TASKS, "design tasks, one program each", grid=True, choices=TASKS)
    num_modes: int = setting(6, "modes (data dimension) of the linear tasks", low=2)
    lam_min: float = setting(1e-2, "smallest variance of the initial log-spaced spectrum", traced=True, low=0.0, low_open=True)
    lam_max: float = setting(10.0, "largest variance of the initial log-spaced spectrum", traced=True, low=0.0, low_open=True)
    target_times: tuple[float, ...] = setting((), "spectrum: target emergence time per mode (default log-spaced 0.5 .. 0.05)", low=0.0, low_open=True)
    q: float = setting(0.1, "aligned init scale Q", traced=True, low=0.0, high=1.0)
    eta: float = setting(1.0, "learning rate (flatten: the constant profile it starts from)", traced=True, low=0.0, low_open=True)
    tau: LogGrid = setting(LogGrid(1e-4, 1e3, 85), "recording times tau (the soft time needs several per temperature)")
    sigma: LogGrid = setting(LogGrid(0.002, 80.0, 64), "noise levels: the PF-ODE's ends, the re-simulation's training nodes")
    num_profile_nodes: int = setting(8, "flatten: knots of ln eta(sigma), log-spaced over sigma", low=2)
    optimizer_steps: int = setting(300, "Adam steps", low=0)
    optimizer_lr: float = setting(0.3, "initial Adam step (in log-parameters), cosine-decayed", traced=True, low=0.0, low_open=True)
    temperature: float = setting(0.2, "width of the soft emergence step, in ln variance", traced=True, low=0.0, low_open=True)
    criterion: str = setting("geometric", "emergence threshold: geometric or harmonic mean of start and target", choices=("geometric", "harmonic"))
    quadrature_nodes: int = setting(128, "flatten: Gauss-Legendre nodes in ln sigma", low=8)
    rtol: float = setting(1e-7, "relative tolerance of the re-simulation's PF-ODE", low=0.0, high=1e-2, low_open=True)
    max_steps: int = setting(16_384, "step budget of every PF-ODE solve", low=1)
    reweighting: Reweighting = setting(Reweighting(), "class-reweighting")


PRESETS = {
    "quick": Config(),
    "tiny": Config(  # flatten shares the spectrum task's machinery
        task=("spectrum", "class-reweighting"),
        num_modes=3,
        tau=LogGrid(1e-4, 1e3, 30),
        sigma=LogGrid(0.002, 80.0, 12),
        optimizer_steps=5,
        seeds=2,
        reweighting=Reweighting(problem=ClassProblem(dim=4, num_features=16, base_count=8, num_noise=2, num_test=16, test_noise=2, tau=LogGrid(1e-3, 1e6, 20))),
    ),
    "paper": Config(
        num_modes=20, lam_min=1e-3, lam_max=1e2, tau=LogGrid(1e-4, 1e3, 169), sigma=LogGrid(0.002, 80.0, 96), num_profile_nodes=16, optimizer_steps=1000
    ),
}


def validate(config: Config) -> None:
    """The spectrum's ends, one target per mode inside the recorded times, a class-1 training point."""
    require_increasing("lam_min", config.lam_min, "lam_max", config.lam_max)
    if config.target_times and len(config.target_times) != config.num_modes:
        raise ConfigError(f"target_times: needs num_modes = {config.num_modes} values; got {len(config.target_times)}")
    if config.target_times and not config.tau.low <= min(config.target_times) <= max(config.target_times) <= config.tau.high:
        raise ConfigError(f"target_times: must lie in [tau.low, tau.high] = [{config.tau.low}, {config.tau.high}]; got {config.target_times}")
    reweighting = config.reweighting
    if classes.class_counts(reweighting.problem.base_count, reweighting.imbalance_ratio)[1] < 1:
        raise ConfigError(
            f"reweighting.imbalance_ratio: {reweighting.imbalance_ratio} x reweighting.problem.base_count {reweighting.problem.base_count} leaves class 1 without training points"
        )


# ----------------------------------------------------------------------------- linear tasks: closed forms


def initial_spectrum(config: Config) -> Float[Array, " mode"]:
    return jnp.geomspace(config.lam_min, config.lam_max, config.num_modes)


def target_times(config: Config) -> np.ndarray:
    """The spectrum task's targets: given, or log-spaced from 0.5 down to 0.05 (a 10x compressed law)."""
    return np.asarray(config.target_times or np.geomspace(0.5, 0.05, config.num_modes), float)


def profile_knots(config: Config) -> np.ndarray:
    return np.geomspace(config.sigma.low, config.sigma.high, config.num_profile_nodes)


def learning_rate_profile(config: Config, log_profile: Float[Array, " knot"], sigma: Float[ArrayLike, "*s"]) -> Float[Array, "*s"]:
    """``eta(sigma) = eta exp(interp(ln sigma; ln knots, log_profile))``."""
    return config.eta * jnp.exp(jnp.interp(jnp.log(sigma), jnp.log(jnp.asarray(profile_knots(config))), log_profile))


def soft_times(config: Config, variance: Float[Array, "tau mode"], lam: Float[Array, " mode"]) -> Float[Array, " mode"]:
    """Soft emergence times of the curves ``variance[tau, mode]`` towards ``lam[mode]``."""
    return measures.soft_emergence_times(jnp.asarray(config.tau.values()), variance, lam, criterion=config.criterion, temperature=config.temperature)


def theory_variance(config: Config, lam: Float[Array, " mode"], log_profile: Float[Array, " knot"] | None = None) -> Float[Array, "tau mode"]:
    """Generated variance ``[tau, mode]``: the closed form (constant ``eta``) or, with a learning-rate
    profile, the quadrature of the closed-form weights in ``ln sigma`` (docs/theory.md section 2)."""
    tau = jnp.asarray(config.tau.values())[:, None]
    ends = {"sigma_min": config.sigma.low, "sigma_max": config.sigma.high}
    if log_profile is None:
        return linear.generated_variance(lam[None, :], config.q, tau, eta=config.eta, **ends)
    weights = lambda sigma: linear.weights(lam[None, :], config.q, tau, sigma, eta=learning_rate_profile(config, log_profile, sigma))
    return linear.generated_variance_quadrature(weights, num_nodes=config.quadrature_nodes, **ends)


def optimize(objective, start, config: Config):
    """:func:`diffdyn.dynamics.training.minimize` with the study's Adam step and number of steps."""
    return minimize(objective, start, learning_rate=config.optimizer_lr, num_steps=config.optimizer_steps)


def simulated_times(config: Config, key: PRNGKeyArray, lam: Float[Array, " mode"], etas: Float[Array, " node"]) -> Solved:
    """Hard emergence times re-simulated: denoisers at the ``sigma`` nodes trained by exact gradient
    flow (rates ``etas``), exact PF-ODE covariance per recorded tau (``max_steps``), ``tau*`` per mode."""
    nodes, taus = jnp.asarray(config.sigma.values()), jnp.asarray(config.tau.values())
    data = GaussianData(jnp.zeros_like(lam), lam, jnp.eye(config.num_modes))
    model = Linear(config.num_modes)
    trained = train_per_sigma(model, data.mean, data.covariance, config.q, key, nodes, etas, taus, quadratic=True)
    ends = {"sigma_min": config.sigma.low, "sigma_max": config.sigma.high, "rtol": config.rtol, "max_steps": config.max_steps}
    variance, solved = jax.lax.map(lambda grid: generated_mode_variances(model.affine, grid, nodes, data.basis, **ends), trained.value)
    return Solved(measures.emergence_times(taus, variance, lam, criterion=config.criterion)[0], status.worst(trained.status, solved))


def spectrum_task(key: PRNGKeyArray, config: Config) -> dict:
    lam0, targets = initial_spectrum(config), jnp.asarray(target_times(config))

    def objective(log_lam):  # mean squared ln(tau* / target)
        lam = jnp.exp(log_lam)
        return jnp.mean(jnp.square(jnp.log(soft_times(config, theory_variance(config, lam), lam) / targets)))

    log_lam, history = optimize(objective, jnp.log(lam0), config)
    spectra = jnp.stack([lam0, jnp.exp(log_lam)])
    simulated, code = jax.vmap(lambda lam: simulated_times(config, key, lam, jnp.full(config.sigma.num, config.eta)))(spectra)
    return {
        "objective": history,
        "spectrum": spectra,
        "spectrum_target_time": targets,
        "spectrum_time_theory": jax.vmap(lambda lam: soft_times(config, theory_variance(config, lam), lam))(spectra),
        "spectrum_time_simulation": simulated,
        STATUS: status.worst(code),
    }


def flatten_task(key: PRNGKeyArray, config: Config) -> dict:
    lam = initial_spectrum(config)
    log_times = lambda profile: jnp.log(soft_times(config, theory_variance(config, lam, profile), lam))
    flat = jnp.zeros(config.num_profile_nodes)
    reference = jnp.mean(log_times(flat))

    def objective(profile):  # spread of ln tau*, mean pinned (else emerging at once everywhere is flat)
        spread = log_times(profile)
        return jnp.var(spread) + jnp.square(jnp.mean(spread) - reference)

    profile, history = optimize(objective, flat, config)
    profiles = jnp.stack([flat, profile])
    nodes = jnp.asarray(config.sigma.values())
    simulated, code = jax.vmap(lambda p: simulated_times(config, key, lam, learning_rate_profile(config, p, nodes)))(profiles)
    return {
        "objective": history,
        "flatten_spectrum": lam,
        "learning_rate_profile": config.eta * jnp.exp(profiles),
        "flatten_time_theory": jnp.exp(jax.vmap(log_times)(profiles)),
        "flatten_time_simulation": simulated,
        STATUS: status.worst(code),
    }


# ----------------------------------------------------------------------------- class re-weighting


def reweighting_task(key: PRNGKeyArray, config: Config) -> dict:
    """Optimized on the test statistics of ``key``; checked on fresh ones (``fold_in(key, 1)``)."""
    reweighting, problem = config.reweighting, config.reweighting.problem
    counts = classes.class_counts(problem.base_count, reweighting.imbalance_ratio)
    mixture = classes.orthogonal_classes(problem.dim, reweighting.variance_ratio, reweighting.centroid_norm, reweighting.centroid_norm)
    W = classes.features(problem, key)
    train = classes.training_statistics(problem, W, key, classes.training_points(key, mixture, counts), reweighting.time)
    test, fresh = (classes.fresh_statistics(problem, W, test_key, mixture, reweighting.time) for test_key in (key, jax.random.fold_in(key, 1)))

    def generalization_times(test_statistics, log_weight):  # per class, with loss weights (1, e^log_weight)
        weights = jnp.stack([jnp.ones_like(log_weight), jnp.exp(log_weight)])
        return classes.class_times(problem.tau.values(), *classes.class_curves(problem, train, test_statistics, counts, weights, reweighting.time))[0]

    def objective(log_weight):  # (ln tau_gen,1 - ln tau_gen,0)^2
        times = generalization_times(test, log_weight)
        return jnp.square(jnp.log(times[1] / times[0]))

    log_weight, history = optimize(objective, jnp.zeros(()), config)
    stages = jnp.stack([jnp.zeros(()), log_weight])
    return {
        "objective": history,
        "class_weight": jnp.stack([jnp.ones_like(stages), jnp.exp(stages)], axis=1),
        "class_generalization_time": jax.vmap(lambda w: generalization_times(test, w))(stages),
        "class_generalization_time_fresh": jax.vmap(lambda w: generalization_times(fresh, w))(stages),
        "class_count": jnp.asarray(counts, jnp.int32),
    }


TASK_POINTS = {"spectrum": spectrum_task, "flatten": flatten_task, "class-reweighting": reweighting_task}


def point(key: PRNGKeyArray, config: Config) -> dict:
    """One task and one seed (see the module docstring)."""
    return TASK_POINTS[config.task](key, config)


def outputs(config: Config) -> Outputs:
    return Outputs(
        dims={
            "objective": ("iteration",),
            "spectrum": ("stage", "mode"),
            "spectrum_target_time": ("mode",),
            "spectrum_time_theory": ("stage", "mode"),
            "spectrum_time_simulation": ("stage", "mode"),
            "flatten_spectrum": ("mode",),
            "learning_rate_profile": ("stage", "knot_sigma"),
            "flatten_time_theory": ("stage", "mode"),
            "flatten_time_simulation": ("stage", "mode"),
            "class_weight": ("stage", "class_"),
            "class_generalization_time": ("stage", "class_"),
            "class_generalization_time_fresh": ("stage", "class_"),
            "class_count": ("class_",),
        },
        coords={"stage": np.array(STAGES), "knot_sigma": profile_knots(config), "class_": np.array(CLASSES)},
        checked=("objective",),  # a re-simulated mode that never emerges has a NaN time, not a failure
        long_names={
            "objective": "Adam objective per step (last: at the optimum)",
            **{f"{task}_time_theory": "soft emergence time of the theory optimized through" for task in ("spectrum", "flatten")},
            **{f"{task}_time_simulation": "hard emergence time, re-simulated" for task in ("spectrum", "flatten")},
            "class_generalization_time": "per-class generalization time on the test points optimized on",
            "class_generalization_time_fresh": "per-class generalization time on fresh test points",
        },
    )


# ----------------------------------------------------------------------------- summary and figures


def seed_median(array) -> float:
    return float(array.median("seed"))


def spectrum_summary(run) -> tuple[Row, dict]:
    """Worst ``|ln(tau*/target)|`` over modes, soft theory and re-simulation, per stage."""
    error = lambda name, stage: seed_median(np.abs(np.log(run[name].sel(stage=stage) / run.spectrum_target_time)).max("mode"))
    theory, simulation = ({stage: error(name, stage) for stage in STAGES} for name in ("spectrum_time_theory", "spectrum_time_simulation"))
    row = Row(
        "max |ln(tau*/target)|, re-simulated",
        simulation["optimized"],
        0.0,
        "task=spectrum",
        f"initial {simulation['initial']:.3g}; soft theory {theory['optimized']:.3g}",
    )
    return row, {
        "max_abs_log_time_error_theory": theory,
        "max_abs_log_time_error_simulation": simulation,
        "optimized_spectrum": run.spectrum.sel(stage="optimized").median("seed").values,
    }


def flatten_summary(run) -> tuple[Row, dict]:
    """Spread ``max/min tau*`` over modes, quadrature theory and re-simulation, per stage."""
    spread = lambda name, stage: seed_median(run[name].sel(stage=stage).max("mode") / run[name].sel(stage=stage).min("mode"))
    theory, simulation = ({stage: spread(name, stage) for stage in STAGES} for name in ("flatten_time_theory", "flatten_time_simulation"))
    row = Row(
        "spread max/min tau*, re-simulated",
        simulation["optimized"],
        "<= 2",
        "task=flatten",
        f"constant eta {simulation['initial']:.4g}; quadrature theory {theory['optimized']:.4g}",
    )
    return row, {
        "spread_theory": theory,
        "spread_simulation": simulation,
        "learning_rate_profile": run.learning_rate_profile.sel(stage="optimized").median("seed").values,
    }


def reweighting_summary(run) -> tuple[Row, dict]:
    """``tau_gen,1 / tau_gen,0`` on the test points optimized on and on fresh ones, per stage."""
    ratio = lambda name, stage: seed_median(run[name].sel(stage=stage, class_="class_1") / run[name].sel(stage=stage, class_="class_0"))
    optimized, fresh = ({stage: ratio(name, stage) for stage in STAGES} for name in ("class_generalization_time", "class_generalization_time_fresh"))
    weight = seed_median(run.class_weight.sel(stage="optimized", class_="class_1"))
    note = f"w = (1, 1): {fresh['initial']:.4g}; optimized w_1 = {weight:.3g} (on the test points optimized on: {optimized['optimized']:.4g})"
    row = Row("tau_gen,1 / tau_gen,0, fresh test points", fresh["optimized"], 1.0, "task=class-reweighting", note)
    return row, {
        "generalization_time_ratio_1_over_0": optimized,
        "generalization_time_ratio_fresh_test": fresh,
        "class_weight_1": weight,
        "class_counts": run.class_count.isel(seed=0).values,
    }


def summarize(dataset, config: Config) -> Summary:
    """Per task, seed medians: the objective before and after, and the verification of the optimum."""
    rows, values = [], {}
    for task in dataset.task.values:
        run = dataset.sel(task=task)
        initial, optimized = (seed_median(run.objective.isel(iteration=index)) for index in (0, -1))
        row, numbers = SUMMARIES[task](run)
        rows += [Row("objective (Adam)", optimized, 0.0, f"task={task}", f"initial {initial:.4g}"), row]
        values[task] = {"objective_initial": initial, "objective_optimized": optimized, **numbers}
    notes = (
        "Seed medians. Emergence times: first crossing of the geometric (or harmonic) mean of start and target; the objectives use the soft times of dynamics.measures.soft_emergence_time.",
    )
    return Summary(rows, values, notes)


def draw_spectrum(axes, run) -> None:
    for stage, marker in zip(STAGES, "os"):
        axes[0].loglog(run.spectrum.sel(stage=stage), run.spectrum_time_simulation.sel(stage=stage), marker, mfc="none", label=f"{stage} (re-simulated)")
    axes[0].loglog(run.spectrum.sel(stage="optimized"), run.spectrum_target_time, "k+", ms=10, label="target")
    axes[0].set(xlabel="lambda", ylabel="tau*", title="designed spectrum")


def draw_flatten(axes, run) -> None:
    for stage, marker in zip(STAGES, "os"):
        axes[0].loglog(run.flatten_spectrum, run.flatten_time_simulation.sel(stage=stage), marker, mfc="none", label=f"{stage} (re-simulated)")
    axes[0].set(xlabel="lambda", ylabel="tau*", title="flattened law")
    axes[2].loglog(run.knot_sigma, run.learning_rate_profile.sel(stage="optimized"), "o-")
    axes[2].set(xlabel="sigma", ylabel="eta(sigma)", title="optimized learning-rate profile")


def draw_reweighting(axes, run) -> None:
    for stage, marker in zip(STAGES, "os"):
        axes[0].semilogy([0, 1], run.class_generalization_time_fresh.sel(stage=stage), marker + "-", mfc="none", label=f"{stage} weights")
    labels = [f"class {c} (n={int(n)})" for c, n in enumerate(run.class_count.values)]
    axes[0].set(xticks=[0, 1], xticklabels=labels, ylabel="tau_gen (fresh test points)", title="class re-weighting")


def figures(dataset, config: Config) -> dict:
    """Per task at seed 0: the designed quantity beside its verification, and the objective."""
    result = {}
    for task in dataset.task.values:
        run = dataset.sel(task=task).isel(seed=0)
        figure, axes = plots.panels(3 if task == "flatten" else 2, f"inverse design: {task}", width=4.2)
        DRAWINGS[task](axes, run)
        axes[0].legend(fontsize=7)
        axes[1].semilogy(run.objective)
        axes[1].set(xlabel="Adam step", ylabel="objective")
        result[f"inverse_{task.replace('-', '_')}"] = figure
    return result


SUMMARIES = {"spectrum": spectrum_summary, "flatten": flatten_summary, "class-reweighting": reweighting_summary}
DRAWINGS = {"spectrum": draw_spectrum, "flatten": draw_flatten, "class-reweighting": draw_reweighting}


run = bind(__name__)
