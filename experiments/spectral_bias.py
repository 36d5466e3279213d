"""Spectral bias of linear, deep linear and convolutional denoisers ([WP] sec. 3-5).

For each denoiser family the study trains an independent denoiser at every node of a log-spaced
noise grid by gradient flow on the exact population loss (summed, un-halved; training time
``tau = learning rate x steps``), turns each training checkpoint into a continuous-sigma denoiser
by interpolating its parameters in ``log sigma``, and measures the variance that the
probability-flow ODE generates along every data mode: exactly (covariance propagation through
the ODE, :func:`dynamics.sampling.generated_covariance`) and from PF-ODE samples. Beside it sit
the closed forms of :mod:`dynamics.theory` on the same grids. From both, per mode, the emergence
time ``tau*`` and the fitted law ``tau* ~ lambda^-alpha``.

Families (THEORY.md 2-4):

* ``one_layer``: ``D = W x + b`` per sigma, aligned init ``W = Q I``.
* ``two_layer``: ``D = P P^T x``, ``P = sqrt(Q) I``: logistic dynamics, rate ``8 eta lambda``.
* ``deep_linear``: ``D = W_L .. W_1 x``, balanced aligned init (every layer ``Q^(1/L) I``) or a
  random non-aligned one (``deep_init="random"``, layers ``Q^(1/L) O_l``). With aligned init
  the theory is the closed form at depth 2 (rate ``4 eta lambda``) and the per-mode scalar ODE
  of the balanced product beyond (:func:`dynamics.theory.deep_linear.balanced_weights`); with
  random init there is none and only the simulation and its fitted law are reported.
* ``circulant``: full-width circular convolution on a stationary signal whose power spectrum
  is the study's spectrum; every rate is ``N`` times the full linear model's.
* ``patch``: local filter of width ``kernel_size``; theory by quadrature in Fourier space.

Training uses the exact loss given the data's mean and covariance: the population's, or with
``n_train > 0`` those of ``n_train`` samples drawn per seed (the finite-training-set effect; the
theory keeps the population spectrum). The one-layer, circulant and patch losses are quadratic: their flows are solved exactly through
the autodiff Hessian (:func:`dynamics.training.quadratic_gradient_flow`). The two deep families
are integrated with diffrax (:func:`dynamics.training.gradient_flow`).
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache, partial
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from dynamics import measures
from dynamics.objectives import population_loss
from dynamics.sampling import generated_covariance, grid_denoiser, interpolate_log_sigma, pf_ode_sample
from dynamics.theory import convolution, deep_linear, linear
from dynamics.sweep import Workload, with_values
from dynamics.training import gradient_flow, quadratic_gradient_flow
from dynamics.validation import (
    ConfigError,
    require_choice,
    require_increasing,
    require_positive_int,
    require_range,
    require_subset,
)
from models.denoisers import Circulant, DeepLinear, Linear, Patch, SymmetricTwoLayer
from models.distributions.gaussian import (
    GaussianData,
    empirical_data,
    fourier_frequencies,
    random_rotation,
    sample,
    real_fourier_basis,
    validate_covariance,
)

NAME = "spectral-bias"
FAMILIES = ("one_layer", "two_layer", "deep_linear", "circulant", "patch")
QUADRATIC = ("one_layer", "circulant", "patch")
CONVOLUTIONAL = ("circulant", "patch")
CRITERIA = ("geometric", "harmonic")
DEEP_INITS = ("aligned", "random")


@dataclass(frozen=True)
class Config:
    """Settings of the spectral-bias study (shapes are static, so every field is a plain value).

    Times are training times ``tau = learning rate x steps`` with learning rate ``eta``; noise
    levels are EDM sigmas. ``q`` are the init scales (aligned init ``W(0) = Q I``).
    """

    families: tuple[str, ...] = FAMILIES
    num_modes: int = 12  # data dimension d (pixels N for the convolutional families)
    lam_min: float = 1e-2  # smallest data variance
    lam_max: float = 10.0  # largest data variance
    spectrum: tuple[float, ...] = ()  # given data variances (override num_modes, lam_min, lam_max)
    covariance: str = ""  # path of a .npy data covariance (d x d, positive definite) instead
    q: tuple[float, ...] = (0.1,)  # init scales Q in [0, 1]
    q_reference: float = 0.1  # the Q whose fitted exponent is the headline number
    eta: float = 1.0  # learning rate of the gradient flow
    tau_min: float = 1e-3
    tau_max: float = 1e2
    num_tau: int = 26  # log-spaced recording times in [tau_min, tau_max]
    num_sigma_nodes: int = 32  # log-spaced training noise levels in [sigma_min, sigma_max]
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    weight_sigmas: tuple[float, ...] = (0.1, 1.0, 10.0)  # extra nodes where weights are stored
    seeds: int = 2  # random rotations of the data basis / random inits / training sets
    n_train: int = 0  # 0: exact population statistics; n: train on the statistics of n samples
    depth: int = 2  # layers of the deep_linear family
    deep_init: str = "aligned"  # deep_linear init: aligned (balanced) or random (non-aligned)
    kernel_size: int = 3  # width of the patch filter (odd, < num_modes)
    num_samples: int = 256  # PF-ODE samples per checkpoint for the sampled variance (0: skip)
    criterion: str = "geometric"  # emergence threshold: geometric or harmonic mean
    rtol: float = 1e-6  # tolerance of the diffrax solves (training ODE and PF-ODE)
    seed: int = 0  # root random seed


PRESETS = {
    "quick": Config(),
    "paper": Config(
        num_modes=20,
        lam_min=1e-3,
        lam_max=1e2,
        q=(0.0, 0.1, 0.5, 0.6, 1.0),
        tau_min=1e-4,
        tau_max=1e3,
        num_tau=71,
        num_sigma_nodes=64,
        seeds=1,  # aligned init + population statistics: per-mode results are rotation invariant
        kernel_size=5,
        num_samples=256,
        rtol=1e-7,
    ),
}


def validate(config: Config) -> Config:
    """Check every field on the host; raise :class:`ConfigError` naming the first bad one.

    Returns the config with ``num_modes``, ``lam_min`` and ``lam_max`` taken from ``spectrum``
    when one is given.
    """
    if config.spectrum and config.covariance:
        raise ConfigError("covariance: give either spectrum or covariance, not both")
    if config.spectrum or config.covariance:
        values = (
            require_range("spectrum", config.spectrum, low=0.0, low_open=True)
            if config.spectrum
            else np.linalg.eigvalsh(load_covariance(config.covariance))
        )
        config = dataclasses.replace(
            config, num_modes=len(values), lam_min=float(values.min()), lam_max=float(values.max())
        )
    require_subset("families", config.families, FAMILIES)
    require_positive_int("num_modes", config.num_modes, minimum=3)
    require_range("lam_min", config.lam_min, low=0.0, low_open=True)
    require_range("lam_max", config.lam_max, low=0.0, low_open=True)
    require_increasing("lam_min", config.lam_min, "lam_max", config.lam_max)
    if not config.q:
        raise ConfigError("q: at least one init scale in [0, 1]")
    require_range("q", config.q, low=0.0, high=1.0)
    require_range("q_reference", config.q_reference, low=0.0, high=1.0)
    require_range("eta", config.eta, low=0.0, low_open=True)
    require_range("tau_min", config.tau_min, low=0.0, low_open=True)
    require_increasing("tau_min", config.tau_min, "tau_max", config.tau_max)
    require_positive_int("num_tau", config.num_tau, minimum=4)
    require_positive_int("num_sigma_nodes", config.num_sigma_nodes, minimum=2)
    require_range("sigma_min", config.sigma_min, low=0.0, low_open=True)
    require_increasing("sigma_min", config.sigma_min, "sigma_max", config.sigma_max)
    require_range("weight_sigmas", config.weight_sigmas, low=config.sigma_min, high=config.sigma_max)
    require_positive_int("seeds", config.seeds)
    require_positive_int("n_train", config.n_train, minimum=0)
    if config.n_train == 1:
        raise ConfigError("n_train: must be 0 (population statistics) or >= 2")
    require_positive_int("depth", config.depth)
    require_choice("deep_init", config.deep_init, DEEP_INITS)
    require_positive_int("kernel_size", config.kernel_size)
    if config.kernel_size % 2 == 0 or config.kernel_size >= config.num_modes:
        raise ConfigError(
            f"kernel_size: must be odd and < num_modes ({config.num_modes}); got {config.kernel_size}"
        )
    require_positive_int("num_samples", config.num_samples, minimum=0)
    if config.num_samples == 1:
        raise ConfigError("num_samples: must be 0 (skip) or >= 2")
    require_choice("criterion", config.criterion, CRITERIA)
    require_range("rtol", config.rtol, low=0.0, high=1e-2, low_open=True)
    require_positive_int("seed", config.seed, minimum=0)
    return config


# ----------------------------------------------------------------------------- grids and data


# Grids are numpy (host constants), so they stay concrete inside traced code.


@lru_cache(maxsize=8)
def load_covariance(path: str) -> np.ndarray:
    """A positive-definite data covariance from a ``.npy`` file (validated on the host)."""
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ConfigError(f"covariance: cannot read {path!r} as a .npy matrix ({error})") from None
    matrix = validate_covariance(matrix)
    smallest = float(np.linalg.eigvalsh(matrix).min())
    if smallest <= 0:
        raise ConfigError(f"covariance: must be positive definite (every mode needs a variance > 0); smallest eigenvalue {smallest:.3g}")
    return matrix


def spectrum(config: Config) -> jnp.ndarray:
    """Data variances (increasing): the given ``spectrum`` or ``covariance`` eigenvalues, else
    ``num_modes`` values log-spaced in ``[lam_min, lam_max]`` (traceable in both end points, so a
    sweep can vary them inside one program)."""
    if config.covariance:
        return jnp.asarray(np.linalg.eigvalsh(load_covariance(config.covariance)))
    if config.spectrum:
        return jnp.asarray(np.sort(np.asarray(config.spectrum, dtype=float)))
    return jnp.geomspace(config.lam_min, config.lam_max, config.num_modes)


def power_spectrum(config: Config) -> jnp.ndarray:
    """Power per DFT frequency for the convolutional families, symmetric (``p_k = p_{N-k}``).

    With a given ``covariance``: its power spectrum ``diag(F Sigma F^H)``, i.e. the spectrum of
    the shift-augmented data, on which the circulant and patch losses depend exclusively
    (THEORY.md 4). Otherwise log-spaced from ``lam_max`` at frequency 0 to ``lam_min`` at the
    Nyquist frequency.
    """
    n = config.num_modes
    if config.covariance:
        dft = np.fft.fft(np.eye(n), norm="ortho")
        return jnp.asarray(np.real(np.einsum("ki,ij,kj->k", dft, load_covariance(config.covariance), dft.conj())))
    distinct = jnp.geomspace(config.lam_max, config.lam_min, n // 2 + 1)
    frequency = np.minimum(np.arange(n), n - np.arange(n))
    return distinct[frequency]


def taus(config: Config) -> np.ndarray:
    return np.geomspace(config.tau_min, config.tau_max, config.num_tau)


def sigma_nodes(config: Config) -> np.ndarray:
    """Training noise levels: the log grid plus ``weight_sigmas`` (so stored weights are nodes)."""
    grid = np.geomspace(config.sigma_min, config.sigma_max, config.num_sigma_nodes)
    return np.unique(np.concatenate([grid, config.weight_sigmas]))


def model_for(config: Config, family: str):
    d = config.num_modes
    return {
        "one_layer": lambda: Linear(d),
        "two_layer": lambda: SymmetricTwoLayer(d),
        "deep_linear": lambda: DeepLinear(d, config.depth, init_mode=config.deep_init),
        "circulant": lambda: Circulant(d),
        "patch": lambda: Patch(d, config.kernel_size),
    }[family]()


def rotated_data(config: Config, key: jax.Array) -> GaussianData:
    """Zero-mean Gaussian with the study's spectrum in a Haar-random eigenbasis (traceable), or
    with the given ``covariance`` (its own eigenbasis, the same for every seed)."""
    if config.covariance:
        lam, basis = np.linalg.eigh(load_covariance(config.covariance))
        return GaussianData(jnp.zeros(lam.shape), jnp.asarray(lam), jnp.asarray(basis))
    lam = spectrum(config)
    return GaussianData(jnp.zeros_like(lam), lam, random_rotation(key, config.num_modes))


def stationary(config: Config) -> GaussianData:
    """Stationary periodic signal with :func:`power_spectrum` (real Fourier eigenbasis, as
    :func:`models.distributions.gaussian.stationary_data`; the spectrum is checked by
    :func:`validate`, so this stays traceable in ``lam_min``/``lam_max``)."""
    n = config.num_modes
    power = power_spectrum(config)[fourier_frequencies(n)]
    return GaussianData(jnp.zeros(n), power, jnp.asarray(real_fourier_basis(n)))


# ----------------------------------------------------------------------------- simulation


class Simulation(NamedTuple):
    """Simulated measures of one family, dims ``(q, seed, ...)``."""

    weight: jnp.ndarray  # (q, seed, weight_sigma, tau, mode): Re u_k^H A u_k
    variance: jnp.ndarray  # (q, seed, tau, mode): exact covariance through the PF-ODE
    sampled: jnp.ndarray  # (q, seed, tau, mode): from num_samples PF-ODE samples (NaN if 0)


def train_denoisers(family: str, model, mean, cov, q, key, nodes, etas, times, *, rtol: float):
    """Parameters of independent denoisers at every node, leaves ``(tau, sigma_node, ...)``,
    trained by gradient flow with learning rate ``etas[i]`` at node ``nodes[i]`` (a per-sigma
    learning rate is a per-sigma loss weight) on the exact loss for data with statistics
    ``(mean, cov)``.

    All nodes start from the same initialisation (``key``), so that their parameters vary
    smoothly with sigma and can be interpolated in ``log sigma``.
    """
    params0 = model.init(key, q)

    def at_node(sigma, eta):
        loss = lambda params: population_loss(model.affine, params, mean, cov, sigma)
        if family in QUADRATIC:
            return jax.vmap(quadratic_gradient_flow(loss, params0, eta=eta))(times)
        return gradient_flow(loss, params0, times, eta=eta, rtol=rtol, atol=1e-3 * rtol)

    by_node = jax.vmap(at_node)(nodes, etas)
    return jax.tree.map(lambda leaf: jnp.swapaxes(leaf, 0, 1), by_node)


def exact_mode_variances(model, basis, params_grid, nodes, *, sigma_min: float, sigma_max: float, rtol: float):
    """Generated variance along every column of ``basis`` for ONE checkpoint (parameters at
    ``nodes``), by exact covariance propagation through the PF-ODE.

    Propagated in the data eigenbasis, where the solver's per-component tolerance is relative
    to each mode's own variance (small modes stay accurate).
    """

    def affine(sigma):
        matrix, offset = model.affine(interpolate_log_sigma(params_grid, nodes, sigma))
        return basis.T @ matrix @ basis, basis.T @ offset

    cov = generated_covariance(
        affine, basis.shape[0], sigma_max=sigma_max, sigma_min=sigma_min, rtol=rtol, atol=1e-3 * rtol
    )
    return jnp.diagonal(cov)


def simulate_run(config: Config, family: str, q, key) -> Simulation:
    """One run (one init scale, one seed) of one family; pure and vmappable over ``q``, ``key``."""
    model = model_for(config, family)
    data_key, init_key, noise_key, sample_key = jax.random.split(key, 4)
    data = stationary(config) if family in CONVOLUTIONAL else rotated_data(config, data_key)
    statistics = (
        empirical_data(sample(sample_key, data, config.n_train)) if config.n_train else (data.mean, data.covariance)
    )
    nodes, times = jnp.asarray(sigma_nodes(config)), jnp.asarray(taus(config))
    etas = jnp.full(nodes.shape, config.eta)
    trajectory = train_denoisers(family, model, *statistics, q, init_key, nodes, etas, times, rtol=config.rtol)

    def mode_diagonal(params):
        return measures.mode_variances(model.affine(params)[0], data.basis)

    stored = np.searchsorted(sigma_nodes(config), config.weight_sigmas)
    at_weight_nodes = jax.tree.map(lambda leaf: leaf[:, stored], trajectory)
    weight = jax.vmap(jax.vmap(mode_diagonal))(at_weight_nodes)  # (tau, weight_sigma, mode)
    ends = dict(sigma_min=config.sigma_min, sigma_max=config.sigma_max, rtol=config.rtol)
    variance = jax.lax.map(lambda grid: exact_mode_variances(model, data.basis, grid, nodes, **ends), trajectory)
    sampled = jnp.full_like(variance, jnp.nan)
    if config.num_samples:
        starts = config.sigma_max * jax.random.normal(noise_key, (config.num_samples, config.num_modes))

        def sampled_variance(params_grid):
            denoise = grid_denoiser(model.apply, params_grid, nodes)
            sample_one = lambda x: pf_ode_sample(
                denoise, x, sigma_max=config.sigma_max, sigma_min=config.sigma_min,
                rtol=config.rtol, atol=1e-3 * config.rtol,
            )
            return measures.sample_mode_variances(jax.vmap(sample_one)(starts), data.basis)

        sampled = jax.lax.map(sampled_variance, trajectory)
    return Simulation(jnp.swapaxes(weight, 0, 1), variance, sampled)


def simulate(config: Config, family: str) -> Simulation:
    """All runs of a family in one compiled program: vmapped over init scales and seeds.

    Run ``(q_i, seed_s)`` uses ``fold_in(key(seed), s)``, so any single run can be redone alone.
    """
    root = jax.random.key(config.seed)
    keys = jax.vmap(lambda s: jax.random.fold_in(root, s))(jnp.arange(config.seeds))
    run = lambda q, key: simulate_run(config, family, q, key)
    program = jax.jit(jax.vmap(jax.vmap(run, in_axes=(None, 0)), in_axes=(0, None)))
    return program(jnp.asarray(config.q), keys)


# ----------------------------------------------------------------------------- theory


def has_deep_closed_form(config: Config) -> bool:
    """The deep linear family has a closed form only at depth 2 with balanced aligned init."""
    return config.depth == 2 and config.deep_init == "aligned"


def _balanced_deep_theory(config: Config):
    """Depth-L balanced aligned theory: per-mode scalar ODEs (no closed form beyond depth 2)."""
    lam, times = jnp.asarray(spectrum(config)), jnp.asarray(taus(config))
    weight = deep_linear.balanced_weights(
        lam[None, None, :], jnp.asarray(config.q)[:, None, None], times,
        jnp.asarray(config.weight_sigmas)[None, :, None], depth=config.depth, eta=config.eta,
    )
    weight = jnp.moveaxis(weight, 0, 2)  # (tau, q, weight_sigma, mode) -> (q, weight_sigma, tau, mode)
    variance = jnp.stack([
        deep_linear.balanced_generated_variance(
            lam, q_value, times, depth=config.depth, eta=config.eta,
            sigma_min=config.sigma_min, sigma_max=config.sigma_max,
        )
        for q_value in config.q
    ])
    return weight, variance


class Theory(NamedTuple):
    weight: jnp.ndarray  # (q, weight_sigma, tau, mode)
    variance: jnp.ndarray  # (q, tau, mode)


def theory(config: Config, family: str) -> Theory:
    """Closed forms of THEORY.md 2-4 on the study's grids (NaN where none exists)."""
    q = jnp.asarray(config.q)[:, None, None, None]
    sigma = jnp.asarray(config.weight_sigmas)[None, :, None, None]
    tau = jnp.asarray(taus(config))[None, None, :, None]
    ends = dict(sigma_min=config.sigma_min, sigma_max=config.sigma_max)
    n, eta = config.num_modes, config.eta
    shape = (len(config.q), len(config.weight_sigmas), config.num_tau, n)
    if family in CONVOLUTIONAL:
        weight, variance = _convolution_theory(config, family, q, sigma, tau, ends)
    elif family == "one_layer":
        lam = jnp.asarray(spectrum(config))[None, None, None, :]
        weight = linear.weights(lam, q, tau, sigma, eta=eta)
        variance = linear.generated_variance(lam[0], q[:, 0], tau[:, 0], eta=eta, **ends)
    elif family == "two_layer" or (family == "deep_linear" and has_deep_closed_form(config)):
        lam = jnp.asarray(spectrum(config))[None, None, None, :]
        symmetric = family == "two_layer"
        weight = deep_linear.weights(lam, q, tau, sigma, eta=eta, symmetric=symmetric)
        variance = deep_linear.generated_variance(lam[0], q[:, 0], tau[:, 0], eta=eta, symmetric=symmetric, **ends)
    elif family == "deep_linear" and config.deep_init == "aligned":
        weight, variance = _balanced_deep_theory(config)
    else:  # deep_linear with random (non-aligned) init: no theory (THEORY.md 3)
        weight = jnp.full(shape, jnp.nan)
        variance = weight[:, 0]
    return Theory(jnp.broadcast_to(weight, shape), variance)


def _convolution_theory(config: Config, family: str, q, sigma, tau, ends):
    """Circulant (closed form) or patch (Fourier quadrature) theory, per real Fourier mode."""
    n, eta = config.num_modes, config.eta
    power = jnp.asarray(power_spectrum(config))[None, None, None, :]
    if family == "circulant":
        weight = convolution.circulant_weights(power, q, tau, sigma, n_pixels=n, eta=eta)
        variance = convolution.circulant_generated_variance(power[0], q[:, 0], tau[:, 0], n_pixels=n, eta=eta, **ends)
    else:
        cov_patch = convolution.patch_covariance(convolution.stationary_covariance(power[0, 0, 0]), config.kernel_size)
        centre = jnp.eye(config.kernel_size)[config.kernel_size // 2]

        def patch_weight(q_value, sigma_value, tau_value):
            w = convolution.patch_weights(cov_patch, q_value * centre, tau_value, sigma_value, n_pixels=n, eta=eta)
            return jnp.real(convolution.patch_transfer(w, n))

        weight = jnp.vectorize(patch_weight, signature="(),(),()->(n)")(q[..., 0], sigma[..., 0], tau[..., 0])
        variance = convolution.patch_generated_variance(cov_patch, q[:, 0, :, 0], tau[:, 0, :, 0], n_pixels=n, eta=eta, **ends)
    columns = fourier_frequencies(n)  # the DFT frequency of each real Fourier mode
    return weight[..., columns], variance[..., columns]


# ----------------------------------------------------------------------------- measures


def emergence(config: Config, variance: jnp.ndarray, target: jnp.ndarray):
    """Emergence times and directions for curves ``variance[..., tau, mode]``."""
    curves = jnp.moveaxis(variance, -2, -1)  # (..., mode, tau)
    flat = curves.reshape(-1, curves.shape[-1])
    goals = jnp.broadcast_to(target, curves.shape[:-1]).reshape(-1)
    time = lambda curve, goal: measures.emergence_time(jnp.asarray(taus(config)), curve, goal, criterion=config.criterion)
    tau_star, rising = jax.vmap(time)(flat, goals)
    return tau_star.reshape(curves.shape[:-1]), rising.reshape(curves.shape[:-1])


def circulant_rate_ratio(config: Config, sigma: float = 1.0) -> np.ndarray:
    """Measured ``rate(circulant) / rate(full linear)`` per Fourier mode, both trained from zero
    at noise level ``sigma`` on the same stationary data (half-relaxation times of the weights)."""
    data = stationary(config)
    dense = jnp.geomspace(config.tau_min * 1e-2, config.tau_max, 400)

    @partial(jax.jit, static_argnums=0)
    def half_times(model):
        loss = lambda params: population_loss(model.affine, params, data.mean, data.covariance, sigma)
        flow = quadratic_gradient_flow(loss, model.init(jax.random.key(0), 0.0), eta=config.eta)
        curves = jax.vmap(lambda t: measures.mode_variances(model.affine(flow(t))[0], data.basis))(dense)
        return jax.vmap(measures.half_relaxation_time, in_axes=(None, 1))(dense, curves)

    return np.asarray(half_times(Linear(config.num_modes)) / half_times(Circulant(config.num_modes)))


# ----------------------------------------------------------------------------- the study


def run(config: Config = PRESETS["quick"]) -> xr.Dataset:
    """Simulate and predict every family; return one labelled dataset (see module docstring)."""
    config = validate(config)
    with jax.enable_x64(True):
        return _run(config)


def _run(config: Config) -> xr.Dataset:
    families = list(config.families)
    sim = {family: simulate(config, family) for family in families}
    pred = {family: theory(config, family) for family in families}
    seeds = config.seeds

    def both(family, field):
        simulated = np.asarray(getattr(sim[family], field))
        predicted = np.broadcast_to(np.asarray(getattr(pred[family], field))[:, None], simulated.shape)
        return np.stack([predicted, simulated])

    lam = np.stack([np.asarray(stationary(config).eigenvalues) if f in CONVOLUTIONAL else spectrum(config) for f in families])
    variance = np.stack([both(f, "variance") for f in families], axis=1)
    weight = np.stack([both(f, "weight") for f in families], axis=1)
    sampled = np.stack([np.asarray(sim[f].sampled) for f in families])
    target = jnp.asarray(lam)[None, :, None, None, :]
    tau_star, rising = emergence(config, jnp.asarray(variance), target)

    dims = ("source", "family", "q", "seed")
    coords = {
        "source": ["theory", "simulation"],
        "family": families,
        "q": list(config.q),
        "seed": np.arange(seeds),
        "tau": taus(config),
        "sigma": list(config.weight_sigmas),
        "mode": np.arange(config.num_modes),
        "lam": (("family", "mode"), lam),
    }
    dataset = xr.Dataset(
        {
            "variance": (dims + ("tau", "mode"), variance),
            "weight": (dims + ("sigma", "tau", "mode"), weight),
            "variance_sampled": (("family", "q", "seed", "tau", "mode"), sampled),
            "emergence_time": (dims + ("mode",), np.asarray(tau_star)),
            "rising": (dims + ("mode",), np.asarray(rising)),
        },
        coords=coords,
        attrs={
            "experiment": NAME,
            "config": repr(dataclasses.asdict(config)),
            "conventions": "EDM sigma time; loss summed over dims, un-halved; tau = learning rate x steps",
            "source_reference": "Wang & Pehlevan, arXiv 2503.03206 (NeurIPS 2025), sec. 3-5",
        },
    )
    dataset["variance"].attrs["long_name"] = "generated variance per data mode (PF-ODE)"
    dataset["weight"].attrs["long_name"] = "per-mode weight Re u_k^H A u_k of the denoiser"
    dataset["variance_sampled"].attrs["long_name"] = f"variance of {config.num_samples} PF-ODE samples"
    if "circulant" in families:
        dataset["circulant_rate_ratio"] = (("freq",), circulant_rate_ratio(config))
        dataset["circulant_rate_ratio"].attrs["expected"] = config.num_modes
    return dataset


def summary(dataset: xr.Dataset, config: Config) -> dict:
    """Headline numbers per family: fitted exponents, deviations, and the circulant rate ratio."""
    reference = int(np.argmin(np.abs(np.asarray(config.q) - config.q_reference)))
    result: dict = {"q_reference": float(config.q[reference]), "families": {}}
    for family in dataset.family.values:
        by_q = [_fits(dataset.sel(family=family).isel(q=index)) for index in range(len(config.q))]
        fits = by_q[reference]
        direction = max(("rising", "decaying"), key=lambda d: fits["simulation"][d]["n_modes"])
        chosen = dataset.sel(family=family)
        deviation = np.abs(chosen.variance.sel(source="simulation") / chosen.variance.sel(source="theory") - 1)
        sampled_dev = np.abs(chosen.variance_sampled / chosen.variance.sel(source="simulation") - 1)
        result["families"][str(family)] = {
            "direction": direction,
            "alpha_theory": _finite(fits["theory"][direction]["alpha"]),
            "alpha_simulation": _finite(fits["simulation"][direction]["alpha"]),
            "r2_simulation": _finite(fits["simulation"][direction]["r2"]),
            "n_modes": fits["simulation"][direction]["n_modes"],
            "max_rel_dev": _finite(float(deviation.max())),
            "max_rel_dev_sampled": _finite(float(sampled_dev.max())),
            "fits": fits,
            "fits_by_q": {str(q): fit for q, fit in zip(config.q, by_q)},
        }
    if "circulant_rate_ratio" in dataset:
        ratio = dataset.circulant_rate_ratio.values
        result["circulant_rate_ratio"] = {
            "expected": int(dataset.circulant_rate_ratio.attrs["expected"]),
            "median": float(np.median(ratio)),
            "min": float(ratio.min()),
            "max": float(ratio.max()),
        }
    return result


def _fits(one: xr.Dataset) -> dict:
    """Power-law fits of theory and simulation for one family and one Q (seeds pooled)."""
    fits = {}
    for source in ("theory", "simulation"):
        sub = one.sel(source=source)
        initial = sub.variance.isel(tau=0)
        fits[source] = measures.fit_power_law(
            np.broadcast_to(one.lam.values, initial.shape).ravel(),
            sub.emergence_time.values.ravel(),
            initial.values.ravel(),
            sub.rising.values.ravel(),
        )
    return fits


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


# ----------------------------------------------------------------------------- sweeps

SCAN_TRACED = ("eta", "q", "lam_min", "lam_max")  # vary inside one compiled sweep program


def validate_sweep(config: Config, fields: tuple[str, ...]) -> None:
    """Grid checks beyond :func:`validate`: one init scale per run, and spectrum end points only
    for the log-spaced spectrum."""
    if "q" not in fields and len(config.q) > 1:
        raise ConfigError(f"q: a sweep runs one init scale per run; sweep it with --grid q=... or give one value, got {config.q}")
    swept_ends = [field for field in ("lam_min", "lam_max") if field in fields]
    if swept_ends and (config.spectrum or config.covariance):
        raise ConfigError(f"{swept_ends[0]}: cannot be swept when a spectrum or covariance is given")


def scan_workload(config: Config) -> Workload:
    """One run of the study for :func:`dynamics.sweep.sweep`: every family at one init scale
    and one seed, simulation and theory side by side.

    The traced fields (:data:`SCAN_TRACED`) arrive as scalars; the key is the one that
    :func:`simulate` gives seed ``s`` (``fold_in(key(seed), s)``), so a sweep run equals the
    corresponding run of :func:`run`. Outputs: ``variance[source, family, tau, mode]``,
    ``emergence_time`` and ``rising[source, family, mode]``, ``lam[family, mode]`` and, with
    ``num_samples > 0``, ``variance_sampled[family, tau, mode]``.
    """
    families = list(config.families)

    def run_one(key, values):
        traced = with_values(config, values)
        simulated = [simulate_run(traced, family, traced.q[0], key) for family in families]
        predicted = [theory(traced, family).variance[0] for family in families]
        lam = jnp.stack([stationary(traced).eigenvalues if f in CONVOLUTIONAL else spectrum(traced) for f in families])
        variance = jnp.stack([jnp.stack(predicted), jnp.stack([sim.variance for sim in simulated])])
        tau_star, rising = emergence(traced, variance, lam[None, :, :])
        outputs = {"variance": variance, "emergence_time": tau_star, "rising": rising, "lam": lam}
        if config.num_samples:
            outputs["variance_sampled"] = jnp.stack([sim.sampled for sim in simulated])
        return outputs

    per_mode = ("source", "family", "mode")
    return Workload(
        run=run_one,
        dims={
            "variance": ("source", "family", "tau", "mode"),
            "emergence_time": per_mode,
            "rising": per_mode,
            "lam": ("family", "mode"),
            "variance_sampled": ("family", "tau", "mode"),
        },
        coords={"source": np.array(["theory", "simulation"]), "family": np.array(families), "tau": taus(config)},
        divergence_outputs=("variance", "variance_sampled") if config.num_samples else ("variance",),  # emergence: NaN if never
    )


# ----------------------------------------------------------------------------- reporting


def summary_markdown(result: dict) -> str:
    """The measured-vs-predicted table of :func:`summary` as markdown."""
    show = lambda value, digits=3: "n/a" if value is None else f"{value:.{digits}g}"
    lines = [
        f"# spectral-bias: emergence law tau* ~ lambda^-alpha (Q = {result['q_reference']})",
        "",
        "| family | modes fitted | alpha theory | alpha simulation | R^2 | max rel. dev. (exact PF-ODE) | max rel. dev. (samples vs exact) |",
        "|---|---|---|---|---|---|---|",
    ]
    for family, row in result["families"].items():
        lines.append(
            f"| {family} | {row['n_modes']} ({row['direction']}) | {show(row['alpha_theory'], 4)} | "
            f"{show(row['alpha_simulation'], 4)} | {show(row['r2_simulation'], 4)} | "
            f"{show(row['max_rel_dev'])} | {show(row['max_rel_dev_sampled'])} |"
        )
    if "circulant_rate_ratio" in result:
        ratio = result["circulant_rate_ratio"]
        lines += [
            "",
            f"Measured rate ratio circulant / full linear model at sigma = 1, per Fourier mode "
            f"(N = {ratio['expected']} pixels, theory N): median {ratio['median']:.4g}, range "
            f"[{ratio['min']:.4g}, {ratio['max']:.4g}].",
        ]
    lines += [
        "",
        "alpha: minus the OLS slope of log tau* on log lambda (emergence at the geometric/harmonic mean"
        " of initial and target variance; gray zone 0.5x-2x excluded). 'n/a': no closed form.",
    ]
    return "\n".join(lines) + "\n"


def plot(dataset: xr.Dataset, config: Config) -> dict:
    """Figures: weights at sigma = 1, variance trajectories, and tau* vs lambda with fits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = int(np.argmin(np.abs(np.asarray(config.q) - config.q_reference)))
    sub = dataset.isel(q=reference, seed=0)
    families = list(dataset.family.values)
    sigma_one = float(sub.sigma.values[np.argmin(np.abs(np.log(sub.sigma.values)))])

    def grid(title):
        figure, axes = plt.subplots(1, len(families), figsize=(3.6 * len(families), 3.2), squeeze=False)
        figure.suptitle(title)
        return figure, axes[0]

    def curves(axis, theory_values, simulated, lam):
        colours = plt.cm.viridis(np.linspace(0, 1, lam.size))
        for mode in range(lam.size):
            axis.plot(dataset.tau, theory_values[:, mode], color=colours[mode], lw=1)
            axis.plot(dataset.tau, simulated[:, mode], "o", color=colours[mode], ms=2.5)
        axis.set_xscale("log")

    weights, weight_axes = grid(f"per-mode weight at sigma = {sigma_one:g} (lines: theory, dots: simulation)")
    variances, variance_axes = grid("generated variance per mode (lines: theory, dots: simulation)")
    laws, law_axes = grid("emergence time vs data variance")
    for index, family in enumerate(families):
        one = sub.sel(family=family)
        lam = one.lam.values
        weight = one.weight.sel(sigma=sigma_one)
        curves(weight_axes[index], weight.sel(source="theory").values, weight.sel(source="simulation").values, lam)
        curves(variance_axes[index], one.variance.sel(source="theory").values, one.variance.sel(source="simulation").values, lam)
        variance_axes[index].set_yscale("log")
        for source, marker in (("theory", "s"), ("simulation", "o")):
            tau_star = dataset.emergence_time.sel(family=family, source=source).isel(q=reference).values
            law_axes[index].loglog(np.broadcast_to(lam, tau_star.shape).ravel(), tau_star.ravel(), marker, ms=4, mfc="none", label=source)
        for axes in (weight_axes, variance_axes, law_axes):
            axes[index].set_title(family)
            axes[index].set_xlabel("tau" if axes is not law_axes else "lambda")
    law_axes[0].set_ylabel("tau*")
    law_axes[0].legend()
    for figure in (weights, variances, laws):
        figure.tight_layout()
    return {"weights": weights, "variance": variances, "emergence": laws}
