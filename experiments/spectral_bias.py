"""Spectral bias of linear, deep linear and convolutional denoisers ([WP] sec. 3-5).

ONE run (``point``) trains one denoiser family at one init scale ``Q`` and one seed: an
independent denoiser at every node of a log-spaced noise grid, by gradient flow on the exact
population loss (summed, un-halved; ``tau`` = learning rate x steps), each checkpoint turned into
a continuous-sigma denoiser by interpolating its parameters in ``log sigma``. It measures the
variance the probability-flow ODE generates along every data mode, exactly (covariance
propagation, :func:`diffdyn.dynamics.sampling.generated_mode_variances`) and from PF-ODE samples, and
lays the closed forms of :mod:`diffdyn.dynamics.theory` beside them, with the emergence time ``tau*`` of
every mode for both. ``summarize`` fits ``tau* ~ lambda^-alpha`` per family and source.

Families (docs/theory.md 2-4): ``one_layer`` ``W x + b``; ``two_layer`` ``P P^T x`` (logistic, rate
``8 eta lambda``); ``deep_linear`` ``W_L .. W_1 x``, balanced aligned init (closed form at depth
2, the per-mode ODE of the balanced product beyond) or random non-aligned init (no theory);
``circulant`` full-width circular convolution on a stationary signal (rates ``N`` times the
linear model's); ``patch`` a local filter of width ``kernel_size`` (theory by Fourier
quadrature). The one-layer, circulant and patch losses are quadratic and their flows exact; the
deep families use diffrax within the ``max_steps`` budget. With ``n_train > 0`` the denoisers
train on the statistics of ``n_train`` samples (the theory keeps the population spectrum).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from diffdyn.dynamics import measures, status
from diffdyn.dynamics.config import LogGrid, StudyConfig, setting
from diffdyn.dynamics.objectives import population_loss
from diffdyn.dynamics.sampling import generated_mode_variances, grid_denoiser, pf_ode_sample
from diffdyn.dynamics.study import STATUS, Outputs, Row, Summary
from diffdyn.dynamics.theory import convolution, deep_linear, linear
from diffdyn.dynamics.training import quadratic_gradient_flow, train_per_sigma
from diffdyn.dynamics.validation import ConfigError, require_increasing
from diffdyn.experiments import figures as plots
from diffdyn.experiments.runner import bind
from diffdyn.models.denoisers import Circulant, DeepLinear, Linear, Patch, SymmetricTwoLayer
from diffdyn.models.distributions import gaussian
from diffdyn.models.distributions.gaussian import GaussianData, empirical_data, fourier_frequencies, random_rotation, real_fourier_basis, sample

NAME = "spectral-bias"
REFERENCE = "Wang & Pehlevan, arXiv 2503.03206 (NeurIPS 2025), sec. 3-5; docs/theory.md 2-4"
CONVENTIONS = "EDM sigma time; loss summed over dimensions, un-halved; tau = learning rate x steps"
PRECISION = "float64"
FAMILIES = ("one_layer", "two_layer", "deep_linear", "circulant", "patch")
QUADRATIC = ("one_layer", "circulant", "patch")
CONVOLUTIONAL = ("circulant", "patch")


@dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the spectral-bias study (times tau = eta x steps; noise levels EDM sigmas)."""

    family: tuple[str, ...] = setting(FAMILIES, "denoiser families, one program each", grid=True, choices=FAMILIES)
    q: tuple[float, ...] = setting((0.1,), "init scale Q of the aligned init W(0) = Q I", grid=True, traced=True, low=0.0, high=1.0)
    num_modes: int = setting(12, "data dimension d (pixels N for the convolutional families)", low=3)
    lam_min: float = setting(1e-2, "smallest data variance of the log-spaced spectrum", traced=True, low=0.0, low_open=True)
    lam_max: float = setting(10.0, "largest data variance of the log-spaced spectrum", traced=True, low=0.0, low_open=True)
    spectrum: tuple[float, ...] = setting((), "given data variances instead (set the dimension)", low=0.0, low_open=True)
    covariance: str = setting("", "path of a .npy data covariance (d x d, positive definite) instead")
    eta: float = setting(1.0, "learning rate of the gradient flow", traced=True, low=0.0, low_open=True)
    tau: LogGrid = setting(LogGrid(1e-3, 1e2, 26), "recording times tau")
    sigma: LogGrid = setting(LogGrid(0.002, 80.0, 32), "training noise levels (their ends are the PF-ODE's)")
    weight_sigmas: tuple[float, ...] = setting((0.1, 1.0, 10.0), "extra training nodes where the per-mode weights are recorded", low=0.0, low_open=True)
    n_train: int = setting(0, "0: population statistics; n >= 2: the statistics of n samples per seed", low=0)
    depth: int = setting(2, "layers of the deep_linear family", low=1)
    deep_init: str = setting("aligned", "deep_linear init: balanced aligned, or random non-aligned", choices=("aligned", "random"))
    kernel_size: int = setting(3, "width of the patch filter (odd, < the dimension)", low=1)
    num_samples: int = setting(256, "PF-ODE samples per checkpoint for the sampled variance (0: skip)", low=0)
    criterion: str = setting("geometric", "emergence threshold: geometric or harmonic mean of start and target", choices=("geometric", "harmonic"))
    rtol: float = setting(1e-6, "relative tolerance of the adaptive solves (training ODE, PF-ODE)", low=0.0, high=1e-2, low_open=True)
    max_steps: int = setting(20_000, "step budget of every adaptive solve of a run (eta = 1 needs ~3000)", low=1)
    q_reference: float = setting(0.1, "the Q whose fitted exponent is the headline", low=0.0, high=1.0)


PRESETS = {
    "quick": Config(seeds=2),
    "tiny": Config(
        family=("one_layer", "two_layer", "deep_linear", "patch"), num_modes=4, tau=LogGrid(1e-2, 10.0, 8), sigma=LogGrid(0.002, 80.0, 8), num_samples=4
    ),
    "paper": Config(
        q=(0.0, 0.1, 0.5, 0.6, 1.0),
        num_modes=20,
        lam_min=1e-3,
        lam_max=1e2,
        tau=LogGrid(1e-4, 1e3, 71),
        sigma=LogGrid(0.002, 80.0, 64),
        kernel_size=5,
        rtol=1e-7,
        max_steps=1_000_000,
    ),  # one seed: aligned init + population statistics are rotation invariant per mode
}


load_covariance = lru_cache(maxsize=8)(gaussian.load_covariance)


def dimension(config: Config) -> int:
    if config.covariance:
        return load_covariance(config.covariance).shape[0]
    return len(config.spectrum) or config.num_modes


def validate(config: Config) -> None:
    """Cross-field checks of one grid point."""
    if config.spectrum and config.covariance:
        raise ConfigError("covariance: give either spectrum or covariance, not both")
    if not (config.spectrum or config.covariance):
        require_increasing("lam_min", config.lam_min, "lam_max", config.lam_max)
    size = dimension(config)
    if size < 3:
        raise ConfigError(f"spectrum: needs at least 3 modes; got {size}")
    if config.kernel_size % 2 == 0 or config.kernel_size >= size:
        raise ConfigError(f"kernel_size: must be odd and < the dimension ({size}); got {config.kernel_size}")
    for field in ("n_train", "num_samples"):
        if getattr(config, field) == 1:
            raise ConfigError(f"{field}: must be 0 or >= 2")
    if min(config.weight_sigmas, default=config.sigma.low) < config.sigma.low or max(config.weight_sigmas, default=0) > config.sigma.high:
        raise ConfigError(f"weight_sigmas: allowed range [sigma.low, sigma.high] = [{config.sigma.low}, {config.sigma.high}]; got {config.weight_sigmas}")


def validate_sweep(config: Config, swept: tuple[str, ...]) -> None:
    ends = [path for path in ("lam_min", "lam_max") if path in swept]
    if ends and (config.spectrum or config.covariance):
        raise ConfigError(f"{ends[0]}: cannot be swept when a spectrum or covariance is given")


# ----------------------------------------------------------------------------- data and models


def dft_power(config: Config):
    """Power per DFT frequency (``p_k = p_{N-k}``) of the convolutional families' stationary data:
    the given covariance's ``diag(F Sigma F^H)`` (the spectrum of the shift-augmented data, all
    the circulant and patch losses see, docs/theory.md 4), else log-spaced from ``lam_max`` at
    frequency 0 to ``lam_min`` at the Nyquist frequency (a given ``spectrum``: its extremes)."""
    if config.covariance:
        return jnp.asarray(convolution.power_spectrum(load_covariance(config.covariance)))
    low, high = (min(config.spectrum), max(config.spectrum)) if config.spectrum else (config.lam_min, config.lam_max)
    return gaussian.symmetric_log_power(dimension(config), low, high)


def data_for(config: Config, key) -> GaussianData:
    """The data of a run: the stationary signal of :func:`dft_power` in the real Fourier basis
    (convolutional families); else the given covariance, or the spectrum in a Haar-random basis
    from ``key``. Traceable in ``lam_min`` / ``lam_max``."""
    n = dimension(config)
    if config.family in CONVOLUTIONAL:
        return GaussianData(jnp.zeros(n), dft_power(config)[fourier_frequencies(n)], jnp.asarray(real_fourier_basis(n)))
    if config.covariance:
        lam, basis = np.linalg.eigh(load_covariance(config.covariance))
        return GaussianData(jnp.zeros(n), jnp.asarray(lam), jnp.asarray(basis))
    lam = jnp.asarray(np.sort(config.spectrum)) if config.spectrum else jnp.geomspace(config.lam_min, config.lam_max, n)
    return GaussianData(jnp.zeros(n), lam, random_rotation(key, n))


def model_for(config: Config):
    n = dimension(config)
    return {
        "one_layer": lambda: Linear(n),
        "two_layer": lambda: SymmetricTwoLayer(n),
        "deep_linear": lambda: DeepLinear(n, config.depth, init_mode=config.deep_init),
        "circulant": lambda: Circulant(n),
        "patch": lambda: Patch(n, config.kernel_size),
    }[config.family]()


def sigma_nodes(config: Config) -> np.ndarray:
    """Training noise levels: the log grid plus ``weight_sigmas`` (so stored weights are nodes)."""
    return np.unique(np.concatenate([config.sigma.values(), config.weight_sigmas]))


# ----------------------------------------------------------------------------- one run


def simulate(config: Config, data: GaussianData, key):
    """Per-mode weights ``[weight_sigma, tau, mode]``, exact generated variances ``[tau, mode]``,
    sampled variances (NaN without samples) and the worst solver status."""
    model = model_for(config)
    init_key, noise_key, sample_key = jax.random.split(key, 3)
    moments = empirical_data(sample(sample_key, data, config.n_train)) if config.n_train else (data.mean, data.covariance)
    nodes, taus = jnp.asarray(sigma_nodes(config)), jnp.asarray(config.tau.values())
    trained = train_per_sigma(
        model,
        *moments,
        config.q,
        init_key,
        nodes,
        jnp.full(nodes.shape, config.eta),
        taus,
        quadratic=config.family in QUADRATIC,
        rtol=config.rtol,
        max_steps=config.max_steps,
    )
    # a failed training (past its step budget) hands zero weights on, so the PF-ODE stays cheap
    params = jax.tree.map(lambda leaf: jnp.where(trained.status == status.OK, leaf, 0.0), trained.value)
    stored = np.searchsorted(sigma_nodes(config), config.weight_sigmas)
    per_mode = lambda params: measures.mode_variances(model.affine(params)[0], data.basis)
    weight = jax.vmap(jax.vmap(per_mode))(jax.tree.map(lambda leaf: leaf[:, stored], params))
    ends = dict(sigma_min=config.sigma.low, sigma_max=config.sigma.high, rtol=config.rtol, max_steps=config.max_steps)
    variance, variance_status = jax.lax.map(lambda grid: generated_mode_variances(model.affine, grid, nodes, data.basis, **ends), params)
    sampled, sampled_status = jnp.full_like(variance, jnp.nan), jnp.int32(status.OK)
    if config.num_samples:
        starts = config.sigma.high * jax.random.normal(noise_key, (config.num_samples, data.eigenvalues.size))

        def sampled_variance(grid):
            denoise = grid_denoiser(model.apply, grid, nodes)
            solve = lambda x: pf_ode_sample(
                denoise, x, sigma_max=config.sigma.high, sigma_min=config.sigma.low, rtol=config.rtol, atol=1e-3 * config.rtol, max_steps=config.max_steps
            )
            samples, statuses = jax.vmap(solve)(starts)
            return measures.sample_mode_variances(samples, data.basis), status.worst(statuses)

        sampled, sampled_status = jax.lax.map(sampled_variance, params)
    code = status.worst(trained.status, variance_status, sampled_status, status.finite(weight, variance))
    return jnp.swapaxes(weight, 0, 1), variance, sampled, code


def theory(config: Config, data: GaussianData):
    """Closed forms of docs/theory.md 2-4 on the run's grids: weights ``[weight_sigma, tau, mode]``
    and generated variances ``[tau, mode]`` (NaN where none exists), and the solver status of
    the depth-L mode ODE."""
    n, eta, q = dimension(config), config.eta, config.q
    tau, sigma = jnp.asarray(config.tau.values()), jnp.asarray(config.weight_sigmas)
    ends = dict(sigma_min=config.sigma.low, sigma_max=config.sigma.high)
    grid = dict(tau=tau[None, :, None], sigma=sigma[:, None, None])
    code = jnp.int32(status.OK)
    if config.family in CONVOLUTIONAL:
        frequencies, power = fourier_frequencies(n), dft_power(config)
        if config.family == "circulant":
            weight = convolution.circulant_weights(power[None, None, :], q, grid["tau"], grid["sigma"], n_pixels=n, eta=eta)
            variance = convolution.circulant_generated_variance(power[None, :], q, tau[:, None], n_pixels=n, eta=eta, **ends)
        else:
            cov_patch = convolution.patch_covariance(convolution.stationary_covariance(power), config.kernel_size)
            centre = jnp.eye(config.kernel_size)[config.kernel_size // 2]
            transfer = lambda s, t: jnp.real(convolution.patch_transfer(convolution.patch_weights(cov_patch, q * centre, t, s, n_pixels=n, eta=eta), n))
            weight = jax.vmap(lambda s: jax.vmap(lambda t: transfer(s, t))(tau))(sigma)
            variance = convolution.patch_generated_variance(cov_patch, q, tau[:, None], n_pixels=n, eta=eta, **ends)[:, 0, :]
        return weight[..., frequencies], variance[..., frequencies], code
    lam = data.eigenvalues
    if config.family == "one_layer":
        return linear.weights(lam, q, grid["tau"], grid["sigma"], eta=eta), linear.generated_variance(lam, q, tau[:, None], eta=eta, **ends), code
    if config.family == "two_layer" or (config.depth == 2 and config.deep_init == "aligned"):
        symmetric = config.family == "two_layer"
        weight = deep_linear.weights(lam, q, grid["tau"], grid["sigma"], eta=eta, symmetric=symmetric)
        return weight, deep_linear.generated_variance(lam, q, tau[:, None], eta=eta, symmetric=symmetric, **ends), code
    if config.deep_init == "aligned":  # depth L: the per-mode ODE of the balanced product
        weight, weight_status = deep_linear.balanced_weights(lam[None, :], q, tau, sigma[:, None], depth=config.depth, eta=eta, max_steps=config.max_steps)
        variance, variance_status = deep_linear.balanced_generated_variance(lam, q, tau, depth=config.depth, eta=eta, max_steps=config.max_steps, **ends)
        return jnp.moveaxis(weight, 0, 1), variance, status.worst(weight_status, variance_status)
    nothing = jnp.full((sigma.size, tau.size, n), jnp.nan)  # random deep init: no theory (docs/theory.md 3)
    return nothing, nothing[0], code


def circulant_rate_ratio(config: Config, data: GaussianData, sigma: float = 1.0):
    """Measured ``rate(circulant) / rate(full linear)`` per Fourier mode, both trained from zero
    at noise level ``sigma`` on the same stationary data (half-relaxation times of the weights;
    theory: ``N``)."""
    taus = jnp.geomspace(config.tau.low * 1e-2, config.tau.high, 400)

    def half_times(model):
        loss = lambda params: population_loss(model.affine, params, data.mean, data.covariance, sigma)
        flow = quadratic_gradient_flow(loss, model.init(jax.random.key(0), 0.0), eta=config.eta)
        curves = jax.vmap(lambda t: measures.mode_variances(model.affine(flow(t))[0], data.basis))(taus)
        return jax.vmap(measures.half_relaxation_time, in_axes=(None, 1))(taus, curves)

    return half_times(Linear(dimension(config))) / half_times(Circulant(dimension(config)))


def point(key, config: Config) -> dict:
    """One family at one init scale and one seed (see the module docstring)."""
    data_key, run_key = jax.random.split(key)
    data = data_for(config, data_key)
    weight, variance, sampled, simulated_status = simulate(config, data, run_key)
    theory_weight, theory_variance, theory_status = theory(config, data)
    variances = jnp.stack([theory_variance, variance])
    tau_star, rising = measures.emergence_times(jnp.asarray(config.tau.values()), variances, data.eigenvalues, criterion=config.criterion)
    outputs = {
        "variance": variances,
        "weight": jnp.stack([theory_weight, weight]),
        "emergence_time": tau_star,
        "rising": rising,
        "lam": data.eigenvalues,
        STATUS: status.worst(simulated_status, theory_status),
    }
    if config.num_samples:
        outputs["variance_sampled"] = sampled
    if config.family == "circulant":
        outputs["circulant_rate_ratio"] = circulant_rate_ratio(config, data)
    return outputs


def outputs(config: Config) -> Outputs:
    return Outputs(
        dims={
            "variance": ("source", "tau", "mode"),
            "weight": ("source", "sigma", "tau", "mode"),
            "emergence_time": ("source", "mode"),
            "rising": ("source", "mode"),
            "lam": ("mode",),
            "variance_sampled": ("tau", "mode"),
            "circulant_rate_ratio": ("frequency",),
        },
        coords={"source": np.array(["theory", "simulation"]), "tau": config.tau.values(), "sigma": np.asarray(config.weight_sigmas)},
        checked=(),  # point() reports its own status: the theory is NaN where none exists
        long_names={
            "variance": "generated variance per data mode (exact PF-ODE covariance)",
            "weight": "per-mode weight Re u_k^H A u_k of the denoiser",
            "variance_sampled": f"variance of {config.num_samples} PF-ODE samples per mode",
            "emergence_time": "first tau at which the generated variance crosses the threshold",
            "circulant_rate_ratio": "measured rate ratio circulant / full linear per Fourier mode (theory: N)",
        },
    )


# ----------------------------------------------------------------------------- summary and figures


def reference_q(dataset, config: Config) -> float:
    """The swept Q nearest to ``q_reference``."""
    values = dataset.q.values
    return float(values[np.argmin(np.abs(values - config.q_reference))])


def summarize(dataset, config: Config) -> Summary:
    """Per family at the reference Q: alpha of theory and simulation (seeds pooled), the largest
    deviation of simulation from theory and of samples from the exact variance."""
    q = reference_q(dataset, config)
    rows, families = [], {}
    for family in dataset.family.values:
        one = dataset.sel(family=family, q=q)
        fits = measures.fit_power_laws(one.lam, one.emergence_time, one.variance.isel(tau=0), one.rising)
        direction = max(("rising", "decaying"), key=lambda d: fits["simulation"][d]["n_modes"])
        deviation = float(np.abs(one.variance.sel(source="simulation") / one.variance.sel(source="theory") - 1).max())
        sampled = float(np.abs(one.variance_sampled / one.variance.sel(source="simulation") - 1).max()) if "variance_sampled" in one else None
        where = f"family={family}, Q={q:g}"
        rows.append(
            Row(
                "alpha (tau* ~ lambda^-alpha)",
                fits["simulation"][direction]["alpha"],
                fits["theory"][direction]["alpha"],
                where,
                f"{fits['simulation'][direction]['n_modes']} {direction} modes x seeds",
            )
        )
        rows.append(Row("max rel. deviation simulation / theory", deviation, 0.0, where, "exact PF-ODE variance"))
        if sampled is not None:
            rows.append(Row("max rel. deviation samples / exact", sampled, None, where, f"{config.num_samples} samples per checkpoint"))
        families[str(family)] = {"direction": direction, "fits": fits, "max_rel_dev": deviation, "max_rel_dev_sampled": sampled}
    if "circulant_rate_ratio" in dataset:
        ratio = dataset.circulant_rate_ratio.sel(family="circulant").values
        rows.append(
            Row("rate ratio circulant / linear (median)", float(np.nanmedian(ratio)), float(dimension(config)), "sigma = 1", "per Fourier mode; theory N")
        )
    notes = (
        "alpha: minus the OLS slope of log tau* on log lambda; tau* where the generated variance crosses the geometric (or harmonic) "
        "mean of its start and target; gray zone 0.5x-2x excluded; rising and decaying modes fitted apart (the direction with more modes shown).",
    )
    return Summary(rows, {"q_reference": q, "families": families}, notes)


def figures(dataset, config: Config) -> dict:
    """Weights at sigma ~ 1 and variance trajectories (lines: theory, dots: simulation), and
    the emergence law per family, at the reference Q and seed 0."""
    one = dataset.sel(q=reference_q(dataset, config)).isel(seed=0)
    families = list(dataset.family.values)
    sigma = float(one.sigma.values[np.argmin(np.abs(np.log(one.sigma.values)))])
    weight_figure, weight_axes = plots.panels(len(families), f"per-mode weight at sigma = {sigma:g} (lines: theory, dots: simulation)")
    variance_figure, variance_axes = plots.panels(len(families), "generated variance per mode (lines: theory, dots: simulation)")
    law_figure, law_axes = plots.panels(len(families), "emergence time vs data variance")
    for index, family in enumerate(families):
        run = one.sel(family=family)
        weight = run.weight.sel(sigma=sigma)
        plots.theory_and_simulation(weight_axes[index], run.tau, weight.sel(source="theory"), weight.sel(source="simulation"))
        plots.theory_and_simulation(variance_axes[index], run.tau, run.variance.sel(source="theory"), run.variance.sel(source="simulation"), log_y=True)
        every_seed = dataset.sel(family=family, q=reference_q(dataset, config))
        plots.emergence_law(law_axes[index], every_seed.lam.values, {s: every_seed.emergence_time.sel(source=s).values for s in ("theory", "simulation")})
        for axes in (weight_axes, variance_axes, law_axes):
            axes[index].set_title(family)
    return {"weights": weight_figure, "variance": variance_figure, "emergence": law_figure}


run = bind(__name__)
