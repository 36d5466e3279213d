"""Gaussian data: spectra, rotations, sampling and input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics.validation import ConfigError
from diffdyn.models.distributions import gaussian


def test_random_rotation_is_orthogonal_and_seeded():
    rotation = gaussian.random_rotation(jax.random.key(0), 7)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(7), atol=1e-12)
    np.testing.assert_array_equal(rotation, gaussian.random_rotation(jax.random.key(0), 7))


def test_spectra():
    np.testing.assert_allclose(gaussian.log_spaced_spectrum(5, 1e-2, 1e2), [1e-2, 1e-1, 1, 10, 100])
    np.testing.assert_allclose(gaussian.power_law_spectrum(3, 2.0, 4.0), [4.0, 1.0, 4 / 9])
    values = gaussian.log_normal_spectrum(jax.random.key(1), 256)
    assert abs(float(jnp.mean(values)) - 1.0) < 1e-12 and float(values.min()) > 0


def test_samples_have_the_covariance():
    data = gaussian.gaussian_data(jnp.array([0.5, 2.0, 4.0]), gaussian.random_rotation(jax.random.key(2), 3), jnp.array([1.0, -1.0, 0.0]))
    samples = gaussian.sample(jax.random.key(3), data, 200_000)
    mean, cov = gaussian.empirical_data(samples)
    np.testing.assert_allclose(mean, data.mean, atol=0.02)
    np.testing.assert_allclose(cov, data.covariance, atol=0.05)


@pytest.mark.parametrize("power", [[4.0, 2.0, 1.0, 1.0, 2.0], [4.0, 2.0, 1.0, 0.5, 1.0, 2.0]])
def test_stationary_data_is_circulant_with_fourier_eigenbasis(power):
    power = jnp.array(power)
    n = power.shape[0]
    data = gaussian.stationary_data(power)
    cov = data.covariance
    unitary = jnp.fft.fft(jnp.eye(n), norm="ortho")
    np.testing.assert_allclose(cov, jnp.real(jnp.conj(unitary).T @ (power[:, None] * unitary)), atol=1e-12)
    np.testing.assert_allclose(data.basis.T @ data.basis, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(data.basis.T @ cov @ data.basis, np.diag(data.eigenvalues), atol=1e-12)
    np.testing.assert_allclose(data.eigenvalues, power[gaussian.fourier_frequencies(n)])


@pytest.mark.parametrize("values", [[1.0, -0.5, 2.0], [1.0, float("nan"), 2.0], [1.0, float("inf")]])
def test_bad_spectrum_names_the_field(values):
    with pytest.raises(ConfigError, match=r"^spectrum: "):
        gaussian.gaussian_data(values)


def test_non_psd_covariance_is_rejected():
    with pytest.raises(ConfigError, match=r"^covariance: must be positive semi-definite"):
        gaussian.from_covariance([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ConfigError, match=r"^covariance: must be symmetric"):
        gaussian.from_covariance([[1.0, 0.5], [0.0, 1.0]])
    data = gaussian.from_covariance([[2.0, 1.0], [1.0, 2.0]])
    np.testing.assert_allclose(data.eigenvalues, [1.0, 3.0])


def test_asymmetric_power_is_rejected():
    with pytest.raises(ConfigError, match=r"^power: "):
        gaussian.stationary_data([4.0, 2.0, 1.0, 3.0])
