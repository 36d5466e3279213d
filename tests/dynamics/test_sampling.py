"""Tests for dynamics.sampling against exact solutions of linear probability-flow ODEs.

The linear denoisers are ``jax.tree_util.Partial`` objects over module-level functions, so tests
that differ only in parameter values share one compiled solver.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from diffdyn.dynamics.sampling import (
    affine_moment_flow,
    generated_covariance,
    grid_denoiser,
    heun_sample,
    interpolate_log_sigma,
    pf_ode_sample,
    pf_ode_trajectory,
)
from diffdyn.dynamics.schedules import SIGMA_MAX, SIGMA_MIN, karras_sigmas

EIGENVALUES = np.array([0.01, 0.1, 1.0, 10.0, 100.0])
DIM = EIGENVALUES.shape[0]
TIGHT = {"rtol": 1e-7, "atol": 1e-9}
# The moment flow's step control weighs the ~sigma_max^2 entries of C; resolving the 0.01 mode
# to 1e-6 relative needs a tighter rtol than the defaults (cheap: a 5x5 linear ODE).
MOMENT_TOL = {"rtol": 1e-9, "atol": 1e-11}
NUM_SAMPLES = 4000


@pytest.fixture(scope="module")
def rotation():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(DIM, DIM)))
    return q


def per_mode_matrix(rotation, q, tau, sigma):
    """``U diag(psi(sigma)) U^T`` with the [WP] gradient-flow weight (docs/theory.md section 2, eta = 1).

    ``psi_k = w*_k + (q - w*_k) exp(-2 tau (sigma^2 + lambda_k))``,
    ``w*_k = lambda_k / (lambda_k + sigma^2)``;
    ``tau = inf`` gives the optimal ``W* = Sigma (Sigma + sigma^2 I)^-1``.
    """
    star = EIGENVALUES / (EIGENVALUES + jnp.square(sigma))
    weight = star + (q - star) * jnp.exp(-2.0 * tau * (jnp.square(sigma) + EIGENVALUES))
    return (rotation * weight[None, :]) @ rotation.T


def per_mode_apply(rotation, q, tau, x, sigma):
    return per_mode_matrix(rotation, q, tau, sigma) @ x


def per_mode_affine(rotation, q, tau, mean, sigma):
    """``(W, (I - W) mean)``: the bias of the optimal affine denoiser for data with this mean."""
    matrix = per_mode_matrix(rotation, q, tau, sigma)
    return matrix, mean - matrix @ mean


def linear_denoiser(rotation, q, tau):
    # Array leaves (not Python floats, which diffrax's filter_jit would treat as static).
    return Partial(per_mode_apply, rotation, jnp.asarray(q), jnp.asarray(tau))


def affine_denoiser(rotation, q, tau, mean):
    return Partial(per_mode_affine, rotation, jnp.asarray(q), jnp.asarray(tau), mean)


@jax.jit
def sample_batch(denoise, x_T):
    return jax.vmap(lambda x: pf_ode_sample(denoise, x, **TIGHT).value)(x_T)


def exact_map(rotation):
    """``x(sigma_min) = A x(sigma_max)`` for the optimal linear denoiser."""
    gain = np.sqrt((EIGENVALUES + SIGMA_MIN**2) / (EIGENVALUES + SIGMA_MAX**2))
    return (rotation * gain[None, :]) @ rotation.T


def noise_at_sigma_max(seed):
    return SIGMA_MAX * np.random.default_rng(seed).normal(size=(NUM_SAMPLES, DIM))


def test_pf_ode_optimal_linear_is_exact_linear_map(rotation):
    x_T = noise_at_sigma_max(1)
    x_0 = sample_batch(linear_denoiser(rotation, 0.1, np.inf), x_T)
    expected = x_T @ exact_map(rotation).T
    # Compare per eigenmode, so the smallest (lambda = 0.01) mode is checked at its own scale.
    np.testing.assert_allclose(x_0 @ rotation, expected @ rotation, rtol=1e-5, atol=0)


def test_pf_ode_trajectory_matches_exact_per_sigma(rotation):
    denoise = linear_denoiser(rotation, 0.1, np.inf)
    x_T = SIGMA_MAX * np.random.default_rng(2).normal(size=DIM)
    sigmas = np.array([SIGMA_MAX, 10.0, 1.0, 0.1, SIGMA_MIN])
    path, status = pf_ode_trajectory(denoise, x_T, sigmas, **TIGHT)
    assert status == 0
    gain = np.sqrt((EIGENVALUES[None, :] + sigmas[:, None] ** 2) / (EIGENVALUES[None, :] + SIGMA_MAX**2))
    assert path.shape == (5, DIM)
    np.testing.assert_allclose(path @ rotation, (x_T @ rotation)[None, :] * gain, rtol=1e-5, atol=0)


def test_pf_ode_sample_is_differentiable():
    """Value and gradient in lambda of a 1-d sample under the optimal denoiser, in closed form."""
    x_T = np.array([3.0])

    def final(lam):
        return pf_ode_sample(lambda x, s: lam / (lam + s**2) * x, x_T, **TIGHT).value[0]

    lam = 0.7
    value, grad = jax.jit(jax.value_and_grad(final))(lam)
    # x = x_T sqrt((lam + s0^2)/(lam + sT^2)); d/dlam ln x = (1/(lam+s0^2) - 1/(lam+sT^2)) / 2
    exact = x_T[0] * np.sqrt((lam + SIGMA_MIN**2) / (lam + SIGMA_MAX**2))
    np.testing.assert_allclose(value, exact, rtol=1e-6)
    expected = exact * 0.5 * (1 / (lam + SIGMA_MIN**2) - 1 / (lam + SIGMA_MAX**2))
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_affine_moment_flow_optimal_denoiser(rotation):
    mu = np.array([1.0, -2.0, 0.5, 3.0, -1.0])
    affine = affine_denoiser(rotation, 0.1, np.inf, mu)
    (mean, cov), status = affine_moment_flow(affine, np.zeros(DIM), SIGMA_MAX**2 * np.eye(DIM), **MOMENT_TOL)
    assert status == 0
    gain = exact_map(rotation)
    expected_cov = SIGMA_MAX**2 * gain @ gain.T
    np.testing.assert_allclose(
        np.diagonal(rotation.T @ cov @ rotation),
        np.diagonal(rotation.T @ expected_cov @ rotation),
        rtol=1e-6,
    )
    assert np.linalg.norm(cov - expected_cov) < 1e-6 * np.linalg.norm(expected_cov)
    # x - mu follows the homogeneous flow, so m(sigma_min) = mu + A (0 - mu).
    np.testing.assert_allclose(mean, mu - gain @ mu, rtol=1e-6)


def test_generated_covariance_matches_sampled_covariance(rotation):
    # A non-optimal weight: [WP] gradient flow stopped at tau = 0.5 from Q = 0.1.
    tau = 0.5
    cov = generated_covariance(affine_denoiser(rotation, 0.1, tau, np.zeros(DIM)), DIM, **MOMENT_TOL).value
    x_T = noise_at_sigma_max(4)
    samples = sample_batch(linear_denoiser(rotation, 0.1, tau), x_T)
    predicted = np.diagonal(rotation.T @ cov @ rotation)
    sampled = np.var(samples @ rotation, axis=0, ddof=1)
    relative_error = np.abs(sampled / predicted - 1)
    assert np.all(relative_error < 4 * np.sqrt(2 / NUM_SAMPLES)), relative_error
    # The map is diagonal in the eigenbasis, so the whole discrepancy is the Monte Carlo error
    # already present in the starting noise.
    start_error = np.var(x_T @ rotation, axis=0, ddof=1) / SIGMA_MAX**2
    np.testing.assert_allclose(sampled / predicted, start_error, rtol=1e-5)
    # The three weakest modes have not emerged: their generated variances are far from the data
    # (= fully trained) ones, so the agreement above is not the trivial optimal-denoiser case.
    assert np.all(np.abs(predicted[:3] / EIGENVALUES[:3] - 1) > 0.9)


def two_point_denoiser(x, sigma):
    """Posterior mean for 1-d data 0.5 N(-1, s^2) + 0.5 N(+1, s^2), s^2 = 0.01."""
    spread, total = 0.01, 0.01 + jnp.square(sigma)
    return spread / total * x + jnp.square(sigma) / total * jnp.tanh(x / total)


def test_heun_second_order_convergence():
    x_T = SIGMA_MAX * np.array([[0.3], [-1.1], [0.7], [2.0], [-0.05]])
    reference = jax.jit(jax.vmap(lambda x: pf_ode_sample(two_point_denoiser, x, rtol=1e-11, atol=1e-12).value))(x_T)
    steps = [16, 32, 64, 128]
    errors = []
    for num in steps:
        sigmas = karras_sigmas(num, append_zero=False)
        heun = jax.vmap(lambda x, sigmas=sigmas: heun_sample(two_point_denoiser, x, sigmas))(x_T)
        errors.append(float(np.max(np.abs(heun - reference))))
    order = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert 1.8 <= order <= 2.2, (order, errors)
    # The coarse rho = 7 grids are pre-asymptotic (ratio ~4.9 from 16 to 32); by 64 -> 128 the
    # error ratio is within 10% of 4.
    assert 3.6 <= ratios[-1] <= 4.4, ratios


@jax.jit
def heun_with_and_without_zero(x_T):
    with_zero = heun_sample(two_point_denoiser, x_T, karras_sigmas(18))
    before_zero = heun_sample(two_point_denoiser, x_T, karras_sigmas(18, append_zero=False))
    grad = jax.grad(lambda x: heun_sample(two_point_denoiser, x, karras_sigmas(18))[0])(x_T)
    return with_zero, before_zero, grad


def test_heun_final_step_to_zero_is_euler():
    """The last step to sigma = 0 is Euler, which lands exactly on D(x, sigma_min)."""
    with_zero, before_zero, grad = heun_with_and_without_zero(SIGMA_MAX * np.array([0.4]))
    np.testing.assert_allclose(with_zero, two_point_denoiser(before_zero, SIGMA_MIN), rtol=1e-13)
    # The discarded correction at sigma = 0 must not poison the gradient.
    assert np.all(np.isfinite(grad)) and np.all(grad != 0)


SIGMA_GRID = np.array([0.01, 0.1, 1.0, 10.0])
PARAMS_GRID = {
    "w": np.arange(4 * 2 * 2, dtype=float).reshape(4, 2, 2) ** 1.5,
    "b": np.array([[0.0, 1.0], [2.0, -1.0], [5.0, 0.0], [-3.0, 4.0]]),
}


def test_interpolate_log_sigma_nodes_midpoints_clamping():
    # The nodes, a point 30% of the way (in log sigma) from node 1 to node 2, and two points
    # outside the grid, all in one compiled call.
    sigmas = np.concatenate([SIGMA_GRID, np.array([0.1 * 10.0**0.3, 1e-5, 500.0])])
    got = jax.jit(jax.vmap(lambda s: interpolate_log_sigma(PARAMS_GRID, SIGMA_GRID, s)))(sigmas)
    for key, leaf in PARAMS_GRID.items():
        expected = np.concatenate([leaf, (0.7 * leaf[1] + 0.3 * leaf[2])[None], leaf[:1], leaf[-1:]], axis=0)
        np.testing.assert_allclose(got[key], expected, rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError, match="sigma_grid"):
        interpolate_log_sigma({"w": np.ones((1, 2))}, np.array([1.0]), 1.0)


def grid_apply(params, x, sigma):
    return params["w"] @ x + params["b"] * sigma


def test_grid_denoiser_applies_interpolated_params():
    denoise = grid_denoiser(grid_apply, PARAMS_GRID, SIGMA_GRID)
    x = np.array([0.5, -2.0])
    sigma = np.sqrt(0.1 * 1.0)  # geometric midpoint of nodes 1 and 2
    w = 0.5 * (PARAMS_GRID["w"][1] + PARAMS_GRID["w"][2])
    b = 0.5 * (PARAMS_GRID["b"][1] + PARAMS_GRID["b"][2])
    # The denoiser is a pytree of arrays, so it can be a jit argument.
    got = jax.jit(lambda d, x, s: d(x, s))(denoise, x, sigma)
    np.testing.assert_allclose(got, w @ x + b * sigma, rtol=1e-12)


TRACES = []


def counting_apply(params, x, sigma):
    TRACES.append(sigma)  # runs only while tracing
    return params["w"] @ x


def test_grid_denoiser_sampling_matches_exact_and_reuses_compilation():
    """A per-node optimal 1-d linear denoiser through the PF-ODE; new params do not retrace."""
    lam = 2.0
    sigma_grid = np.geomspace(SIGMA_MIN, SIGMA_MAX, 2001)
    params = {"w": (lam / (lam + np.square(sigma_grid)))[:, None, None]}
    x_T = np.array([SIGMA_MAX])
    sample = pf_ode_sample(grid_denoiser(counting_apply, params, sigma_grid), x_T).value
    exact = SIGMA_MAX * np.sqrt((lam + SIGMA_MIN**2) / (lam + SIGMA_MAX**2))
    np.testing.assert_allclose(sample, exact, rtol=1e-4)  # interpolation error ~ (grid step)^2
    num_traces = len(TRACES)
    assert num_traces > 0
    halved = pf_ode_sample(grid_denoiser(counting_apply, {"w": params["w"] / 2}, sigma_grid), x_T).value
    assert len(TRACES) == num_traces
    assert not np.allclose(halved, sample)
