"""Noise processes: VP/OU <-> EDM sigma time, and the Karras grid."""

import jax
import jax.numpy as jnp
import numpy as np

from diffdyn.dynamics import schedules


def test_vp_and_sigma_time_are_the_same_process():
    t = jnp.array([0.01, 0.1, 1.0, 3.0])
    sigma = schedules.sigma_from_vp_time(t)
    np.testing.assert_allclose(schedules.vp_time_from_sigma(sigma), t, rtol=1e-14)
    np.testing.assert_allclose(sigma**2, np.exp(2 * t) - 1, rtol=1e-14)
    # x_t = e^-t x0 + sqrt(Delta_t) xi  maps to  x0 + sigma z  after dividing by e^-t.
    x0, xi = jnp.array([0.3, -1.2]), jnp.array([0.7, 0.1])
    x_t = schedules.vp_signal_scale(t[:, None]) * x0[None, :] + jnp.sqrt(schedules.vp_noise_variance(t))[:, None] * xi[None, :]
    x_sigma = schedules.sigma_time_from_vp(x_t, t[:, None])
    np.testing.assert_allclose(x_sigma, x0[None, :] + sigma[:, None] * xi[None, :], rtol=1e-13)
    np.testing.assert_allclose(schedules.vp_from_sigma_time(x_sigma, sigma[:, None]), x_t, rtol=1e-13)


def test_karras_grid():
    grid = schedules.karras_sigmas(18)
    assert grid.shape == (19,)
    np.testing.assert_allclose([grid[0], grid[17], grid[18]], [80.0, 0.002, 0.0], rtol=1e-13)
    assert bool(jnp.all(jnp.diff(grid) < 0))
    # rho = 1 is a linear ramp; the default rho = 7 concentrates steps at small sigma.
    np.testing.assert_allclose(schedules.karras_sigmas(5, 1.0, 5.0, rho=1.0, append_zero=False), [5, 4, 3, 2, 1])
    middle = schedules.karras_sigmas(3, append_zero=False)[1]
    np.testing.assert_allclose(middle, ((80 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7, rtol=1e-13)


def test_log_sigma_grid():
    grid = schedules.log_sigma_grid(5, 0.01, 100.0)
    np.testing.assert_allclose(grid, [0.01, 0.1, 1, 10, 100], rtol=1e-13)
    assert jax.numpy.issubdtype(grid.dtype, jnp.floating)
