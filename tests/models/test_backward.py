"""Exact-score backward dynamics of Gaussian mixtures ([BBdBM], docs/theory.md section 8): basins
of the backward drift and the cloning protocol against the closed forms of
dynamics.theory.speciation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics.theory import speciation
from diffdyn.models.distributions import backward, mixtures


@pytest.mark.parametrize("dim", [4, 128])
def test_basin_appearance_and_minority_delay_from_exact_scores(dim):
    """The minority basin, found from zeros of the exact-score backward drift (numpyro log_prob +
    grad) in d dimensions, appears at K(t) = 2|mu|^2 e^-2t = K*(h), and the measured delay behind
    the balanced split is 1/2 ln K*(h). The reduction to the centroid line is exact for isotropic
    classes, so the only errors are the bisection (6 / 2^24) and the y grid (~1e-5 in t): no
    finite-d tolerance is needed, at d = 4 as at d = 128. The bisection is traceable: one
    vmapped program over the class weights."""
    unit = mixtures.two_class_mixture(dim)
    omegas = jnp.array([0.5, 0.9, 0.999])

    def basin_time(omega):
        mixture = unit._replace(weights=jnp.stack([omega, 1.0 - omega]))
        return backward.basin_appearance_time(mixture, 0.0, 6.0, iterations=24)

    measured = jax.jit(jax.vmap(basin_time))(omegas)
    np.testing.assert_allclose(measured, speciation.minority_basin_time(omegas, dim), atol=1e-4)
    np.testing.assert_allclose(measured[0] - measured[1:], speciation.minority_delay(omegas[1:]), atol=2e-4)


def test_stable_zeros_on_the_centroid_line():
    """Two basins near the data (t = 0.1), one after the balanced split at K = 2 |mu|^2 e^-2t = 1."""
    mixture = mixtures.two_class_mixture(8, 0.5, 1.0)
    split = 0.5 * np.log(2 * 8)
    count = jax.jit(backward.stable_zeros_on_line)
    assert int(count(mixture, 0.1)) == 2
    assert int(count(mixture, split + 0.05)) == 1


def cloned_speciation_time(dim, num_pairs, key, num_steps=30):
    mixture = mixtures.two_class_mixture(dim, 0.5, 1.0)
    top = float(np.linalg.eigvalsh(np.asarray(mixture.covariance))[-1])
    t_s = float(speciation.speciation_time(top))
    times = jnp.linspace(t_s - 0.8, t_s + 0.8, 9)
    same, _ = jax.jit(lambda k: backward.commitment_curves(mixture, k, times, num_pairs, num_steps=num_steps))(key)
    level = 0.75  # midway between 1 (t -> 0) and sum_c rho_c^2 = 1/2 (t -> infinity)
    measured = float(speciation.crossing_time(times, jnp.mean(same, axis=0), level))
    exact = speciation.commitment_theory(speciation.signal_strength(times, np.sqrt(dim)), 0.0, 1.0)[0]
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
