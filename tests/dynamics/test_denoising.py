"""Denoising losses at fixed noise draws (exact for closed-form denoisers) and separation steps."""

import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics import denoising

RNG = np.random.default_rng(0)
CLEAN = RNG.normal(size=(2, 50, 3, 4))  # (set, sample, *shape)
NOISE = RNG.normal(size=(3, 50, 3, 4))  # (sigma, sample, *shape)
SIGMAS = np.array([0.1, 1.0, 5.0])


def scaled_identity(scale, x, sigma):
    """``D(x) = a x``: its per-sample loss is ``mean(((a - 1) x0 + a sigma z)^2)``."""
    return scale * x


def test_identity_loss_is_sigma_squared_times_the_noise_power():
    loss = denoising.sample_loss(scaled_identity, 1.0, jnp.asarray(CLEAN[0, 0]), jnp.asarray(NOISE[0, 0]), 0.3)
    np.testing.assert_allclose(loss, 0.09 * np.mean(NOISE[0, 0] ** 2), rtol=1e-13)


def test_loss_curves_are_the_exact_means_and_standard_errors_at_the_fixed_draws():
    scales = np.array([0.0, 0.5, 0.9, 1.0])  # one "checkpoint" per scale
    mean, error = denoising.loss_curves(scaled_identity, jnp.asarray(scales), jnp.asarray(CLEAN), jnp.asarray(NOISE), jnp.asarray(SIGMAS))
    assert mean.shape == error.shape == (2, 4, 3)
    a = scales[None, :, None, None, None, None]
    x0 = CLEAN[:, None, None]
    z = NOISE[None, None]
    per_sample = np.mean(((a - 1) * x0 + a * SIGMAS[None, None, :, None, None, None] * z) ** 2, axis=(-2, -1))  # (set, record, sigma, sample)
    np.testing.assert_allclose(mean, per_sample.mean(-1), rtol=1e-12)
    np.testing.assert_allclose(error, per_sample.std(-1, ddof=1) / np.sqrt(50), rtol=1e-12)
    np.testing.assert_allclose(mean[:, 0], np.broadcast_to(np.mean(CLEAN**2, axis=(1, 2, 3))[:, None], (2, 3)), rtol=1e-12)  # D = 0


def test_relative_gap_and_its_first_order_standard_error():
    gap, error = denoising.relative_gap(jnp.array([0.5, 3.0]), jnp.array([0.01, 0.03]), jnp.array([1.0, 2.0]), jnp.array([0.02, 0.04]))
    np.testing.assert_allclose(gap, [-0.5, 0.5], rtol=1e-15)
    np.testing.assert_allclose(error, [np.hypot(0.01, 0.5 * 0.02), np.hypot(0.03, 1.5 * 0.04) / 2.0], rtol=1e-15)
    samples = np.random.default_rng(1).normal([1.0, 2.0], [0.1, 0.2], size=(200_000, 2))  # the formula against the spread of the ratio
    ratio = samples[:, 0] / samples[:, 1] - 1
    np.testing.assert_allclose(denoising.relative_gap(1.0, 0.1, 2.0, 0.2)[1], ratio.std(), rtol=0.03)


STEPS = jnp.array([0, 1, 3, 10, 30, 100])


@pytest.mark.parametrize(
    ("gap", "expected"),
    [
        ([0.0, 0.01, -0.02, 0.05, 0.01, 0.0], np.nan),  # never above
        ([0.0, 0.2, 0.3, 0.05, 0.2, 0.3], 30.0),  # a first excursion that comes back does not count
        ([0.0, 0.0, -0.2, -0.3, -0.5, -0.4], 3.0),  # either sign
        ([0.2, 0.3, 0.4, 0.5, 0.6, 0.7], 0.0),  # apart from the start
        ([0.0, 0.2, 0.3, 0.4, 0.5, 0.05], np.nan),  # came back together at the end
        ([0.0, np.nan, 0.2, 0.2, 0.2, 0.2], 3.0),  # NaN is not above
        ([0.0, 0.0, 0.0, 0.0, 0.0, 0.11], 100.0),
    ],
)
def test_separation_step_is_the_start_of_the_final_run_apart(gap, expected):
    apart = jnp.abs(jnp.asarray(gap)) > 0.1
    np.testing.assert_equal(float(denoising.separation_step(STEPS, apart)), expected)
