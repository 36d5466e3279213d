"""Speciation, collapse and the minority delay ([BBdBM], THEORY.md 8): closed forms and exact-score
measurements."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics.theory import speciation
from models.distributions import mixtures


def test_minority_delay_check_values():
    # THEORY.md 8: omega = 0.9 -> ~0.51, 0.999 -> ~0.85; balanced -> no delay.
    delay = speciation.minority_delay(jnp.array([0.5, 0.9, 0.999]))
    np.testing.assert_allclose(delay, [0.0, 0.51, 0.85], atol=6e-3)
    k = speciation.minority_threshold(speciation.imbalance_field(jnp.array([0.6, 0.9, 0.999, 1 - 1e-9])))
    h = speciation.imbalance_field(jnp.array([0.6, 0.9, 0.999, 1 - 1e-9]))
    np.testing.assert_allclose(jnp.sqrt(k * (k - 1)) - jnp.arccosh(jnp.sqrt(k)), h, rtol=1e-12)


def test_closed_forms():
    np.testing.assert_allclose(speciation.speciation_time(np.e**2), 1.0)
    # n = e^d: n^{2/d} - 1 = e^2 - 1.
    np.testing.assert_allclose(speciation.collapse_time(2.0, np.exp(10.0), 10), 0.5 * np.log1p(2 / np.expm1(2.0)), rtol=1e-12)
    # Larger n collapses later in the backward run (smaller t_C); larger d earlier.
    assert speciation.collapse_time(1.0, 1e4, 10) < speciation.collapse_time(1.0, 1e3, 10)
    assert speciation.collapse_time(1.0, 1e4, 20) > speciation.collapse_time(1.0, 1e4, 10)
    # The delay is differentiable in omega: implicit derivative dK/dh = 1/sqrt(1 - 1/K).
    k = speciation.minority_threshold(2.0)
    np.testing.assert_allclose(jax.grad(speciation.minority_threshold)(2.0), 1 / np.sqrt(1 - 1 / k), rtol=1e-8)


@pytest.mark.parametrize("dim", [4, 128])
def test_basin_appearance_and_minority_delay_from_exact_scores(dim):
    """The minority basin, found from zeros of the exact-score backward drift (numpyro log_prob +
    grad) in d dimensions, appears at K(t) = 2|mu|^2 e^-2t = K*(h), and the measured delay behind
    the balanced split is 1/2 ln K*(h). The reduction to the centroid line is exact for isotropic
    classes, so the only errors are the bisection (6 / 2^24) and the y grid (~1e-5 in t): no
    finite-d tolerance is needed, at d = 4 as at d = 128."""
    measured = {}
    for omega in (0.5, 0.9, 0.999):
        measured[omega] = speciation.basin_appearance_time(mixtures.two_class_mixture(dim, omega, 1.0), 0.0, 6.0, iterations=24)
        np.testing.assert_allclose(measured[omega], speciation.minority_basin_time(omega, dim), atol=1e-4)
    for omega in (0.9, 0.999):
        np.testing.assert_allclose(measured[0.5] - measured[omega], speciation.minority_delay(omega), atol=2e-4)


def test_commitment_theory_limits():
    same, stay = speciation.commitment_theory(jnp.array([1e-8, 30.0]), 0.0, 1.0)
    np.testing.assert_allclose(same, [0.5, 1.0], atol=1e-8)
    np.testing.assert_allclose(stay, [0.5, 1.0], atol=1e-8)
    # Bayes identity: P(two clones agree) = P(a clone ends in the reference class), averaged over classes.
    h, a = speciation.imbalance_field(0.8), 0.9
    same_plus, stay_plus = speciation.commitment_theory(a, h, 1.0)
    same_minus, stay_minus = speciation.commitment_theory(a, h, -1.0)
    np.testing.assert_allclose(0.8 * same_plus + 0.2 * same_minus, 0.8 * stay_plus + 0.2 * stay_minus, rtol=1e-10)


def cloned_speciation_time(dim, num_pairs, key, num_steps=30):
    mixture = mixtures.two_class_mixture(dim, 0.5, 1.0)
    top = float(np.linalg.eigvalsh(np.asarray(mixture.covariance))[-1])
    t_s = float(speciation.speciation_time(top))
    times = jnp.linspace(t_s - 0.8, t_s + 0.8, 9)
    same, _ = jax.jit(lambda k: speciation.commitment_curves(mixture, k, times, num_pairs, num_steps=num_steps))(key)
    level = 0.75  # midway between 1 (t -> 0) and sum_c rho_c^2 = 1/2 (t -> infinity)
    measured = float(speciation.crossing_time(times, jnp.mean(same, axis=0), level))
    exact = speciation.commitment_theory(speciation.signal_strength(mixture, times), 0.0, 1.0)[0]
    return measured, float(speciation.crossing_time(times, exact, level)), t_s


@pytest.mark.slow  # the speciation experiment's test runs the same check at d = 8
def test_cloning_speciation_time_small_d():
    """Cloning with exact scores at d = 8: the midpoint crossing of P(clones agree) equals the
    exact 1-D prediction up to Monte Carlo (2 x 300 pairs per time: ~0.03 in t) and
    Euler-Maruyama (30 steps) error, and 1/2 ln Lambda up to the universal offset
    -1/2 ln(a_x^2) = 0.081 (a_x^2 = 0.851, the midpoint's signal) minus 1/2 ln(Lambda/(Lambda-1))."""
    measured, exact, t_s = cloned_speciation_time(8, 300, jax.random.key(0))
    assert abs(measured - exact) < 0.06
    offset = 0.5 * np.log(1 / 0.8508444) - 0.5 * np.log(9 / 8)
    np.testing.assert_allclose(exact - t_s, offset, atol=0.01)  # 9 grid points, linear interpolation
    assert abs(measured - t_s) < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("dim", [32, 128])
def test_cloning_speciation_time_larger_d(dim):
    """As above with 100 Euler-Maruyama steps (30 steps bias the crossing early by ~0.05-0.08 at
    d >= 32: the discretised backward SDE commits less)."""
    measured, exact, t_s = cloned_speciation_time(dim, 500, jax.random.key(dim), num_steps=100)
    # 1000 soft agreements per time: SD ~0.01 in P, slope ~0.35 per unit t -> ~0.03 in t; 3 SD.
    assert abs(measured - exact) < 0.1
    assert abs(measured - t_s) < 0.18  # the offset tends to 0.081 as d grows, plus 3 SD
