"""Theory of the random-features score model: Gaussian equivalence, the spectrum of ``U``, time
scales, and closed-form loss curves ([BUBM] sec. 3-4 and app., docs/theory.md section 7).

Model and conventions as in :mod:`diffdyn.models.denoisers.random_features`: OU time ``t``,
``Delta_t = 1 - e^-2t``, ``s_A(x) = (A/sqrt(p)) g(W x/sqrt(d))``, loss per dimension, gradient
flow with ``tau = k eta / d^2`` and rates ``2 Delta_t lambda / psi_p`` for the eigenvalues
``lambda`` of ``U``. Data: isotropic Gaussian ``x0 ~ N(0, sx^2 I)``.

Gaussian equivalence ([BUBM] app., docs/theory.md section 7). With ``c = e^-t sx``,
``Gamma_t^2 = c^2 + Delta_t`` and ``u, v, w, z`` iid ``N(0, 1)``:
``a_t = E[g(c u + sqrt(Delta_t) v) u] / c``, ``b_t = E[g(c u + sqrt(Delta_t) v) v]``,
``v_t^2 = E[g(c u + sqrt(Delta_t) v) g(c u + sqrt(Delta_t) w)] - m_t^2 - a_t^2 c^2``,
``s_t^2 = E[g(Gamma_t z)^2] - m_t^2 - a_t^2 c^2 - v_t^2 - b_t^2`` where ``m_t = E[g(Gamma_t z)]``
(zero for odd ``g`` such as ``tanh``: docs/theory.md's formula; for other ``g`` the mean only
adds a rank-one spike to ``U``, so it is removed here). Then, with ``W`` normalised by
``1/sqrt(d)``, ``U`` has the spectrum of
``U_GE = (1/n) G G^T + b_t^2 W W^T / d + s_t^2 I``, ``G = a_t c W X / sqrt(d) + v_t Omega``
(``X`` the ``d x n`` standardised data, ``Omega`` a ``p x n`` standard Gaussian matrix).

Spectral density (**reconstruction**). [BUBM] solve saddle-point equations for the Stieltjes
transform of ``U`` for a general data covariance. For isotropic data this module uses instead an
equivalent one-scalar form derived here: conditionally on ``W`` the columns of ``G`` are iid
with covariance ``C = kappa M + v_t^2 I`` (``M = W W^T/d``, ``kappa = a_t^2 c^2``), so the
deterministic equivalent of a sample covariance plus a commuting matrix
``B = b_t^2 M + s_t^2 I`` (Silverstein-Bai) gives
``q(z) = (1/p) Tr (U - z)^-1 = int rho_M(mu) dmu / (alpha + beta mu)``,
``alpha = s_t^2 - z + v_t^2/(1 + delta)``, ``beta = b_t^2 + kappa/(1 + delta)``,
``delta = (psi_p/psi_n) int rho_M(mu) (kappa mu + v_t^2) / (alpha + beta mu) dmu``,
with ``rho_M`` the Marchenko-Pastur law of ratio ``psi_p`` (closed-form Stieltjes transform).
It is solved by damped fixed-point iteration from a large imaginary part down to the real axis;
``rho(lambda) = Im q(lambda + i0) / pi``. The tests check it against the eigenvalues of the
Gaussian-equivalent matrix and of the Monte Carlo ``U``.

Time scales (docs/theory.md section 7): the flow relaxes an eigendirection of ``U`` at rate
``2 Delta_t lambda / psi_p``; ``tau_mem = psi_p / (Delta_t lambda_min(rho_1))`` (the training-set
bulk ``rho_1`` whose edges are ``s_t^2 + v_t^2 (1 -+ sqrt(psi_p/psi_n))^2``), proportional to
``n`` when ``psi_p >> psi_n``; ``tau_gen = psi_p / (Delta_t lambda_2)`` with ``lambda_2`` the
mean of the population bulk ``rho_2`` (of order ``psi_p``), so ``tau_gen ~ 1/Delta_t``,
independent of ``n``.

[BUBM] T. Bonnaire, R. Urfin, G. Biroli, M. Mezard, "Why Diffusion Models Don't Memorize: The
Role of Implicit Dynamical Regularization in Training", arXiv 2505.17638.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from diffdyn.dynamics.schedules import vp_noise_variance, vp_signal_scale
from diffdyn.dynamics.validation import require_choice

HERMITE_NODES = 64

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "erf": jsp.erf,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda z: z,
}
"""Elementwise activations ``g`` of the random features, by name; ``tanh`` is [BUBM]'s."""


def activation_function(name: str) -> Callable[[Array], Array]:
    """The activation called ``name`` (a :class:`~diffdyn.dynamics.validation.ConfigError` otherwise)."""
    return ACTIVATIONS[require_choice("activation", name, ACTIVATIONS)]


def marginal_variance(t: ArrayLike, data_std: ArrayLike = 1.0) -> Float[Array, "..."]:
    """``Gamma_t^2 = e^-2t sx^2 + Delta_t``: the variance of ``x_t`` per coordinate for data
    ``x0 ~ N(0, sx^2 I)``; the exact score is ``-x / Gamma_t^2``."""
    return jnp.square(vp_signal_scale(t) * data_std) + vp_noise_variance(t)


class EquivalenceConstants(NamedTuple):
    """Gaussian-equivalence constants of one activation at one time (see the module docstring)."""

    a: Float[Array, "..."]
    b: Float[Array, "..."]
    v2: Float[Array, "..."]
    s2: Float[Array, "..."]
    mean: Float[Array, "..."]
    signal2: Float[Array, "..."]  # c^2 = e^-2t sx^2


def _hermite_rule(num: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes and weights normalised to ``E_{z ~ N(0,1)}``."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(num)
    return nodes, weights / weights.sum()


@partial(jax.jit, static_argnames=("activation", "num_nodes"))
def equivalence_constants(t: ArrayLike, data_std: ArrayLike = 1.0, activation: str = "tanh", num_nodes: int = HERMITE_NODES) -> EquivalenceConstants:
    """``a_t, b_t, v_t^2, s_t^2`` (and ``m_t``, ``c^2``) by Gauss-Hermite quadrature (docs/theory.md section 7).

    Uses ``num_nodes`` nodes per Gaussian variable (2-d product rule for ``v_t^2``); exact for
    polynomial ``g`` of degree ``< num_nodes``, and for ``tanh`` at ``num_nodes = 64`` accurate
    to ~1e-10. Pure ``jax.numpy`` in ``t`` and ``data_std`` (differentiable, vmappable).
    """
    g = activation_function(activation)
    nodes, weights = (jnp.asarray(a) for a in _hermite_rule(num_nodes))
    signal = vp_signal_scale(t) * jnp.asarray(data_std)
    noise = jnp.sqrt(vp_noise_variance(t))
    gamma = jnp.sqrt(jnp.square(signal) + jnp.square(noise))
    values = g(gamma * nodes)
    mean = jnp.sum(weights * values)
    # E[g(c u + sqrt(D) v) u] = (c / Gamma) E[g(Gamma z) z]; likewise for v with sqrt(D)
    slope = jnp.sum(weights * values * nodes) / gamma
    a, b = slope, slope * noise
    conditional = g(signal * nodes[:, None] + noise * nodes[None, :]) @ weights  # E_v g | u
    second = jnp.sum(weights * jnp.square(conditional))
    v2 = second - jnp.square(mean) - jnp.square(a * signal)
    s2 = jnp.sum(weights * jnp.square(values)) - jnp.square(mean) - jnp.square(a * signal) - v2 - jnp.square(b)
    return EquivalenceConstants(a, b, v2, s2, mean, jnp.square(signal))


def training_bulk_edges(constants: EquivalenceConstants, psi_p, psi_n) -> tuple[float, float]:
    """docs/theory.md section 7 edges of ``rho_1``: ``s_t^2 + v_t^2 (1 -+ sqrt(psi_p/psi_n))^2`` (the
    Marchenko-Pastur edges of ``v_t^2 Omega Omega^T / n`` shifted by ``s_t^2``; the exact
    edges of the full model come from :func:`spectral_density`)."""
    root = np.sqrt(psi_p / psi_n)
    s2, v2 = float(constants.s2), float(constants.v2)
    return s2 + v2 * (1 - root) ** 2, s2 + v2 * (1 + root) ** 2


def population_bulk_edges(constants: EquivalenceConstants, psi_p) -> tuple[float, float]:
    """Leading-order edges of the population bulk ``rho_2`` (``d`` eigenvalues, scale ``psi_p``):
    ``s_t^2 + v_t^2 + (a_t^2 c^2 + b_t^2) (sqrt(psi_p) -+ 1)^2``, the nonzero Marchenko-Pastur
    spectrum of ``(a_t^2 c^2 + b_t^2) W W^T / d`` shifted by the isotropic parts; exact as
    ``psi_n -> infinity`` (at finite ``psi_n`` the bulk widens, see :func:`spectral_density`)."""
    scale = float(constants.a**2 * constants.signal2 + constants.b**2)
    shift = float(constants.s2 + constants.v2)
    return shift + scale * (np.sqrt(psi_p) - 1) ** 2, shift + scale * (np.sqrt(psi_p) + 1) ** 2


def time_scales(constants: EquivalenceConstants, t, psi_p, psi_n) -> dict[str, float]:
    """Predicted ``tau_gen`` and ``tau_mem`` (docs/theory.md section 7, [BUBM] sec. 4).

    ``tau_mem = psi_p / (Delta_t lambda_min(rho_1))`` with the docs/theory.md edge of
    :func:`training_bulk_edges`, and ``tau_mem_exact_edge`` the same with the lower edge of
    ``rho_1`` from the solved density (:func:`bulk_edges`). ``tau_gen = psi_p ln 2 / (4 Delta_t
    lambda_2)`` with ``lambda_2 = s_t^2 + v_t^2 + (a_t^2 c^2 + b_t^2) psi_p`` the mean of ``rho_2``:
    a population mode's weight error decays as ``exp(-2 Delta_t lambda tau / psi_p)``, its
    squared error (the score error) as the square of that, so the error makes half of its drop at
    this time (the definition of :func:`diffdyn.dynamics.measures.generalization_time`); ``~ 1/Delta_t``
    and independent of ``n``.
    """
    delta = float(vp_noise_variance(t))
    low, _ = training_bulk_edges(constants, psi_p, psi_n)
    exact_low = bulk_edges(constants, psi_p, psi_n)[0][0]
    mean_population = float(constants.s2 + constants.v2 + (constants.a**2 * constants.signal2 + constants.b**2) * psi_p)
    return {
        "tau_gen": psi_p * np.log(2.0) / (4.0 * delta * mean_population),
        "tau_mem": psi_p / (delta * low),
        "tau_mem_exact_edge": psi_p / (delta * exact_low),
        "lambda_min_rho1": low,
        "lambda_min_rho1_exact": exact_low,
        "lambda_mean_rho2": mean_population,
    }


@partial(jax.jit, static_argnames=("num_points",))
def gaussian_equivalent_matrix(key: jax.Array, W: Float[Array, "p d"], constants: EquivalenceConstants, num_points: int) -> Float[Array, "p p"]:
    """One draw of ``U_GE = (1/n) G G^T + b_t^2 W W^T/d + s_t^2 I`` with
    ``G = a_t c W X/sqrt(d) + v_t Omega`` (``X``: ``d x n``, ``Omega``: ``p x n``, standard
    Gaussian; ``n = num_points``): the matrix whose spectrum :func:`spectral_density` describes
    ([BUBM] app., docs/theory.md section 7). Differs from the true ``U`` by the higher Hermite orders of ``g``,
    which the Gaussian equivalence neglects (they matter once ``p`` is comparable to ``d^2/2``)."""
    p, d = W.shape
    data_key, noise_key = jax.random.split(key)
    X = jax.random.normal(data_key, (d, num_points), W.dtype)
    Omega = jax.random.normal(noise_key, (p, num_points), W.dtype)
    G = _equivalent_columns(W, X, Omega, constants)
    return G @ G.T / num_points + constants.b**2 * W @ W.T / d + constants.s2 * jnp.eye(p, dtype=W.dtype)


def _equivalent_columns(W: Float[Array, "p d"], X: Float[Array, "d n"], Omega: Float[Array, "p n"], constants: EquivalenceConstants) -> Float[Array, "p n"]:
    """``G = a_t c W X / sqrt(d) + v_t Omega``: the noise-averaged features of the training points
    in the Gaussian-equivalent model (``X`` standardised data, ``c = e^-t sx``)."""
    return constants.a * jnp.sqrt(constants.signal2) * W @ X / jnp.sqrt(W.shape[1]) + jnp.sqrt(constants.v2) * Omega


class EquivalentStatistics(NamedTuple):
    """The Gaussian-equivalent model's training and population statistics restricted to the
    ``k = d + n`` dimensional span of ``[W, Omega]`` (orthonormal basis ``Q_k``): ``U``, ``V``
    of the training set and the population ``U``, ``V``, ``phi_x = E[phi x_t^T]``, each as
    ``Q_k^T (.) [Q_k]``."""

    U: Float[Array, "k k"]
    V: Float[Array, "k d"]
    population_U: Float[Array, "k k"]
    population_V: Float[Array, "k d"]
    phi_x: Float[Array, "k d"]


@jax.jit
def equivalent_statistics(
    W: Float[Array, "p d"], X: Float[Array, "d n"], Omega: Float[Array, "p n"], constants: EquivalenceConstants, t: ArrayLike
) -> EquivalentStatistics:
    """The statistics of the Gaussian-equivalent model (the model docs/theory.md section 7's spectrum and time
    scales describe) in its ``(d + n)``-dimensional invariant subspace, for any ``psi_p``.

    Training: ``U = (1/n) G G^T + b_t^2 W W^T/d + s_t^2 I`` (:func:`gaussian_equivalent_matrix`,
    ``G`` from the standardised data ``X`` and the point-specific features ``Omega``) and
    ``V = E[phi xi^T] = b_t W/sqrt(d)``. Population (fresh ``x0`` and ``Omega``):
    ``U = (a_t^2 c^2 + b_t^2) W W^T/d + (v_t^2 + s_t^2) I``, ``V = b_t W/sqrt(d)`` and
    ``phi_x = a_t Gamma_t^2 W/sqrt(d)`` (Stein's lemma on the linear part). Every matrix is
    ``s_t^2 I`` or ``(v_t^2 + s_t^2) I`` off ``span[W, Omega]`` and ``V`` lies in it, so the
    gradient-flow weights' rows stay in it and the losses of the flow are exact in the
    ``k x k`` restriction: cost ``O(p k^2)`` and memory ``O(p k)`` instead of ``O(p^3)`` and
    ``O(p^2)``. Use with :func:`flow_spectrum` ``(U, V, num_features=p)``. As everywhere in this
    module the activation's mean ``m_t`` is removed (zero for ``tanh``); [BUBM] app., docs/theory.md section 7.
    With ``d + n >= p`` the subspace is the whole space (``k = p``, the matrices as they are).
    """
    d = W.shape[1]
    coordinates = _span_coordinates(jnp.concatenate([W, Omega], axis=1))  # Q^T [W, Omega]
    W_k = coordinates[:, :d]
    G_k = _equivalent_columns(W_k, X, coordinates[:, d:], constants)  # Q^T G: G is linear in (W, Omega)
    M_k, identity = W_k @ W_k.T / d, jnp.eye(W_k.shape[0], dtype=W.dtype)
    V = constants.b * W_k / jnp.sqrt(d)
    gamma2 = constants.signal2 + vp_noise_variance(t)
    return EquivalentStatistics(
        U=G_k @ G_k.T / X.shape[1] + constants.b**2 * M_k + constants.s2 * identity,
        V=V,
        population_U=(constants.a**2 * constants.signal2 + constants.b**2) * M_k + (constants.v2 + constants.s2) * identity,
        population_V=V,
        phi_x=constants.a * gamma2 * W_k / jnp.sqrt(d),
    )


def _span_coordinates(M: Float[Array, "p k"]) -> Float[Array, "j k"]:
    """``C = Q^T M`` for an orthonormal basis ``Q`` of the span of the columns of ``M``: the ``R``
    of ``M``'s QR, as the Cholesky factor of the Gram matrix ``M^T M`` (``M`` has full column rank
    when ``k < p``, as Gaussian ``[W, Omega]`` almost surely does). Its ``2 p k^2`` flops run as one
    matrix product (measured at ``p = 20480``, ``k = 660``: ~1.5 s against 20-30 s for LAPACK's
    Householder QR on this CPU); accurate to ``~cond(M)^2 eps``, ``cond(M) ~ (1 + sqrt(k/p)) /
    (1 - sqrt(k/p))`` for Gaussian ``M``. With ``k >= p`` the span is everything: ``Q = I``, ``C = M``."""
    p, k = M.shape
    if k >= p:
        return M
    return jnp.linalg.cholesky(M.T @ M).T


def _marchenko_pastur_stieltjes(zeta: np.ndarray, ratio: float) -> np.ndarray:
    """``int rho(mu) / (mu - zeta)`` for the law of ``Z Z^T / N`` (``P x N`` standard Gaussian
    ``Z``, ``ratio = P/N``), including its atom ``1 - 1/ratio`` at 0 when ``ratio > 1``.

    ``sqrt(zeta - l-) sqrt(zeta - l+)`` with principal roots puts the branch cut exactly on the
    support ``[l-, l+]``, so this is the physical sheet everywhere off it.
    """
    low, high = (1 - np.sqrt(ratio)) ** 2, (1 + np.sqrt(ratio)) ** 2
    root = np.sqrt(zeta - low) * np.sqrt(zeta - high)
    return (1 - ratio - zeta + root) / (2 * ratio * zeta)


def _resolvent_trace(z, delta, scalars, psi_p):
    """``(q, delta_integrand)``: ``int rho_M / (alpha + beta mu)`` and
    ``int rho_M (kappa mu + v^2) / (alpha + beta mu)``; ``scalars = (kappa, v^2, s^2, b^2)``."""
    kappa, v2, s2, b2 = scalars
    alpha = s2 - z + v2 / (1 + delta)
    beta = b2 + kappa / (1 + delta)
    q = _marchenko_pastur_stieltjes(-alpha / beta, psi_p) / beta
    weighted = (1 - alpha * q) / beta  # int rho_M mu / (alpha + beta mu)
    return q, kappa * weighted + v2 * q


def stieltjes_transform(
    z: np.ndarray,
    constants: EquivalenceConstants,
    psi_p: float,
    psi_n: float,
    *,
    iterations: int = 4000,
    damping: float = 0.5,
) -> np.ndarray:
    """``q(z) = (1/p) Tr (U - z)^-1`` of the Gaussian-equivalent ``U`` for complex ``z`` with
    ``Im z > 0`` (**reconstruction**, see the module docstring), by damped fixed-point
    iteration on ``delta``, continued from ``Im z + 10`` down to ``Im z`` in 20 stages of at
    most ``iterations / 20`` steps (a stage stops once ``delta`` changes by < 1e-13 relative).
    Near the real axis inside a bulk the contraction is slow: at ``Im z = 1e-9 Re z`` the default
    reaches ~1e-6 relative accuracy (measured against 20000 iterations)."""
    z = np.asarray(z, dtype=complex)
    delta = np.zeros_like(z)
    scalars = tuple(float(x) for x in (constants.a**2 * constants.signal2, constants.v2, constants.s2, constants.b**2))
    for lift in np.geomspace(10.0, 1e-8, 20):
        shifted = z + 1j * lift * (lift > 1e-7)
        for _ in range(iterations // 20):
            _, integrand = _resolvent_trace(shifted, delta, scalars, psi_p)
            updated = damping * delta + (1 - damping) * (psi_p / psi_n) * integrand
            converged = np.max(np.abs(updated - delta) / (1 + np.abs(delta))) < 1e-13
            delta = updated
            if converged:
                break
    return _resolvent_trace(z, delta, scalars, psi_p)[0]


def spectral_density(
    eigenvalue_grid: np.ndarray,
    constants: EquivalenceConstants,
    psi_p: float,
    psi_n: float,
    *,
    broadening: float = 1e-6,
) -> np.ndarray:
    """Density ``rho(lambda) = Im q(lambda + i eps) / pi`` of the eigenvalues of ``U``
    (normalised over all ``p`` eigenvalues; the atoms, e.g. at ``s_t^2`` when
    ``psi_p > psi_n + 1``, appear as narrow peaks of height ``~1/eps``: integrate
    :func:`spectral_mass` across them instead)."""
    grid = np.asarray(eigenvalue_grid, dtype=float)
    return np.imag(stieltjes_transform(grid + 1j * broadening, constants, psi_p, psi_n)) / np.pi


def noise_atom(constants: EquivalenceConstants, psi_p: float, psi_n: float) -> tuple[float, float]:
    """``(location, mass)`` of the atom of ``U_GE`` at ``s_t^2``: the ``max(p - n - d, 0)``
    directions orthogonal to both ``W`` and ``G`` (fraction ``1 - (psi_n + 1)/psi_p``)."""
    return float(constants.s2), max(0.0, 1.0 - (psi_n + 1.0) / psi_p)


def spectral_mass(edges: np.ndarray, constants: EquivalenceConstants, psi_p: float, psi_n: float) -> np.ndarray:
    """Fraction of the eigenvalues of ``U`` in each bin ``[edges[i], edges[i+1])``, atom included.

    The atom of :func:`noise_atom` is added to its bin and subtracted from ``q``; the rest,
    ``(1/pi) int_bin Im q_c(x + i0) dx``, is the contour integral of ``q_c`` around the rectangle
    over the bin of height ``h`` = half its width:
    ``(1/pi) [int Im q_c(x + ih) dx - int_0^h Re q_c(right + iy) dy + int_0^h Re q_c(left + iy) dy]``
    (Gauss-Legendre, 16 nodes per side), which stays away from the real axis.
    """
    edges = np.asarray(edges, dtype=float)
    location, mass = noise_atom(constants, psi_p, psi_n)
    continuous = lambda z: stieltjes_transform(z, constants, psi_p, psi_n) - mass / (location - z)
    nodes, weights = np.polynomial.legendre.leggauss(16)
    left, right = edges[:-1, None], edges[1:, None]
    width = right - left
    height = 0.5 * width
    top = np.imag(continuous(0.5 * (left + right) + 0.5 * width * nodes[None, :] + 1j * height)) @ weights * 0.5 * width[:, 0]
    y = 0.5 * height * (nodes[None, :] + 1)
    sides = np.real(continuous(np.concatenate([left + 1j * y, right + 1j * y]))) @ weights * 0.5 * np.concatenate([height, height])[:, 0]
    bins = edges.size - 1
    result = (top + sides[:bins] - sides[bins:]) / np.pi
    inside = (edges[:-1] <= location) & (location < edges[1:])
    return result + mass * inside


def spectrum_comparison(
    eigenvalues: Mapping[str, np.ndarray], constants: EquivalenceConstants, psi_p: float, psi_n: float, num_bins: int
) -> dict[str, Any] | None:
    """Histograms of named sets of eigenvalues of ``U`` against the theoretical density, on the host.

    Common bins: ``num_bins`` log-spaced between half the smallest positive and 1.5 times the
    largest eigenvalue of all sets (NaN entries, e.g. of failed runs, dropped). Returns ``edges``,
    ``theory`` (:func:`spectral_mass` per bin), per set its fraction of eigenvalues per bin, and
    ``distances``: ``{set}_l1`` (sum over bins of ``|fraction - theory|``) and ``{set}_ks`` (largest
    difference of the cumulative masses); None if no set has a positive eigenvalue."""
    sets = {name: np.asarray(values, float).ravel() for name, values in eigenvalues.items()}
    sets = {name: values[np.isfinite(values)] for name, values in sets.items()}
    pooled = np.concatenate(list(sets.values()))
    if not np.any(pooled > 0):
        return None
    edges = np.geomspace(0.5 * pooled[pooled > 0].min(), 1.5 * pooled.max(), num_bins + 1)
    mass = spectral_mass(edges, constants, psi_p, psi_n)
    fractions = {name: np.histogram(values, edges)[0] / values.size for name, values in sets.items()}
    distances = {}
    for name, fraction in fractions.items():
        distances[f"{name}_l1"] = float(np.abs(fraction - mass).sum())
        distances[f"{name}_ks"] = float(np.abs(np.cumsum(fraction - mass)).max())
    return {"edges": edges, "theory": mass, **fractions, "distances": distances}


def bulk_edges(constants: EquivalenceConstants, psi_p: float, psi_n: float, *, num: int = 1000, threshold: float = 1e-6) -> list[tuple[float, float]]:
    """Support of the continuous part of the theoretical density, as ``[(low, high), ...]`` in
    increasing order: normally ``rho_1`` (training points) then ``rho_2`` (population).

    The density is evaluated on ``num`` log-spaced points from ``1e-3 s_t^2`` to twice the upper
    population edge of :func:`population_bulk_edges`; a point belongs to the support where the
    mass per unit ``log lambda``, ``lambda rho(lambda)``, exceeds ``threshold``. Edges are
    accurate to the grid spacing (``~1.5%`` at the default ``num``); compare the docs/theory.md
    approximations :func:`training_bulk_edges`, :func:`population_bulk_edges`.
    """
    location, mass = noise_atom(constants, psi_p, psi_n)
    top = 2.0 * population_bulk_edges(constants, psi_p)[1]
    grid = np.geomspace(1e-3 * max(float(constants.s2), 1e-12), top, num)
    q = stieltjes_transform(grid + 1e-9j * grid, constants, psi_p, psi_n) - mass / (location - grid - 1e-9j * grid)
    inside = grid * np.imag(q) / np.pi > threshold
    changes = np.flatnonzero(np.diff(inside.astype(int))) + 1
    bounds = np.concatenate([[0] if inside[0] else [], changes, [num] if inside[-1] else []]).astype(int)
    return [(float(grid[start]), float(grid[stop - 1])) for start, stop in zip(bounds[0::2], bounds[1::2])]


class FlowSpectrum(NamedTuple):
    """Eigendecomposition of the training ``U`` with ``V`` projected on it: enough to evaluate
    any quadratic loss of the gradient-flow weights at any time without forming them.
    ``num_features`` is the model's ``p`` (it sets the rate ``2 Delta_t d lambda / p``): the size
    of ``U``, or larger when ``U`` is a restriction to an invariant subspace
    (:func:`equivalent_statistics`)."""

    eigenvalues: Float[Array, " k"]
    vectors: Float[Array, "k k"]
    projected: Float[Array, "k d"]  # vectors^T V
    num_features: ArrayLike


def full_eigenvalues(eigenvalues: Float[Array, " k"], num_features: int, s2: ArrayLike) -> Float[Array, " p"]:
    """All ``p = num_features`` eigenvalues of ``U`` (ascending) from those of its restriction to
    a ``k``-dim invariant subspace (:func:`equivalent_statistics`): the Gaussian-equivalent ``U`` is
    ``s_t^2 I`` on the ``p - k`` directions off it. ``k = p`` returns the eigenvalues sorted."""
    padding = jnp.full(num_features - eigenvalues.shape[0], s2, eigenvalues.dtype)
    return jnp.sort(jnp.concatenate([eigenvalues, padding]))


@jax.jit
def flow_spectrum(U: Float[Array, "k k"], V: Float[Array, "k d"], num_features: ArrayLike | None = None) -> FlowSpectrum:
    eigenvalues, vectors = jnp.linalg.eigh(U)
    return FlowSpectrum(eigenvalues, vectors, vectors.T @ V, U.shape[0] if num_features is None else num_features)


def flow_mode_weights(spectrum: FlowSpectrum, t: ArrayLike, taus: Float[Array, " k"]) -> Float[Array, "k p"]:
    """``w_i(tau) = [1 - exp(-(2 Delta_t/psi_p) lambda_i tau)] / lambda_i``: the gradient-flow
    weights are ``A(tau)/sqrt(p) = -(1/sqrt(Delta_t)) V^T Q diag(w(tau)) Q^T`` (docs/theory.md section 7)."""
    d = spectrum.projected.shape[1]
    rate = 2.0 * vp_noise_variance(t) * d / spectrum.num_features
    lam = spectrum.eigenvalues
    safe = jnp.where(lam == 0, 1.0, lam)
    exponent = rate * lam[None, :] * taus[:, None]
    return jnp.where(lam[None, :] == 0, rate * taus[:, None], -jnp.expm1(-exponent) / safe[None, :])


def flow_quadratic_curve(
    spectrum: FlowSpectrum,
    second: Float[Array, "p p"],
    cross: Float[Array, "p d"],
    weights: Float[Array, "k p"],
) -> tuple[Float[Array, " k"], Float[Array, " k"]]:
    """``(Tr(A^T A S)/(p d), Tr(A C)/(sqrt(p) d))`` along the flow for any statistics
    ``S = E[phi phi^T]`` (``p x p``) and ``C = E[phi y^T]`` (``p x d``), times ``Delta_t`` and
    ``-sqrt(Delta_t)`` respectively: with ``Y = Q^T V`` the answers are
    ``w^T [(Y Y^T) o (Q^T S Q)] w / d`` and ``w . diag(Q^T C Y^T) / d``. One ``p^3`` rotation, then
    ``O(p^2)`` per time.

    The quadratic form is contracted as ``sum((kernel @ w^T) o w^T, axis 0)``: the equal
    ``einsum("ki,ij,kj->k")`` (or ``sum((w @ kernel) o w, axis 1)``) is miscompiled by XLA on CPU
    (jax 0.10.2) for some shapes when ``kernel`` is computed in the same program, e.g. 141 or 281
    times with ``p`` in 150-256: relative errors up to 0.8 (regression test in
    ``tests/dynamics/theory/test_random_features.py``)."""
    Y, Q = spectrum.projected, spectrum.vectors
    d = Y.shape[1]
    kernel = (Y @ Y.T) * (Q.T @ second @ Q)
    linear = jnp.sum((Q.T @ cross) * Y, axis=1)
    return jnp.sum((kernel @ weights.T) * weights.T, axis=0) / d, weights @ linear / d


@jax.jit
def flow_loss_curve(spectrum: FlowSpectrum, U: Float[Array, "p p"], V: Float[Array, "p d"], t, taus) -> Float[Array, " k"]:
    """:func:`diffdyn.models.denoisers.random_features.quadratic_loss` of the gradient-flow weights at
    ``taus`` against the statistics ``U, V`` (the training set's: training loss; fresh data's:
    test loss): ``1 + (1/d) [w^T H w - 2 w . h]``."""
    quadratic, linear = flow_quadratic_curve(spectrum, U, V, flow_mode_weights(spectrum, t, taus))
    return 1.0 + quadratic - 2.0 * linear


@jax.jit
def flow_score_error_curve(spectrum: FlowSpectrum, phi_phi, phi_x, t, taus, data_std=1.0) -> Float[Array, " k"]:
    """:func:`diffdyn.models.denoisers.random_features.gaussian_score_error` of the gradient-flow weights
    at ``taus``: ``(1/d)[w^T H w / Delta_t - 2 w . h / (sqrt(Delta_t) Gamma_t^2)] + 1/Gamma_t^2``."""
    delta = vp_noise_variance(t)
    gamma2 = marginal_variance(t, data_std)
    quadratic, linear = flow_quadratic_curve(spectrum, phi_phi, phi_x, flow_mode_weights(spectrum, t, taus))
    return quadratic / delta - 2.0 * linear / (jnp.sqrt(delta) * gamma2) + 1.0 / gamma2
