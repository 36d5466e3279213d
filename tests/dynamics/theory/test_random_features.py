"""Random-features theory (docs/theory.md section 7): Gaussian-equivalence constants, spectrum of U, curves."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics.schedules import vp_noise_variance
from diffdyn.dynamics.theory import random_features as th
from diffdyn.models.denoisers import random_features as rf

T = 0.1


def test_identity_activation_is_exactly_linear():
    """g(z) = z: a_t = 1, b_t = sqrt(Delta_t), no nonlinear parts."""
    c = th.equivalence_constants(0.4, 1.7, "identity")
    np.testing.assert_allclose([c.a, c.b, c.v2, c.s2, c.mean], [1, np.sqrt(vp_noise_variance(0.4)), 0, 0, 0], atol=1e-12)


@pytest.mark.parametrize("t, std", [(0.1, 1.0), (0.7, 2.0)])
def test_erf_constants_match_closed_forms(t, std):
    """E[erf(x) erf(y)] = (2/pi) arcsin(2 C_xy / sqrt((1 + 2 C_xx)(1 + 2 C_yy))), E[erf'] = 2/sqrt(pi (1 + 2 G^2))."""
    c = th.equivalence_constants(t, std, "erf")
    signal2, delta = np.exp(-2 * t) * std**2, float(vp_noise_variance(t))
    gamma2 = signal2 + delta
    a = 2 / np.sqrt(np.pi * (1 + 2 * gamma2))
    shared = 2 / np.pi * np.arcsin(2 * signal2 / (1 + 2 * gamma2))
    total = 2 / np.pi * np.arcsin(2 * gamma2 / (1 + 2 * gamma2))
    expected = [a, a * np.sqrt(delta), shared - a**2 * signal2, total - shared - a**2 * delta]
    np.testing.assert_allclose([c.a, c.b, c.v2, c.s2], expected, rtol=1e-6, atol=1e-12)  # 64-node quadrature


def test_tanh_constants_match_monte_carlo():
    """docs/theory.md section 7 formulas by direct Monte Carlo over (u, v, w), 2e6 draws."""
    c = th.equivalence_constants(T)
    u, v, w = np.random.default_rng(0).standard_normal((3, 2_000_000))
    signal, noise = np.exp(-T), np.sqrt(float(vp_noise_variance(T)))
    first, second = np.tanh(signal * u + noise * v), np.tanh(signal * u + noise * w)
    a = np.mean(first * u) / signal
    v2 = np.mean(first * second) - a**2 * signal**2
    b = np.mean(first * v)
    s2 = np.mean(first**2) - a**2 * signal**2 - v2 - b**2
    np.testing.assert_allclose([c.a, c.b, c.v2, c.s2], [a, b, v2, s2], atol=2e-3)
    assert float(c.mean) == pytest.approx(0.0, abs=1e-14)  # tanh is odd


def test_density_matches_gaussian_equivalent_matrix():
    """Theory (reconstruction) vs the eigenvalues of one U_GE draw, d = 100, p = 400, n = 200."""
    c = th.equivalence_constants(T)
    d, psi_p, psi_n = 100, 4.0, 2.0
    W = rf.sample_features(jax.random.key(0), d, int(psi_p * d))
    eigenvalues = np.linalg.eigvalsh(np.asarray(th.gaussian_equivalent_matrix(jax.random.key(1), W, c, int(psi_n * d))))
    edges = np.geomspace(0.5 * eigenvalues.min(), 1.5 * eigenvalues.max(), 31)
    mass = th.spectral_mass(edges, c, psi_p, psi_n)
    empirical = np.histogram(eigenvalues, edges)[0] / eigenvalues.size
    assert mass.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.abs(mass - empirical).sum() < 0.08
    assert np.abs(np.cumsum(mass - empirical)).max() < 0.015
    # the solved bulk edges bracket the matrix's bulks: rho_1 (n eigenvalues), rho_2 (d eigenvalues)
    (low1, high1), (low2, high2) = th.bulk_edges(c, psi_p, psi_n)
    ordered = np.sort(eigenvalues)
    p, n = ordered.size, int(psi_n * d)
    np.testing.assert_allclose(ordered[[p - n - d, p - d - 1, p - d, p - 1]], [low1, high1, low2, high2], rtol=0.1)


@pytest.mark.slow
def test_density_approaches_the_true_feature_covariance():
    """The true U (tanh features, exact noise average) is only Gaussian-equivalent as d grows:
    KS distance to the theory at d = 100 below 0.15 (0.09 measured; 0.3 at d = 20)."""
    c = th.equivalence_constants(T)
    d, psi_p, psi_n = 100, 4.0, 2.0
    W = rf.sample_features(jax.random.key(0), d, int(psi_p * d))
    x0 = jax.random.normal(jax.random.key(2), (int(psi_n * d), d))
    eigenvalues = np.linalg.eigvalsh(np.asarray(rf.expected_feature_statistics(W, x0, T)[0]))
    edges = np.geomspace(0.5 * eigenvalues.min(), 1.5 * eigenvalues.max(), 31)
    empirical = np.histogram(eigenvalues, edges)[0] / eigenvalues.size
    mass = th.spectral_mass(edges, c, psi_p, psi_n)
    assert np.abs(np.cumsum(mass - empirical)).max() < 0.15
    # the population bulk holds exactly d eigenvalues, far above the rest
    low2 = th.bulk_edges(c, psi_p, psi_n)[1][0]
    assert np.sum(eigenvalues > 0.5 * low2) == d


def test_theory_edges_and_time_scales():
    c = th.equivalence_constants(T)
    low, high = th.training_bulk_edges(c, 64.0, 4.0)
    np.testing.assert_allclose([low, high], [c.s2 + 9 * c.v2, c.s2 + 25 * c.v2], rtol=1e-12)
    delta = float(vp_noise_variance(T))
    scales = [th.time_scales(c, T, 64.0, psi_n) for psi_n in (4.0, 32.0)]
    assert scales[0]["tau_gen"] == scales[1]["tau_gen"]  # independent of n
    np.testing.assert_allclose(scales[0]["tau_mem"], 64.0 / (delta * low), rtol=1e-12)
    # the tanh constants at t = 0.1 give the docs/theory.md-edge slope ~1 over psi_n in 4..32
    slope = math.log(scales[1]["tau_mem"] / scales[0]["tau_mem"]) / math.log(8.0)
    assert 0.9 < slope < 1.2


def test_flow_curves_equal_losses_of_the_flow_weights():
    """Spectral evaluation of train/test/score curves == losses of gradient_flow_weights."""
    d, p, n = 5, 12, 9
    W = rf.sample_features(jax.random.key(0), d, p)
    U, V = rf.expected_feature_statistics(W, jax.random.normal(jax.random.key(1), (n, d)), T)
    population = rf.gaussian_population_statistics(W, T, 1.3)
    taus = jnp.geomspace(0.1, 1e4, 7)
    weights = rf.gradient_flow_weights(U, V, T, taus)
    spectrum = th.flow_spectrum(U, V)
    for second, cross in [(U, V), (population.U, population.V)]:
        curve = th.flow_loss_curve(spectrum, second, cross, T, taus)
        direct = jax.vmap(rf.quadratic_loss, in_axes=(0, None, None, None))(weights, second, cross, T)
        np.testing.assert_allclose(curve, direct, rtol=1e-10)
    score = th.flow_score_error_curve(spectrum, population.U, population.phi_x, T, taus, 1.3)
    direct = jax.vmap(lambda A: rf.gaussian_score_error(A, population.U, population.phi_x, T, 1.3))(weights)
    np.testing.assert_allclose(score, direct, rtol=1e-10)


def _dense_equivalent_model(W, X, Omega, c, t):
    """The Gaussian-equivalent model's p x p statistics written out (docs/theory.md section 7)."""
    d, n = X.shape
    M = W @ W.T / d
    G = c.a * jnp.sqrt(c.signal2) * W @ X / math.sqrt(d) + jnp.sqrt(c.v2) * Omega
    identity = jnp.eye(W.shape[0])
    U = G @ G.T / n + c.b**2 * M + c.s2 * identity
    population_U = (c.a**2 * c.signal2 + c.b**2) * M + (c.v2 + c.s2) * identity
    gamma2 = c.signal2 + vp_noise_variance(t)
    return U, c.b * W / math.sqrt(d), population_U, c.a * gamma2 * W / math.sqrt(d)


@pytest.mark.parametrize("p", [60, 14])
def test_equivalent_statistics_restriction_is_exact(p):
    """The (d + n)-dim restriction gives the dense equivalent model's flow curves (train, test,
    score error) to rounding, and its spectrum plus s_t^2 off the subspace (full_eigenvalues):
    p = 60 > d + n = 18; at p = 14 < d + n the subspace is the whole space."""
    d, n, t, std = 6, 12, 0.3, 1.4
    k = min(d + n, p)
    c = th.equivalence_constants(t, std)
    W = rf.sample_features(jax.random.key(0), d, p)
    X, Omega = jax.random.normal(jax.random.key(1), (d, n)), jax.random.normal(jax.random.key(2), (p, n))
    U, V, population_U, phi_x = _dense_equivalent_model(W, X, Omega, c, t)
    restricted = th.equivalent_statistics(W, X, Omega, c, t)
    assert restricted.U.shape == (k, k) and restricted.phi_x.shape == (k, d)
    dense, small = th.flow_spectrum(U, V), th.flow_spectrum(restricted.U, restricted.V, p)
    taus = jnp.geomspace(1e-2, 1e6, 9)
    for second, cross, small_second, small_cross in [(U, V, restricted.U, restricted.V), (population_U, V, restricted.population_U, restricted.population_V)]:
        expected = th.flow_loss_curve(dense, second, cross, t, taus)
        np.testing.assert_allclose(th.flow_loss_curve(small, small_second, small_cross, t, taus), expected, rtol=1e-10)
    expected = th.flow_score_error_curve(dense, population_U, phi_x, t, taus, std)
    np.testing.assert_allclose(th.flow_score_error_curve(small, restricted.population_U, restricted.phi_x, t, taus, std), expected, rtol=1e-10)
    np.testing.assert_allclose(th.full_eigenvalues(small.eigenvalues, p, c.s2), dense.eigenvalues, rtol=1e-10, atol=1e-12)


def test_equivalent_population_statistics_approach_the_exact_ones():
    """The equivalent model's population U, V, phi_x vs the tanh features' exact ones: relative
    Frobenius distance shrinking as d^-1/2 (measured 0.14, 0.09, 0.09 at d = 25; 0.065, 0.044,
    0.044 at d = 100; 0.031, 0.021, 0.021 at d = 400), p = 2d."""
    t = 0.1
    c = th.equivalence_constants(t)
    distances = []
    for d in (25, 100):
        W = rf.sample_features(jax.random.key(3), d, 2 * d)
        exact = rf.gaussian_population_statistics(W, t)
        _, V, population_U, phi_x = _dense_equivalent_model(W, jnp.zeros((d, 1)), jnp.zeros((2 * d, 1)), c, t)
        relative = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
        distances.append([relative(population_U, exact.U), relative(V, exact.V), relative(phi_x, exact.phi_x)])
    distances = np.array(distances)
    assert np.all(distances[1] < 0.08)
    np.testing.assert_allclose(distances[0] / distances[1], 2.0, rtol=0.15)  # (100 / 25)^(1/2)


@pytest.mark.parametrize(("num_taus", "p"), [(141, 200), (281, 180), (100, 256), (400, 150)])
def test_flow_quadratic_curve_is_right_at_shapes_xla_miscompiles(num_taus, p):
    """Regression: the jitted quadratic form equals numpy's at shapes where XLA on CPU
    miscompiled the ``einsum`` form (errors up to 0.8 with jax 0.10.2; ``flow_quadratic_curve``)."""
    rng = np.random.default_rng(p)
    U = (lambda a: a @ a.T / p)(rng.standard_normal((p, p)))
    spectrum = th.flow_spectrum(jnp.asarray(U), jnp.asarray(rng.standard_normal((p, 7))))
    second = (lambda a: a @ a.T / p)(rng.standard_normal((p, p)))
    weights = rng.standard_normal((num_taus, p))
    quadratic, _ = jax.jit(th.flow_quadratic_curve)(spectrum, second, rng.standard_normal((p, 7)), weights)
    Y, Q = np.asarray(spectrum.projected), np.asarray(spectrum.vectors)
    kernel = (Y @ Y.T) * (Q.T @ second @ Q)
    np.testing.assert_allclose(quadratic, np.sum((weights @ kernel) * weights, axis=1) / 7, rtol=1e-10)
