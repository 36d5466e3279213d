"""Collapse-and-refine theory (docs/theory.md section 10): the linear toy's closed form against the
exact gradient flow, its normal-block rates, the optimal affine denoiser, the vMF mean length."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from diffdyn.dynamics.objectives import affine_population_loss
from diffdyn.dynamics.theory import manifolds as theory
from diffdyn.dynamics.training import quadratic_gradient_flow

SIGMAS = np.array([0.03, 0.1, 0.5, 2.0])


def test_normal_rates_are_the_issues_numbers():
    """r sigma^2 = 2 sigma^2 (denoiser loss), 2 / sigma^2 (score-weighted), 2 sigma^2 (eps)."""
    rates = {name: np.asarray(theory.flow_rate(name, SIGMAS)) * SIGMAS**2 for name in theory.PARAMETERISATIONS}
    np.testing.assert_allclose(rates["denoiser"], 2 * SIGMAS**2, rtol=1e-15)
    np.testing.assert_allclose(rates["score_weighted"], 2 / SIGMAS**2, rtol=1e-15)
    np.testing.assert_allclose(rates["eps"], 2 * SIGMAS**2, rtol=1e-15)
    slopes = {
        name: np.polyfit(np.log(SIGMAS), np.log(theory.collapse_time(theory.flow_rate(name, SIGMAS), SIGMAS, 0.2)), 1)[0] for name in theory.PARAMETERISATIONS
    }
    assert slopes == pytest.approx({"denoiser": -2.0, "score_weighted": 2.0, "eps": -2.0}, abs=1e-12)


def data_moments(dim=6, rank=2, seed=0):
    """A rank-``rank`` covariance in a random subspace and a mean inside it (the vMF case)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:, :rank]
    cov = basis @ np.diag([1.5, 0.4]) @ basis.T
    return jnp.asarray(basis @ np.array([0.7, -0.3])), jnp.asarray(cov), basis


@pytest.mark.parametrize("name", theory.PARAMETERISATIONS)
def test_linear_toy_closed_form_equals_the_exact_gradient_flow(name):
    """Gradient flow of weight * E||c_skip x + c_out (A x + a) - x0||^2 in (A, a), from D = x,
    solved exactly by Hessian eigendecomposition: the same W~(tau) as the closed form (x64)."""
    mean, cov, _ = data_moments()
    dim, sigma = mean.shape[0], 0.3
    c = theory.coefficients(name, sigma)
    loss = lambda p: c.weight * affine_population_loss(c.skip * jnp.eye(dim) + c.out * p["A"], c.out * p["a"], mean, cov, sigma)
    start = {"A": (1.0 - c.skip) / c.out * jnp.eye(dim), "a": jnp.zeros(dim)}

    @jax.jit
    def both(tau):
        params = quadratic_gradient_flow(loss, start)(tau)
        simulated = jnp.concatenate([c.skip * jnp.eye(dim) + c.out * params["A"], (c.out * params["a"])[:, None]], axis=1)
        return simulated, theory.linear_toy_weights(jnp.eye(dim, dim + 1), mean, cov, sigma, tau, theory.flow_rate(name, sigma))

    for tau in (1e-3, 0.1, 3.0):
        simulated, closed = both(tau)
        np.testing.assert_allclose(simulated, closed, rtol=1e-9, atol=1e-11)


def test_normal_block_decays_at_the_normal_rate_and_collapse_time_hits_the_threshold():
    """Flow: the normal block is exp(-r sigma^2 tau) I; descent with step eta: (1 - eta r sigma^2)^steps I.
    At the collapse time of either it equals the threshold."""
    mean, cov, basis = data_moments()
    dim, sigma = mean.shape[0], 0.2
    normal = np.linalg.qr(np.concatenate([basis, np.eye(dim)], axis=1))[0][:, 2:]
    identity = jnp.eye(dim, dim + 1)
    for name in theory.PARAMETERISATIONS:
        rate = theory.flow_rate(name, sigma)
        for learning_rate in (None, 0.3 / (rate * sigma**2)):
            tau_c = theory.collapse_time(rate, sigma, 0.2, learning_rate)
            threshold = 0.2 if learning_rate is None else 0.7 ** np.round(tau_c / learning_rate)
            weights = theory.linear_toy_weights(identity, mean, cov, sigma, tau_c, rate, learning_rate)[:, :dim]
            np.testing.assert_allclose(weights @ normal, threshold * normal, atol=1e-10)
            np.testing.assert_allclose(normal.T @ weights, threshold * normal.T, atol=1e-10)
        assert float(0.7 ** (theory.collapse_time(rate, sigma, 0.2, learning_rate) / learning_rate)) == pytest.approx(0.2, rel=1e-12)


def test_gradient_descent_closed_form_equals_the_iterated_step():
    """W~ <- W~ - eta r (W~ M - C), iterated 25 times, against (I - eta r M)^25 (eta r mu_max(M) = 0.9)."""
    mean, cov, _ = data_moments()
    sigma, name = 0.4, "eps"
    rate = theory.flow_rate(name, sigma)
    moments, cross = theory.second_moments(mean, cov, sigma)
    learning_rate = 0.9 / (rate * float(np.linalg.eigvalsh(moments)[-1]))
    weights = jnp.eye(6, 7)
    for _ in range(25):
        weights = weights - learning_rate * rate * (weights @ moments - cross)
    closed = theory.linear_toy_weights(jnp.eye(6, 7), mean, cov, sigma, 25 * learning_rate, rate, learning_rate)
    np.testing.assert_allclose(closed, weights, rtol=1e-10, atol=1e-12)


def test_optimal_affine_on_the_subspace_is_the_shrunk_projector():
    """Gaussian latents N(0, s^2 I_k): D* = s^2 / (s^2 + sigma^2) P, c* = 0, and the loss gradient vanishes there."""
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(5, 5)))[0][:, :2]
    scale, sigma = 0.8, 0.35
    cov = jnp.asarray(scale**2 * basis @ basis.T)
    loss = lambda w: affine_population_loss(w[:, :5], w[:, 5], jnp.zeros(5), cov, sigma)
    optimum, gradient = jax.jit(lambda: (theory.optimal_affine(jnp.zeros(5), cov, sigma), jax.grad(loss)(theory.optimal_affine(jnp.zeros(5), cov, sigma))))()
    np.testing.assert_allclose(optimum[:, :5], theory.subspace_shrinkage(scale, sigma) * basis @ basis.T, atol=1e-14)
    np.testing.assert_allclose(optimum[:, 5], 0.0, atol=1e-14)
    np.testing.assert_allclose(gradient, 0.0, atol=1e-13)
    assert float(theory.subspace_shrinkage(scale, sigma)) == pytest.approx(0.64 / (0.64 + 0.1225), rel=1e-15)


@pytest.mark.parametrize("p", [2, 3, 4, 5, 8])
def test_mean_resultant_length_is_the_bessel_ratio(p):
    """Both branches (continued fraction below kappa = 10, recurrence above) against scipy."""
    kappa = np.array([1e-8, 1e-3, 0.5, 3.0, 9.999, 10.0, 10.001, 40.0, 1e3, 1e6])
    reference = scipy.special.ive(p / 2, kappa) / scipy.special.ive(p / 2 - 1, kappa)
    length, slope = jax.jit(lambda value: (theory.mean_resultant_length(p, value), theory.mean_resultant_slope(p, value)))(kappa)
    np.testing.assert_allclose(length, reference, rtol=1e-12)
    identity = 1.0 - reference**2 - (p - 1) * reference / kappa
    np.testing.assert_allclose(slope[2:-1], identity[2:-1], rtol=1e-8)  # the identity cancels at both ends
    assert float(slope[-1]) == pytest.approx((p - 1) / 2e12, rel=1e-5)


def test_round_effective_rank_tends_to_k():
    """Uniform sphere S^k (1 factor, p = k + 1) and flat torus T^k (k circles): tr J -> k as sigma -> 0."""
    sigmas = jnp.asarray([0.3, 0.1, 0.01, 1e-3])
    for factors, p, k in ((1, 3, 2), (3, 2, 3), (1, 5, 4)):
        ranks = np.asarray(jax.jit(partial(theory.round_effective_rank, factors, p, 1.0))(sigmas))
        assert np.all(np.diff(np.abs(ranks - k)) < 0)
        assert abs(ranks[-1] - k) < 1e-5


def test_subspace_flipd_expectation():
    """k s^2 (s^2 + 2 sigma^2) / (s^2 + sigma^2)^2: k at sigma = 0, k / 2 + k / 4 at sigma = s."""
    assert float(theory.subspace_flipd(3, 1.0, 0.0)) == 3.0
    assert float(theory.subspace_flipd(3, 2.0, 2.0)) == pytest.approx(3 * 4 * 12 / 64, rel=1e-15)
