"""Speciation, collapse and the minority delay ([BBdBM], docs/theory.md section 8): closed forms,
the exact 1-D cloning curves and the crossing time read off them. The exact-score simulations
they are compared with are tested in tests/models/test_backward.py."""

import jax
import jax.numpy as jnp
import numpy as np

from diffdyn.dynamics.theory import speciation


def test_minority_delay_check_values():
    # docs/theory.md section 8: omega = 0.9 -> ~0.51, 0.999 -> ~0.85; balanced -> no delay.
    delay = speciation.minority_delay(jnp.array([0.5, 0.9, 0.999]))
    np.testing.assert_allclose(delay, [0.0, 0.51, 0.85], atol=6e-3)
    h = speciation.imbalance_field(jnp.array([0.6, 0.9, 0.999, 1 - 1e-9]))
    k = speciation.minority_threshold(h)
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
    # K(t) = 2 |mu|^2 e^-2t = K*: the basin time, and the balanced split at K = 1.
    t = speciation.minority_basin_time(0.9, 8.0)
    np.testing.assert_allclose(16.0 * np.exp(-2 * t), speciation.minority_threshold(speciation.imbalance_field(0.9)), rtol=1e-12)
    np.testing.assert_allclose(speciation.minority_basin_time(0.5, 8.0) - t, speciation.minority_delay(0.9), rtol=1e-12)


def test_signal_strength():
    """a = e^-t |mu| / sqrt(e^-2t s^2 + 1 - e^-2t): |mu| / s at t = 0, e^-t |mu| at s = 1."""
    np.testing.assert_allclose(speciation.signal_strength(0.0, 3.0, 4.0), 1.5, rtol=1e-14)
    t = jnp.array([0.1, 1.0, 3.0])
    np.testing.assert_allclose(speciation.signal_strength(t, 2.0), 2.0 * np.exp(-t), rtol=1e-14)


def test_commitment_theory_limits_and_detailed_balance():
    same, stay = speciation.commitment_theory(jnp.array([1e-8, 30.0]), 0.0, 1.0)
    np.testing.assert_allclose(same, [0.5, 1.0], atol=1e-8)
    np.testing.assert_allclose(stay, [0.5, 1.0], atol=1e-8)
    h, a = speciation.imbalance_field(0.8), 0.9
    same_plus, stay_plus = speciation.commitment_theory(a, h, 1.0)
    same_minus, stay_minus = speciation.commitment_theory(a, h, -1.0)
    # Bayes identity: P(two clones agree) = P(a clone ends in the reference class), averaged over classes.
    np.testing.assert_allclose(0.8 * same_plus + 0.2 * same_minus, 0.8 * stay_plus + 0.2 * stay_minus, rtol=1e-10)
    # Detailed balance: rho_+ P(+ -> -) = rho_- P(- -> +).
    np.testing.assert_allclose(0.8 * (1 - stay_plus), 0.2 * (1 - stay_minus), rtol=1e-10)


def test_crossing_time():
    times = jnp.array([0.0, 1.0, 2.0, 3.0])
    curve = jnp.array([1.0, 0.8, 0.4, 0.2])
    np.testing.assert_allclose(speciation.crossing_time(times, curve, 0.6), 1.5, rtol=1e-14)  # linear between records
    np.testing.assert_allclose(speciation.crossing_time(times, curve, 1.2), 0.0)  # already below
    assert np.isnan(speciation.crossing_time(times, curve, 0.1))  # never
