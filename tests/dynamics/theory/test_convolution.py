"""Convolutional denoiser theory (docs/theory.md section 4) against pixel-space computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.integrate import solve_ivp

from diffdyn.dynamics.theory import convolution, linear

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def _random_cov(n, seed):
    a = np.random.default_rng(seed).normal(size=(n, n))
    return a @ a.T / n


def _filter_matrix(w, n):
    """Pixel-space matrix of D(x)_m = sum_{j=-r..r} w_{j+r} x_{(m+j) mod N}."""
    radius = w.shape[0] // 2
    shifts = [np.roll(np.eye(n), j, axis=1) for j in range(-radius, radius + 1)]
    return jnp.tensordot(w, np.stack(shifts), axes=1)


def _pixel_loss(w, cov, sigma):
    """Exact E ||D(x0 + sigma z) - x0||^2 (summed over pixels) for x0 ~ N(0, cov)."""
    d = _filter_matrix(w, cov.shape[0])
    residual = d - jnp.eye(cov.shape[0])
    return jnp.trace(residual @ cov @ residual.T) + sigma**2 * jnp.trace(d @ d.T)


_pixel_loss_gradient = jax.jit(jax.grad(_pixel_loss))


def test_power_spectrum_and_stationary_covariance_are_inverse():
    n = 8
    cov = _random_cov(n, 0)
    dft = np.fft.fft(np.eye(n), norm="ortho")
    expected = np.real(np.diag(dft @ cov @ dft.conj().T))
    assert_allclose(convolution.power_spectrum(cov), expected, atol=1e-13)

    power = np.random.default_rng(1).uniform(0.1, 2.0, size=n)
    power = 0.5 * (power + np.roll(power[::-1], 1))  # power[k] == power[N-k]
    stationary = convolution.stationary_covariance(power)
    assert_allclose(stationary, dft.conj().T @ np.diag(power) @ dft, atol=1e-13)
    assert_allclose(convolution.power_spectrum(stationary), power, rtol=1e-13)


def test_circulant_model_is_linear_model_at_n_eta():
    n, eta = 8, 0.3
    power, tau = np.linspace(0.01, 3.0, n), np.logspace(-3, 2, 6)[:, None]
    assert_allclose(
        convolution.circulant_generated_variance(power, 0.2, tau, n_pixels=n, eta=eta),
        linear.generated_variance(power, 0.2, tau, eta=n * eta),
        rtol=1e-14,
    )
    assert_allclose(
        convolution.circulant_weights(power, 0.2, tau, 0.5, n_pixels=n, eta=eta),
        linear.weights(power, 0.2, tau, 0.5, eta=n * eta),
        rtol=1e-14,
    )


def test_patch_covariance_definition():
    n, k = 8, 5
    cov = _random_cov(n, 2)
    r = k // 2
    expected = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            expected[i, j] = np.mean([cov[(m + i - r) % n, (m + j - r) % n] for m in range(n)])
    assert_allclose(convolution.patch_covariance(cov, k), expected, atol=1e-14)


def test_patch_weights_solve_pixel_space_gradient_flow():
    n, k, sigma, eta = 8, 3, 0.6, 0.4
    cov = _random_cov(n, 3)
    cov_patch = convolution.patch_covariance(cov, k)
    w0 = np.array([0.1, 0.5, -0.2])

    def rhs(_, w):
        return -eta * np.asarray(_pixel_loss_gradient(w, cov, sigma))

    taus = np.array([0.01, 0.05, 0.2])
    sol = solve_ivp(rhs, (0, taus[-1]), w0, "DOP853", t_eval=taus, rtol=1e-12, atol=1e-14)
    closed = convolution.patch_weights(cov_patch, w0, taus, sigma, n_pixels=n, eta=eta)
    assert_allclose(closed, sol.y.T, atol=1e-8, rtol=0)
    start = convolution.patch_weights(cov_patch, w0, 0.0, sigma, n_pixels=n)
    assert_allclose(start, w0, atol=1e-15)


def test_patch_optimal_filter_is_the_fixed_point():
    n, k, sigma = 8, 5, 0.7
    cov = _random_cov(n, 4)
    cov_patch = convolution.patch_covariance(cov, k)
    w_star = convolution.patch_optimal_filter(cov_patch, sigma)
    assert_allclose(_pixel_loss_gradient(w_star, cov, sigma), 0.0, atol=1e-12)
    late = convolution.patch_weights(cov_patch, np.ones(k), 1e4, sigma, n_pixels=n)
    assert_allclose(late, w_star, atol=1e-13)


def test_patch_transfer_is_the_fourier_response():
    n = 8
    w = np.array([0.3, -0.1, 0.8, 0.2, 0.05])
    h = convolution.patch_transfer(w, n)
    modes = np.exp(2j * np.pi * np.outer(np.arange(n), np.arange(n)) / n)  # column k: mode k
    assert_allclose(_filter_matrix(w, n) @ modes, modes * h[None, :], atol=1e-13)


@pytest.mark.parametrize("q", [0.0, 0.3])
def test_full_width_patch_is_the_circulant_model(q):
    n, eta = 7, 0.5
    cov = _random_cov(n, 5)  # not stationary: both models only see its shift average
    tau = np.array([1e-4, 1e-2, 1.0, 1e2])
    cov_patch, power = convolution.patch_covariance(cov, n), convolution.power_spectrum(cov)
    patch = convolution.patch_generated_variance(cov_patch, q, tau, n_pixels=n, eta=eta)
    circulant = convolution.circulant_generated_variance(power, q, tau[:, None], n_pixels=n, eta=eta)
    assert_allclose(patch, circulant, rtol=1e-7)


def test_patch_quadrature_is_converged():
    n, k = 16, 5
    cov_patch = convolution.patch_covariance(_random_cov(n, 6), k)
    tau = np.logspace(-4, 2, 7)
    default = convolution.patch_generated_variance(cov_patch, 0.1, tau, n_pixels=n)
    nodes = 2 * linear.QUADRATURE_NODES
    finer = convolution.patch_generated_variance(cov_patch, 0.1, tau, n_pixels=n, num_nodes=nodes)
    assert_allclose(default, finer, rtol=1e-10)


def test_patch_generated_variance_matches_pixel_space_probability_flow():
    n, k, q, tau, eta = 8, 3, 0.2, 0.02, 1.0
    cov_patch = convolution.patch_covariance(_random_cov(n, 7), k)
    w0 = q * np.eye(k)[k // 2]

    @jax.jit
    def generator(u):  # dA/du = (I - D(e^u)) A
        w = convolution.patch_weights(cov_patch, w0, tau, jnp.exp(u), n_pixels=n, eta=eta)
        return jnp.eye(n) - _filter_matrix(w, n)

    def rhs(u, a):
        return (np.asarray(generator(u)) @ a.reshape(n, n)).ravel()

    u_span = (np.log(SIGMA_MAX), np.log(SIGMA_MIN))
    sol = solve_ivp(rhs, u_span, np.eye(n).ravel(), "DOP853", rtol=1e-11, atol=1e-13)
    a = sol.y[:, -1].reshape(n, n)
    generated = convolution.power_spectrum(SIGMA_MAX**2 * a @ a.T)
    closed = convolution.patch_generated_variance(cov_patch, q, tau, n_pixels=n, eta=eta)
    assert_allclose(closed, generated, rtol=1e-7)


def test_patch_functions_broadcast():
    n, k = 8, 3
    cov_patch = convolution.patch_covariance(_random_cov(n, 8), k)
    tau, sigma = np.array([0.1, 1.0]), np.array([[0.5], [1.0], [2.0]])
    weights = convolution.patch_weights(cov_patch, np.ones(k), tau, sigma, n_pixels=n)
    assert weights.shape == (3, 2, k)
    q = np.array([0.1, 0.2])
    variance = convolution.patch_generated_variance(cov_patch, q, tau[:, None], n_pixels=n)
    assert variance.shape == (2, 2, n)
    single = convolution.patch_generated_variance(cov_patch, 0.2, tau[1], n_pixels=n)
    assert_allclose(variance[1, 1], single, rtol=1e-14)
