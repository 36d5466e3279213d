"""One-layer linear denoiser closed forms (docs/theory.md section 2) against numerical solutions."""

import jax
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.integrate import quad, solve_ivp

from diffdyn.dynamics.theory import linear

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def _central_difference(f, x, i, h):
    """Fourth-order central difference of ``f`` at ``x`` in coordinate ``i`` with step ``h``."""
    step = h * np.eye(len(x))[i]
    stencil = [(-2, 1 / 12), (-1, -2 / 3), (1, 2 / 3), (2, -1 / 12)]
    return sum(c * f(x + k * step) for k, c in stencil) / h


@pytest.mark.parametrize(
    "lam, q, tau, expected, rtol",
    [
        (10.0, 0.1, 0.1, 2.0346, 5e-5),  # printed to 5 digits
        (1.0, 0.1, 1.0, 0.269706, 1e-5),
        (0.1, 0.1, 10.0, 0.0357079, 1e-5),
        (0.01, 0.5, 0.1, 0.00340316, 1e-5),
    ],
)
def test_generated_variance_check_values(lam, q, tau, expected, rtol):
    assert_allclose(linear.generated_variance(lam, q, tau), expected, rtol=rtol)


def test_closed_form_matches_log_sigma_quadrature():
    grid = np.meshgrid(np.logspace(-3, 2, 6), [0.0, 0.1, 0.5, 1.0], np.logspace(-6, 5, 12))
    lam, q, tau = (a.ravel() for a in grid)

    @jax.jit
    @jax.vmap
    def both(lam, q, tau):
        numeric = linear.generated_variance_quadrature(lambda s: linear.weights(lam, q, tau, s))
        return linear.generated_variance(lam, q, tau), numeric

    closed, numeric = both(lam, q, tau)
    assert_allclose(closed, numeric, rtol=1e-7)


def test_quadrature_helper_matches_adaptive_quadrature_in_sigma():
    lam, q, tau = 0.3, 0.2, 0.05

    def integrand(s):  # (W_s - 1) / s
        return (float(linear.weights(lam, q, tau, s)) - 1.0) / s

    integral, _ = quad(integrand, SIGMA_MIN, SIGMA_MAX, epsabs=1e-13, epsrel=1e-13, limit=200)
    helper = linear.generated_variance_quadrature(lambda s: linear.weights(lam, q, tau, s))
    assert_allclose(helper, SIGMA_MAX**2 * np.exp(2.0 * integral), rtol=1e-10)


def test_generated_variance_limits():
    lam = np.array([1e-3, 0.1, 1.0, 10.0, 100.0])
    q = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    at_zero = linear.generated_variance(lam, q, 0.0)
    assert_allclose(at_zero, SIGMA_MAX ** (2 * q) * SIGMA_MIN ** (2 * (1 - q)), rtol=1e-14)
    assert_allclose(linear.generated_variance(lam, q, 1e-12), at_zero, rtol=1e-6)
    target = linear.optimal_generated_variance(lam)
    assert_allclose(target, SIGMA_MAX**2 * (lam + SIGMA_MIN**2) / (lam + SIGMA_MAX**2), rtol=1e-15)
    for tau in (1e8, 1e300):
        assert_allclose(linear.generated_variance(lam, q, tau), target, rtol=1e-12)


def test_low_variance_mode_dips_then_recovers():
    tau = np.logspace(-4, 6, 201)
    curve = np.asarray(linear.generated_variance(0.01, 0.5, tau))
    lowest = curve.argmin()
    assert 0 < lowest < len(tau) - 1
    assert curve[lowest] < 0.1 * min(curve[0], curve[-1])
    assert_allclose(curve[-1], linear.optimal_generated_variance(0.01), rtol=1e-10)


def test_weights_solve_gradient_flow():
    lam = np.array([0.01, 0.5, 3.0, 10.0])
    sigma = np.array([0.3, 1.0, 0.05, 2.0])
    q = np.array([0.9, 0.0, 0.3, -0.2])
    eta = 0.7
    taus = np.array([0.01, 0.1, 0.5, 2.0])

    def rhs(_, w):  # -eta dL/dw, L = lam (1 - w)^2 + sigma^2 w^2
        return -eta * (-2.0 * lam * (1.0 - w) + 2.0 * sigma**2 * w)

    sol = solve_ivp(rhs, (0, taus[-1]), q, "DOP853", t_eval=taus, rtol=1e-12, atol=1e-14)
    closed = linear.weights(lam[None, :], q[None, :], taus[:, None], sigma[None, :], eta=eta)
    assert_allclose(closed, sol.y.T, atol=1e-8, rtol=0)


def test_optimum_and_its_loss():
    lam, sigma = np.array([0.01, 1.0, 50.0]), np.array([2.0, 1.0, 0.1])
    w_star = linear.optimal_weight(lam, sigma)
    assert_allclose(linear.weights(lam, 0.3, 1e4, sigma), w_star, rtol=1e-14)
    loss = lam * (1 - w_star) ** 2 + sigma**2 * w_star**2
    assert_allclose(linear.optimal_loss(lam, sigma), loss, rtol=1e-14)


def test_gd_one_step_and_first_order_convergence_to_flow():
    lam, q, sigma, tau = 2.0, 0.1, 0.5, 0.4
    eta = 0.05
    grad = -2.0 * lam * (1.0 - q) + 2.0 * sigma**2 * q
    assert_allclose(linear.gd_weights(lam, q, 1, sigma, eta=eta), q - eta * grad, rtol=1e-14)

    steps = np.array([50, 100, 200, 400, 800])
    etas = tau / steps
    flow = linear.weights(lam, q, tau, sigma)
    errors = np.abs(linear.gd_weights(lam, q, steps, sigma, eta=etas) - flow)
    slope = np.polyfit(np.log(etas), np.log(errors), 1)[0]
    assert 0.9 <= slope <= 1.1


def _augmented_flow(w0, b0, mu, cov, sigma, eta, tau):
    """Integrate dW/dtau = -eta grad_W, db/dtau = -eta grad_b with docs/theory.md sec. 2 gradients."""
    d = mu.shape[0]

    def rhs(_, y):
        w, b = y[: d * d].reshape(d, d), y[d * d :]
        grad_b = 2.0 * (w @ mu + b - mu)
        grad_w = 2.0 * (w @ (cov + sigma**2 * np.eye(d)) - cov) + np.outer(grad_b, mu)
        return -eta * np.concatenate([grad_w.ravel(), grad_b])

    y0 = np.concatenate([w0.ravel(), b0])
    y = solve_ivp(rhs, (0.0, tau), y0, "DOP853", rtol=1e-12, atol=1e-14).y[:, -1]
    return y[: d * d].reshape(d, d), y[d * d :]


def test_affine_weights_match_matrix_gradient_flow():
    rng = np.random.default_rng(0)
    d = 4
    a = rng.normal(size=(d, d))
    cov = a @ a.T / d
    mu, b0, w0 = rng.normal(size=d), rng.normal(size=d), 0.3 * rng.normal(size=(d, d))
    sigma, eta = 0.7, 0.5
    for tau in (0.05, 0.6):
        w, b = linear.affine_weights(w0, b0, mu, cov, sigma, tau, eta=eta)
        w_ref, b_ref = _augmented_flow(w0, b0, mu, cov, sigma, eta, tau)
        assert_allclose(w, w_ref, atol=1e-8, rtol=0)
        assert_allclose(b, b_ref, atol=1e-8, rtol=0)
    w_inf, b_inf = linear.affine_weights(w0, b0, mu, cov, sigma, 1e4, eta=eta)
    w_star = cov @ np.linalg.inv(cov + sigma**2 * np.eye(d))
    assert_allclose(w_inf, w_star, atol=1e-12)
    assert_allclose(b_inf, mu - w_star @ mu, atol=1e-12)


def test_affine_weights_without_mean_reduce_to_per_mode_weights():
    rng = np.random.default_rng(1)
    d = 3
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam, q = np.array([0.05, 1.0, 4.0]), np.array([0.2, 0.0, 0.8])
    cov, w0, b0 = basis @ np.diag(lam) @ basis.T, basis @ np.diag(q) @ basis.T, rng.normal(size=d)
    sigma, tau, eta = 0.4, 0.3, 1.5
    w, b = linear.affine_weights(w0, b0, np.zeros(d), cov, sigma, tau, eta=eta)
    psi = linear.weights(lam, q, tau, sigma, eta=eta)
    assert_allclose(w, basis @ np.diag(psi) @ basis.T, atol=1e-13)
    assert_allclose(b, b0 * np.exp(-2 * eta * tau), atol=1e-13)


def test_broadcasting_and_jit():
    lam, tau = np.logspace(-2, 1, 4), np.logspace(-3, 2, 5)
    grid = jax.jit(linear.generated_variance)(lam[:, None], 0.1, tau)
    assert grid.shape == (4, 5)
    assert_allclose(grid[2, 3], linear.generated_variance(lam[2], 0.1, tau[3]), rtol=1e-14)
    assert linear.weights(lam[:, None], 0.1, tau, 0.5).shape == (4, 5)


@pytest.mark.parametrize(
    "lam, q, tau",
    [(10.0, 0.1, 0.1), (0.01, 0.5, 2.0), (1.0, 0.3, 1e-6), (0.5, 0.2, 0.0), (0.5, 0.2, 1e300)],
)
def test_gradients_match_central_differences(lam, q, tau):
    def variance(x):
        return linear.generated_variance(*x)

    args = np.array([lam, q, tau])
    grads = jax.grad(variance)(args)
    assert np.all(np.isfinite(grads))
    for i, h in enumerate([1e-3 * lam, 1e-3, 1e-3 * max(tau, 1e-4)]):
        fd = _central_difference(variance, args, i, h)
        assert_allclose(grads[i], fd, rtol=1e-6, atol=1e-12)


def test_gradient_at_tau_zero_is_exact():
    grads = jax.grad(linear.generated_variance, argnums=(0, 1, 2))(0.5, 0.2, 0.0)
    assert all(np.isfinite(g) for g in grads)
    value = linear.generated_variance(0.5, 0.2, 0.0)
    assert_allclose(grads[0], 0.0, atol=1e-18)
    assert_allclose(grads[1], 2 * np.log(SIGMA_MAX / SIGMA_MIN) * value, rtol=1e-13)
