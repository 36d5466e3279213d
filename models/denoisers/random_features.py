"""Random-features score model at one diffusion time ([BUBM] sec. 3, docs/theory.md section 7).

``s_A(x) = (A / sqrt(p)) g(W x / sqrt(d))`` with frozen Gaussian features ``W`` (``p x d``,
iid ``N(0, 1)``), trained second layer ``A`` (``d x p``, from ``A = 0``) and activation ``g``
(``tanh`` in [BUBM]; any entry of :data:`ACTIVATIONS`). ``psi_p = p / d``, ``psi_n = n / d``.

Conventions:

* Time: OU / VP time ``t`` (docs/theory.md section 1): ``x_t = e^-t x0 + sqrt(Delta_t) xi``,
  ``Delta_t = 1 - e^-2t`` (:func:`diffdyn.dynamics.schedules.vp_noise_variance`).
* Loss: the DSM loss per dimension of [BUBM] eq. (3),
  ``L(A) = (1/(d n)) sum_nu E_xi ||sqrt(Delta_t) s_A(x_t^nu) + xi||^2``, which equals the
  quadratic form :func:`quadratic_loss` in the feature statistics ``U, V`` of
  :func:`feature_statistics`. Its minimum is below 1; ``L(0) = 1``.
* Training time: plain gradient descent ``A <- A - eta grad_A L`` for ``k`` steps is at
  ``tau = k eta / d^2`` (docs/theory.md section 7), the time of :func:`gradient_flow_weights`, whose rates
  are ``2 Delta_t lambda / psi_p`` for the eigenvalues ``lambda`` of ``U``.

Feature statistics: :func:`feature_statistics` averages the noise by Monte Carlo (``num_noise``
draws per point); :func:`expected_feature_statistics` does the same average exactly (Mehler
expansion), which the closed-form flow should use (with Monte Carlo statistics it also fits the
particular noise draws); :func:`gaussian_population_statistics` gives the exact test statistics
of Gaussian data. :func:`training_statistics` bundles what a training run's :data:`CURVES`
(training loss, test loss, score error) need, for the features or for their Gaussian-equivalent
model at any ``p``; :func:`flow_curves` evaluates them along the closed-form flow,
:func:`weight_curves` for given weights (e.g. recorded by GD).

Bias (an extension of [BUBM]): every function that builds features accepts an optional frozen
bias ``b`` (``p``), ``phi = g(W x / sqrt(d) + b)``. Without it an odd ``g`` (``tanh``, ``erf``)
makes ``s_A`` odd, so a generator built on it produces a law symmetric under ``x -> -x``: a
memorizing model then puts as many samples on the mirror images ``-x^nu`` as on the training
points (measured at ``tau = inf`` in the setting of ``tests/models/test_random_features_generator.py``:
memorization fraction 0.29 without bias, 0.56 counting copies of mirror images; 0.67 with
``b ~ N(0, 1)``).

Generator (docs/theory.md sections 7-8, [BUBM] sec. 2; settings :class:`Generator`):
:func:`time_indexed_weights` trains one ``A`` per OU time node ``t_1 < ... < t_K`` (same ``W``
and ``b`` at every node) by the exact flow at a common training time ``tau``;
:class:`TimeIndexedScore` interpolates ``A`` linearly in ``log t`` between the nodes and is the
score that :func:`diffdyn.dynamics.sampling.vp_heun_sample` integrates.
``tau`` then sets how far the generated law has moved from the population towards the training
set; :func:`diffdyn.dynamics.measures.memorization_fraction` counts the copies.

Shapes are static: ``d``, ``p`` (hence ``psi_p``) and ``n`` (hence ``psi_n``) fix the array
shapes, so one compiled program serves one ``(d, p, n)``; seeds, ``t``, learning rates and the
data scale are traced and can be vmapped (:func:`make_monte_carlo_train`,
:func:`make_quadratic_train`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from diffdyn.dynamics.config import LogGrid, setting
from diffdyn.dynamics.sampling import interpolate_log_sigma, vp_gaussian_start, vp_heun_sample
from diffdyn.dynamics.schedules import vp_noise_variance, vp_signal_scale
from diffdyn.dynamics.theory.random_features import (  # ACTIVATIONS: re-exported, the names an activation may take
    ACTIVATIONS,  # noqa: F401
    FlowSpectrum,
    activation_function,
    equivalence_constants,
    equivalent_statistics,
    flow_loss_curve,
    flow_score_error_curve,
    flow_spectrum,
    marginal_variance,
)
from diffdyn.dynamics.training import make_train
from diffdyn.dynamics.validation import ConfigError


def sample_features(key: PRNGKeyArray, dim: int, num_features: int) -> Float[Array, "p d"]:
    """Frozen first-layer weights ``W`` (``num_features x dim``), iid ``N(0, 1)``."""
    return jax.random.normal(key, (num_features, dim))


def features(W: Float[Array, "p d"], x: Float[Array, " d"], activation: str = "tanh", bias: Float[Array, " p"] | None = None) -> Float[Array, " p"]:
    """``phi = g(W x / sqrt(d) + b)`` for ONE input ``x`` (``b = 0``, [BUBM], when ``bias`` is None)."""
    preactivation = W @ x / jnp.sqrt(W.shape[1])
    return activation_function(activation)(preactivation if bias is None else preactivation + bias)


def score(
    A: Float[Array, "d p"],
    W: Float[Array, "p d"],
    x: Float[Array, " d"],
    activation: str = "tanh",
    bias: Float[Array, " p"] | None = None,
) -> Float[Array, " d"]:
    """``s_A(x) = (A / sqrt(p)) g(W x / sqrt(d) + b)`` for ONE input ``x`` ([BUBM] eq. (4) at
    ``b = 0``; see the module docstring on the optional bias)."""
    return A @ features(W, x, activation, bias) / jnp.sqrt(W.shape[0])


def noised(x0: Float[Array, "... d"], xi: Float[Array, "... d"], t: ArrayLike) -> Float[Array, "... d"]:
    """OU state ``x_t = e^-t x0 + sqrt(Delta_t) xi``."""
    return vp_signal_scale(t) * x0 + jnp.sqrt(vp_noise_variance(t)) * xi


def _noise_draws(key: PRNGKeyArray, num_noise: int, x0: Float[Array, "n d"]) -> Float[Array, "m n d"]:
    """``num_noise`` noise draws for the points ``x0``, the same as :func:`feature_statistics`
    uses for the same ``key`` (so that the Monte Carlo loss and the statistics agree exactly)."""
    return jax.vmap(lambda k: jax.random.normal(k, x0.shape, x0.dtype))(jax.random.split(key, num_noise))


@partial(jax.jit, static_argnames=("num_noise", "activation"))
def feature_statistics(
    W: Float[Array, "p d"],
    x0: Float[Array, "n d"],
    t: ArrayLike,
    key: PRNGKeyArray,
    num_noise: int,
    activation: str = "tanh",
) -> tuple[Float[Array, "p p"], Float[Array, "p d"]]:
    """Monte Carlo feature statistics of the training set ``x0`` ([BUBM] eq. (5), docs/theory.md section 7).

    ``U = (1/n) sum_nu E_xi[phi phi^T]`` and ``V = (1/n) sum_nu E_xi[phi xi^T]`` with
    ``phi = g(W x_t^nu / sqrt(d))``, each ``E_xi`` replaced by the mean over ``num_noise``
    (static) independent noise draws per point. Memory ``O(n p + p^2)``: a ``lax.scan`` over
    the draws accumulates the sums, one ``n x p`` feature block at a time. Cost
    ``num_noise * n * p * (p + d)``. For the population ("test") statistics pass fresh data.
    """
    n = x0.shape[0]
    g = activation_function(activation)
    scale = jnp.sqrt(W.shape[1])

    def accumulate(sums, draw_key):
        xi = jax.random.normal(draw_key, x0.shape, x0.dtype)  # = _noise_draws(key, ...)[j]
        phi = g(noised(x0, xi, t) @ W.T / scale)
        return (sums[0] + phi.T @ phi, sums[1] + phi.T @ xi), None

    zeros = (jnp.zeros((W.shape[0],) * 2, x0.dtype), jnp.zeros(W.shape, x0.dtype))
    (uu, vv), _ = jax.lax.scan(accumulate, zeros, jax.random.split(key, num_noise))
    total = n * num_noise
    return uu / total, vv / total


def _hermite_projector(order: int, num_nodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes, weights (summing to 1) and ``weights * He_k(nodes)`` for
    ``k = 0..order`` (probabilists' Hermite, ``He_{k+1} = z He_k - k He_{k-1}``)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)
    weights = weights / weights.sum()
    hermite = [np.ones_like(nodes), nodes]
    for k in range(1, order):
        hermite.append(nodes * hermite[k] - k * hermite[k - 1])
    return nodes, weights, np.stack(hermite[: order + 1]) * weights[None, :]


def _noise_averaged_moments(W, points, signal_scale, noise_scale, g, order, num_nodes, block_size, bias=None):
    """``(M, m1)`` with ``M = mean_nu E_z[phi phi^T]`` and ``m1_i = mean_nu F_1(nu, i)`` for
    ``phi_i = g(a_i + c_i z_i)``, ``a_i = signal_scale w_i.x^nu/sqrt(d) + b_i``,
    ``c_i = noise_scale |w_i|/sqrt(d)``, ``z_i = w_i.xi/|w_i|`` (Mehler expansion, see
    :func:`expected_feature_statistics`)."""
    n, d = points.shape
    nodes, weights, projector = _hermite_projector(order, num_nodes)
    nodes, weights, projector = jnp.asarray(nodes), jnp.asarray(weights), jnp.asarray(projector)
    norms = jnp.linalg.norm(W, axis=1)
    spread = noise_scale * norms / jnp.sqrt(d)
    cosines = (W / norms[:, None]) @ (W / norms[:, None]).T
    num_blocks = -(-n // block_size)
    size = min(block_size, n)
    padded = jnp.zeros((num_blocks * size, d), points.dtype).at[:n].set(points)
    keep = (jnp.arange(num_blocks * size) < n).astype(points.dtype)

    def accumulate(sums, block):
        chunk, mask = block
        centre = signal_scale * chunk @ W.T / jnp.sqrt(d)  # (b, p)
        centre = centre if bias is None else centre + bias[None, :]
        values = g(centre[:, :, None] + spread[None, :, None] * nodes[None, None, :]) * mask[:, None, None]  # (b, p, Q)
        coefficients = jnp.einsum("bpq,kq->kbp", values, projector)  # F_k, (K+1, b, p)
        second, first, diagonal = sums
        power, factorial = jnp.ones_like(cosines), 1.0
        for k in range(order + 1):
            second = second + power / factorial * (coefficients[k].T @ coefficients[k])
            power, factorial = power * cosines, factorial * (k + 1)
        diagonal = diagonal + jnp.sum(jnp.square(values) @ weights, axis=0)
        return (second, first + jnp.sum(coefficients[1], axis=0), diagonal), None

    p = W.shape[0]
    zeros = (jnp.zeros((p, p), points.dtype), jnp.zeros(p, points.dtype), jnp.zeros(p, points.dtype))
    blocks = (padded.reshape(num_blocks, size, d), keep.reshape(num_blocks, size))
    (second, first, diagonal), _ = jax.lax.scan(accumulate, zeros, blocks)
    second = second - jnp.diag(jnp.diagonal(second)) + jnp.diag(diagonal)
    return second / n, first / n


@partial(jax.jit, static_argnames=("activation", "order", "num_nodes", "block_size"))
def expected_feature_statistics(
    W: Float[Array, "p d"],
    x0: Float[Array, "n d"],
    t: ArrayLike,
    activation: str = "tanh",
    *,
    order: int = 8,
    num_nodes: int = 48,
    block_size: int = 256,
    bias: Float[Array, " p"] | None = None,
) -> tuple[Float[Array, "p p"], Float[Array, "p d"]]:
    """``U`` and ``V`` of :func:`feature_statistics` with the noise average done exactly
    (Mehler expansion) instead of by Monte Carlo.

    With ``a_i = e^-t w_i.x0 / sqrt(d) + b_i`` (``b = bias``, 0 by default), ``c_i = sqrt(Delta_t/d) |w_i|`` and
    ``z_i = w_i.xi / |w_i|`` (standard normals with correlations ``r_ij = cos(w_i, w_j)``,
    independent of the data point), Mehler's formula gives
    ``E_xi[g(a_i + c_i z_i) g(a_j + c_j z_j)] = sum_k r_ij^k / k! F_k(i) F_k(j)`` with the Hermite
    coefficients ``F_k(i) = E_z[g(a_i + c_i z) He_k(z)]`` (Gauss-Hermite, ``num_nodes`` nodes). So
    ``U = sum_{k <= order} (R^{o k} / k!) o (F_k^T F_k / n)`` off the diagonal (truncation error
    ``~ max |r_ij|^(order+1)``, ``|r_ij| ~ d^-1/2``), the diagonal is ``mean_nu E_z[g^2]`` exactly,
    and ``V_i = mean_nu F_1(i) w_i / |w_i|`` (Stein). This removes the Monte Carlo noise of a
    finite ``num_noise``, which the flow would otherwise fit (memorising the noise draws on top of
    the training points); [BUBM]'s theory uses the exact average. Cost ``order * n * p^2``;
    memory ``O(block_size * p * (order + num_nodes) + p^2)`` (a scan over blocks of points).
    """
    g = activation_function(activation)
    U, first = _noise_averaged_moments(W, x0, vp_signal_scale(t), jnp.sqrt(vp_noise_variance(t)), g, order, num_nodes, block_size, bias)
    return U, first[:, None] * W / jnp.linalg.norm(W, axis=1, keepdims=True)


class PopulationStatistics(NamedTuple):
    """Exact statistics of Gaussian data ``x0 ~ N(0, sx^2 I)`` at time ``t`` (``x = x_t``):
    ``U = E[phi phi^T]``, ``V = E[phi xi^T]`` (test loss) and ``phi_x = E[phi x^T]`` (score error;
    ``E[phi phi^T]`` is ``U`` again)."""

    U: Float[Array, "p p"]
    V: Float[Array, "p d"]
    phi_x: Float[Array, "p d"]


@partial(jax.jit, static_argnames=("activation", "order", "num_nodes"))
def gaussian_population_statistics(
    W: Float[Array, "p d"],
    t: ArrayLike,
    data_std: ArrayLike = 1.0,
    activation: str = "tanh",
    *,
    order: int = 8,
    num_nodes: int = 48,
) -> PopulationStatistics:
    """Population ("test") statistics for Gaussian data, exact up to the Mehler truncation.

    ``x_t ~ N(0, Gamma_t^2 I)`` with ``Gamma_t^2 = e^-2t sx^2 + Delta_t``, so
    ``h_i = w_i.x_t/sqrt(d) = Gamma_i z_i`` (``Gamma_i = Gamma_t |w_i|/sqrt(d)``) and, with
    ``G_k(i) = E[g(Gamma_i z) He_k(z)]``: ``U = sum_k (R^{o k}/k!) o G_k G_k^T`` (diagonal exact),
    ``V_i = (sqrt(Delta_t)/Gamma_t) G_1(i) w_i/|w_i|`` and ``phi_x_i = Gamma_t G_1(i) w_i/|w_i|``
    (Stein's lemma). Cost ``order * p^2``: no sampling, so test losses and score errors carry no
    sampling error (the finite-sample alternative is :func:`feature_statistics` on fresh data).
    """
    gamma = jnp.sqrt(marginal_variance(t, data_std))
    g = activation_function(activation)
    origin = jnp.zeros((1, W.shape[1]), W.dtype)
    U, first = _noise_averaged_moments(W, origin, 0.0, gamma, g, order, num_nodes, 1)
    direction = first[:, None] * W / jnp.linalg.norm(W, axis=1, keepdims=True)
    return PopulationStatistics(U, jnp.sqrt(vp_noise_variance(t)) / gamma * direction, gamma * direction)


def quadratic_loss(A: Float[Array, "d p"], U: Float[Array, "p p"], V: Float[Array, "p d"], t: ArrayLike) -> Float[Array, ""]:
    """``L(A) = 1 + (Delta_t/d) Tr(A^T A U / p) + (2 sqrt(Delta_t)/d) Tr(A V / sqrt(p))``.

    The DSM loss per dimension (docs/theory.md section 7): the training loss with the training set's
    ``U, V``, the test loss with ``U, V`` of fresh population data.
    """
    d, p = A.shape
    delta = vp_noise_variance(t)
    quadratic = jnp.sum((A @ U) * A) / p
    linear = jnp.sum(A * V.T) / jnp.sqrt(p)
    return 1.0 + delta * quadratic / d + 2.0 * jnp.sqrt(delta) * linear / d


def gradient_flow_weights(U: Float[Array, "p p"], V: Float[Array, "p d"], t: ArrayLike, taus: Float[Array, " k"]) -> Float[Array, "k d p"]:
    """Exact gradient flow of :func:`quadratic_loss` from ``A = 0`` at times ``taus``.

    ``A(tau) / sqrt(p) = -(1/sqrt(Delta_t)) V^T U^-1 [I - exp(-(2 Delta_t / psi_p) U tau)]``
    (docs/theory.md section 7, [BUBM] eq. (7)) with ``tau = k eta / d^2``: plain gradient descent on
    :func:`quadratic_loss` with step ``eta`` for ``k`` steps converges to it as ``eta -> 0``
    (``A_k / sqrt(p) = B* [I - (I - 2 eta Delta_t U / (d p))^k]``). Evaluated in the
    eigenbasis of ``U``; ``[1 - exp(-r lambda tau)] / lambda`` is taken as ``r tau`` at
    ``lambda = 0``, so a singular ``U`` (``p > n num_noise``) is fine.
    """
    d, p = V.shape[1], V.shape[0]
    delta = vp_noise_variance(t)
    rate = 2.0 * delta * d / p
    eigenvalues, vectors = jnp.linalg.eigh(U)
    projected = vectors.T @ V  # (p, d)
    exponent = rate * eigenvalues[None, :] * taus[:, None]
    safe = jnp.where(eigenvalues == 0, 1.0, eigenvalues)
    weight = jnp.where(eigenvalues[None, :] == 0, rate * taus[:, None], -jnp.expm1(-exponent) / safe[None, :])
    # A(tau)^T / sqrt(p) = -(1/sqrt(Delta)) sum_i weight_i v_i (v_i^T V)
    transposed = jnp.einsum("pi,ki,id->kdp", vectors, weight, projected)
    return -jnp.sqrt(p / delta) * transposed


def time_indexed_weights(
    statistics: Callable[[Float[Array, ""]], tuple[Float[Array, "p p"], Float[Array, "p d"]]],
    times: Float[Array, " k"],
    taus: Float[Array, " m"],
) -> Float[Array, "m k d p"]:
    """Second layers ``A_k(tau)`` of the time-indexed score: for every OU time node ``t_k`` the
    exact gradient flow (:func:`gradient_flow_weights`, docs/theory.md section 7) from ``A = 0`` of the DSM
    loss with the training statistics ``statistics(t_k) -> (U, V)``, read at the common training
    times ``taus`` (``tau = k eta / d^2`` at every node; ``inf`` gives the least-squares
    minimum ``A / sqrt(p) = -V^T U^-1 / sqrt(Delta_t)``, which needs ``U`` positive definite:
    true of the exact noise averages, ``lambda_min ~ 1e-11 .. 1e-6`` in the tests).
    ``jax.vmap`` over the nodes (memory ``K (p^2 + m d p)``).

    ``statistics`` is normally the exact noise average over the training set ``x0`` with the
    same ``W`` and ``b`` at every node,
    ``lambda t: expected_feature_statistics(W, x0, t, activation, bias=b)``
    (Monte Carlo statistics would be fitted draw by draw). Node ``k`` relaxes at the rates
    ``2 Delta_{t_k} lambda / psi_p``: small ``t`` trains slowest, and the smallest eigenvalues of
    its ``U`` (the training points, [BUBM] ``rho_1``) set when the generator starts to copy."""

    def at_time(t):
        U, V = statistics(t)
        return gradient_flow_weights(U, V, t, taus)

    return jnp.moveaxis(jax.vmap(at_time)(times), 0, 1)


class TimeIndexedScore(eqx.Module):
    """``s(x, t) = (A(t) / sqrt(p)) g(W x / sqrt(d) + b)`` for ONE OU state ``x`` at time ``t``:
    ``A(t)`` interpolates the node weights linearly in ``log t``
    (:func:`diffdyn.dynamics.sampling.interpolate_log_sigma`, a generic log-grid interpolation) and is
    clamped to the end nodes outside ``[t_1, t_K]``. A pytree (``equinox.Module``; the
    activation name is static), so new weights reuse a compiled sampler."""

    weights: Float[Array, "k d p"]
    W: Float[Array, "p d"]
    times: Float[Array, " k"]
    bias: Float[Array, " p"] | None = None
    activation: str = eqx.field(static=True, default="tanh")

    def __call__(self, x: Float[Array, " d"], t: Float[Array, ""]) -> Float[Array, " d"]:
        A = interpolate_log_sigma(self.weights, self.times, t)
        return score(A, self.W, x, self.activation, self.bias)


@partial(jax.jit, static_argnames=("activation", "num_steps"))
def generate_samples(
    weights: Float[Array, "m k d p"],
    W: Float[Array, "p d"],
    times: Float[Array, " k"],
    x_start: Float[Array, "s d"],
    activation: str = "tanh",
    bias: Float[Array, " p"] | None = None,
    *,
    num_steps: int = 32,
) -> Float[Array, "m s d"]:
    """Samples of the time-indexed generator for every training time: ``weights[i]`` are the node
    weights at ``taus[i]`` (:func:`time_indexed_weights`), ``x_start`` OU states at
    ``t_max = times[-1]`` (e.g. :func:`diffdyn.dynamics.sampling.vp_gaussian_start`). Each sample is
    :func:`diffdyn.dynamics.sampling.vp_heun_sample` from ``t_max`` to ``t_min = times[0]``
    (``num_steps`` Karras levels, then Tweedie at ``t_min``): ``jax.vmap`` over the samples,
    ``lax.map`` over the taus. Memorization of the result: :func:`diffdyn.dynamics.measures.memorization_fraction`
    (nearest / second-nearest training-point distance < 1/3, [BUBM] sec. 2)."""

    def at_tau(node_weights):
        model = TimeIndexedScore(node_weights, W, times, bias, activation)
        one = lambda x: vp_heun_sample(model, x, t_max=times[-1], t_min=times[0], num_steps=num_steps)
        return jax.vmap(one)(x_start)

    return jax.lax.map(at_tau, weights)


@dataclass(frozen=True)
class Generator:
    """Settings of the time-indexed random-features generator of a study (docs/theory.md sections 7-8, [BUBM]
    sec. 2), shared by the studies that generate (``--generator.samples 64`` on the CLI)."""

    samples: int = setting(0, "generated samples per run for the memorization fraction (0: off)", low=0)
    taus: tuple[float, ...] = setting((1e2, 1e4, 1e6), "training times tau at which the generator is sampled", low=0.0, low_open=True)
    time: LogGrid = setting(LogGrid(0.01, 3.0, 6), "OU time nodes of the time-indexed score")
    steps: int = setting(32, "Heun levels of the probability-flow sampler", low=2)
    bias: float = setting(1.0, "std of the frozen feature bias (0: [BUBM]'s bias-free features)", low=0.0)

    def check(self, path: str) -> None:
        if not self.taus:
            raise ConfigError(f"{path}.taus: needs at least one value")


def sample_trained_generator(
    start_key: PRNGKeyArray,
    statistics: Callable[[Float[Array, ""]], tuple[Float[Array, "p p"], Float[Array, "p d"]]],
    W: Float[Array, "p d"],
    train: Float[Array, "n d"],
    times: Float[Array, " k"],
    taus: Float[Array, " m"],
    num_samples: int,
    activation: str = "tanh",
    bias: Float[Array, " p"] | None = None,
    *,
    num_steps: int = 32,
) -> Float[Array, "m s d"]:
    """``num_samples`` samples, for every training time ``taus[i]``, of the time-indexed generator
    trained on ``train`` (docs/theory.md sections 7-8, [BUBM] sec. 2): node weights by the exact gradient flow
    (:func:`time_indexed_weights` with the training statistics ``statistics(t)``), OU states at
    ``t_max = times[-1]`` from a Gaussian with the training set's mean and covariance
    (:func:`diffdyn.dynamics.sampling.vp_gaussian_start`, key ``start_key``; the same start for every
    ``tau``), then :func:`generate_samples`."""
    weights = time_indexed_weights(statistics, times, taus)
    start = vp_gaussian_start(start_key, jnp.mean(train, 0), jnp.cov(train.T), times[-1], num_samples)
    return generate_samples(weights, W, times, start, activation, bias, num_steps=num_steps)


def monte_carlo_loss(
    A: Float[Array, "d p"],
    W: Float[Array, "p d"],
    x0: Float[Array, "n d"],
    t: ArrayLike,
    key: PRNGKeyArray,
    num_noise: int = 1,
    activation: str = "tanh",
) -> Float[Array, ""]:
    """``(1/(d n m)) sum_nu sum_j ||sqrt(Delta_t) s_A(x_t^{nu j}) + xi^{nu j}||^2`` over
    ``m = num_noise`` fresh noise draws per training point: an unbiased estimate of
    :func:`quadratic_loss` (the DSM loss of docs/theory.md section 7)."""
    delta = vp_noise_variance(t)
    xi = _noise_draws(key, num_noise, x0)
    x_t = noised(x0[None, :, :], xi, t)
    phi = activation_function(activation)(x_t @ W.T / jnp.sqrt(W.shape[1]))
    residual = jnp.sqrt(delta) * phi @ A.T / jnp.sqrt(W.shape[0]) + xi
    return jnp.mean(jnp.sum(jnp.square(residual), axis=-1)) / x0.shape[1]


def make_monte_carlo_train(
    *,
    num_steps: int,
    record_steps,
    num_noise: int = 1,
    activation: str = "tanh",
    optimizer: str = "sgd",
):
    """``train(key, hparams)`` by :func:`diffdyn.dynamics.training.make_train` on :func:`monte_carlo_loss`
    with ``num_noise`` fresh noise draws per training point at every step (full batch of data).

    ``hparams``: ``W`` (``p x d``), ``x0`` (``n x d``), ``t`` and ``learning_rate``; all may be
    vmapped (seeds, ``t``, learning rates, data draws); ``d, p, n`` fix the shapes (one
    compilation per ``(d, p, n)``). ``A`` starts at 0. With ``optimizer="sgd"`` the time is
    ``tau = steps * learning_rate / d^2``; Adam is scale-free and its "time" is just the step.
    """

    def init(key, hparams):
        return {"A": jnp.zeros(hparams["W"].shape[::-1], hparams["W"].dtype)}

    def loss(params, key, hparams):
        return monte_carlo_loss(params["A"], hparams["W"], hparams["x0"], hparams["t"], key, num_noise, activation)

    return make_train(init, loss, num_steps=num_steps, record_steps=record_steps, optimizer=optimizer)


def make_quadratic_train(*, num_steps: int, record_steps, optimizer: str = "sgd"):
    """``train(key, hparams)``: full-batch descent on :func:`quadratic_loss` with fixed ``U, V``.

    ``hparams``: ``U`` (``p x p``), ``V`` (``p x d``), ``t``, ``learning_rate`` (vmappable).
    With ``"sgd"`` and ``tau = steps * learning_rate / d^2`` it converges to
    :func:`gradient_flow_weights` as the step goes to 0 (tested).
    """

    def init(key, hparams):
        V = hparams["V"]
        return {"A": jnp.zeros((V.shape[1], V.shape[0]), V.dtype)}

    def loss(params, key, hparams):
        return quadratic_loss(params["A"], hparams["U"], hparams["V"], hparams["t"])

    return make_train(init, loss, num_steps=num_steps, record_steps=record_steps, optimizer=optimizer)


def gaussian_score_statistics(
    W: Float[Array, "p d"],
    t: ArrayLike,
    key: PRNGKeyArray,
    num_samples: int,
    data_std: ArrayLike = 1.0,
    activation: str = "tanh",
) -> tuple[Float[Array, "p p"], Float[Array, "p d"]]:
    """Monte Carlo ``(E[phi phi^T], E[phi x^T])`` under ``P_t`` for Gaussian data
    ``x0 ~ N(0, data_std^2 I)``, i.e. ``x ~ N(0, Gamma_t^2 I)``, ``Gamma_t^2 = e^-2t sx^2 + Delta_t``;
    the inputs of :func:`gaussian_score_error`."""
    gamma = jnp.sqrt(marginal_variance(t, data_std))
    x = gamma * jax.random.normal(key, (num_samples, W.shape[1]), W.dtype)
    phi = activation_function(activation)(x @ W.T / jnp.sqrt(W.shape[1]))
    return phi.T @ phi / num_samples, phi.T @ x / num_samples


def gaussian_score_error(
    A: Float[Array, "d p"],
    phi_phi: Float[Array, "p p"],
    phi_x: Float[Array, "p d"],
    t: ArrayLike,
    data_std: ArrayLike = 1.0,
) -> Float[Array, ""]:
    """``(1/d) E||s_A(x) - grad log P_t(x)||^2`` as a quadratic form in ``A``, for Gaussian data
    (exact score ``-x / Gamma_t^2``) and the statistics of :func:`gaussian_score_statistics`:
    ``[Tr(A^T A E[phi phi^T]) / p + 2 Tr(A E[phi x^T]) / (sqrt(p) Gamma_t^2) + d / Gamma_t^2] / d``.
    """
    d, p = A.shape
    gamma2 = marginal_variance(t, data_std)
    quadratic = jnp.sum((A @ phi_phi) * A) / p
    cross = jnp.sum(A * phi_x.T) / jnp.sqrt(p)
    return (quadratic + 2.0 * cross / gamma2) / d + 1.0 / gamma2


def score_error(
    A: Float[Array, "d p"],
    W: Float[Array, "p d"],
    t: ArrayLike,
    key: PRNGKeyArray,
    num_samples: int,
    data_std: ArrayLike = 1.0,
    activation: str = "tanh",
) -> Float[Array, ""]:
    """Score error ``E_score = (1/d) E_{x ~ P_t} ||s_A(x) - grad log P_t(x)||^2`` (docs/theory.md section 7)
    for Gaussian data ``x0 ~ N(0, data_std^2 I)``, by Monte Carlo over ``num_samples`` points.
    For many ``A`` with the same ``W``, compute :func:`gaussian_score_statistics` once and call
    :func:`gaussian_score_error`."""
    statistics = gaussian_score_statistics(W, t, key, num_samples, data_std, activation)
    return gaussian_score_error(A, *statistics, t, data_std)


# ----------------------------------------------------------------------------- a training set's curves

CURVES = ("train_loss", "test_loss", "score_error")
"""The three curves of a training run (docs/theory.md section 7), in the order of :func:`flow_curves` and :func:`weight_curves`."""


class TrainingStatistics(NamedTuple):
    """What the losses of any second layer ``A`` need: the training set's ``U, V`` (training loss),
    the population statistics (test loss, score error) and the eigenbasis of ``U`` (the
    closed-form flow, :func:`diffdyn.dynamics.theory.random_features.flow_spectrum`)."""

    U: Float[Array, "k k"]
    V: Float[Array, "k d"]
    population: PopulationStatistics
    spectrum: FlowSpectrum


def training_statistics(
    W: Float[Array, "p d"],
    points: Float[Array, "n d"],
    t: ArrayLike,
    data_std: ArrayLike = 1.0,
    activation: str = "tanh",
    *,
    order: int = 8,
    omega: Float[Array, "p n"] | None = None,
) -> TrainingStatistics:
    """:class:`TrainingStatistics` of the training set ``data_std * points`` (``points``
    standardised, Gaussian data ``N(0, data_std^2 I)``).

    Without ``omega``: the features' statistics with the noise averaged exactly
    (:func:`expected_feature_statistics`, Hermite ``order``) and the exact population statistics
    (:func:`gaussian_population_statistics`); ``k = p``, cost ``order n p^2`` and a ``p x p``
    eigendecomposition. With the point-specific features ``omega``: docs/theory.md section 7's
    Gaussian-equivalent model restricted to its ``k = d + n`` dimensional invariant subspace
    (:func:`diffdyn.dynamics.theory.random_features.equivalent_statistics`), whose flow curves are exact
    for that model at any ``p`` for ``O(p k^2)``.
    """
    if omega is None:
        U, V = expected_feature_statistics(W, data_std * points, t, activation, order=order)
        population = gaussian_population_statistics(W, t, data_std, activation, order=order)
        return TrainingStatistics(U, V, population, flow_spectrum(U, V))
    restricted = equivalent_statistics(W, points.T, omega, equivalence_constants(t, data_std, activation), t)
    population = PopulationStatistics(restricted.population_U, restricted.population_V, restricted.phi_x)
    return TrainingStatistics(restricted.U, restricted.V, population, flow_spectrum(restricted.U, restricted.V, W.shape[0]))


def flow_curves(statistics: TrainingStatistics, t: ArrayLike, taus: Float[Array, " k"], data_std: ArrayLike = 1.0) -> Float[Array, "3 k"]:
    """:data:`CURVES` of the exact gradient flow from ``A = 0`` (:func:`gradient_flow_weights`) at
    ``taus``, evaluated in the eigenbasis of ``U`` without forming the weights."""
    spectrum, population = statistics.spectrum, statistics.population
    return jnp.stack(
        [
            flow_loss_curve(spectrum, statistics.U, statistics.V, t, taus),
            flow_loss_curve(spectrum, population.U, population.V, t, taus),
            flow_score_error_curve(spectrum, population.U, population.phi_x, t, taus, data_std),
        ]
    )


def weight_curves(weights: Float[Array, "k d p"], statistics: TrainingStatistics, t: ArrayLike, data_std: ArrayLike = 1.0) -> Float[Array, "3 k"]:
    """:data:`CURVES` of given second layers ``weights[i]`` (e.g. recorded by a trainer):
    :func:`quadratic_loss` with the training and population statistics, :func:`gaussian_score_error`."""
    population = statistics.population
    curves = lambda A: jnp.stack(
        [
            quadratic_loss(A, statistics.U, statistics.V, t),
            quadratic_loss(A, population.U, population.V, t),
            gaussian_score_error(A, population.U, population.phi_x, t, data_std),
        ]
    )
    return jax.vmap(curves)(weights).T
