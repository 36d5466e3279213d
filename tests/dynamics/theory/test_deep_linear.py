"""Two-layer linear denoiser closed forms (docs/theory.md section 3) against numerical solutions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.integrate import solve_ivp

from diffdyn.dynamics.theory import deep_linear, linear

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def _central_difference(f, x, i, h):
    """Fourth-order central difference of ``f`` at ``x`` in coordinate ``i`` with step ``h``."""
    step = h * np.eye(len(x))[i]
    stencil = [(-2, 1 / 12), (-1, -2 / 3), (1, 2 / 3), (2, -1 / 12)]
    return sum(c * f(x + k * step) for k, c in stencil) / h


@pytest.mark.parametrize(
    "lam, q, tau, expected",
    [(10.0, 0.1, 0.1, 9.58328), (1.0, 0.1, 1.0, 0.966354), (0.01, 0.5, 0.1, 0.00324719)],
)
def test_generated_variance_check_values(lam, q, tau, expected):
    assert_allclose(deep_linear.generated_variance(lam, q, tau), expected, rtol=1e-5)


@pytest.mark.parametrize("symmetric", [True, False])
def test_closed_form_matches_log_sigma_quadrature(symmetric):
    grid = np.meshgrid(np.logspace(-3, 2, 6), [0.0, 0.01, 0.1, 0.5, 1.0], np.logspace(-4, 4, 9))
    lam, q, tau = (a.ravel() for a in grid)

    @jax.jit
    @jax.vmap
    def both(lam, q, tau):
        def weight_fn(sigma):
            return deep_linear.weights(lam, q, tau, sigma, symmetric=symmetric)

        closed = deep_linear.generated_variance(lam, q, tau, symmetric=symmetric)
        return closed, linear.generated_variance_quadrature(weight_fn)

    closed, numeric = both(lam, q, tau)
    assert_allclose(closed, numeric, rtol=1e-7)


def test_limits():
    lam = np.array([1e-3, 0.1, 1.0, 10.0])
    q = np.array([0.05, 0.1, 0.5, 0.9])
    at_zero = deep_linear.generated_variance(lam, q, 0.0)
    assert_allclose(at_zero, linear.generated_variance(lam, q, 0.0), rtol=1e-14)
    for tau in (1e5, 1e300):
        late = deep_linear.generated_variance(lam, q, tau)
        assert_allclose(late, linear.optimal_generated_variance(lam), rtol=1e-12)
    tau = np.array([0.0, 1.0, 1e3, 1e300])  # q = 0 is a fixed point: nothing is learned
    assert_allclose(deep_linear.generated_variance(1.0, 0.0, tau), SIGMA_MIN**2, rtol=1e-14)
    np.testing.assert_array_equal(deep_linear.weights(1.0, 0.0, tau, 0.5), 0.0)


@pytest.mark.parametrize("symmetric", [True, False])
def test_weights_solve_per_layer_gradient_flow(symmetric):
    lam = np.array([0.05, 0.5, 3.0, 10.0])
    sigma = np.array([0.3, 1.0, 0.05, 2.0])
    q = np.array([0.9, 0.01, 0.3, 0.0])
    eta = 0.7
    taus = np.array([0.05, 0.3, 1.0, 4.0])

    def dloss_dw(w):  # L = lam (1 - w)^2 + sigma^2 w^2
        return -2.0 * lam * (1.0 - w) + 2.0 * sigma**2 * w

    def rhs(_, y):  # layers a, b with w = a b; symmetric: a = b = p, w = p^2
        if symmetric:
            return -eta * dloss_dw(y**2) * 2.0 * y
        a, b = np.split(y, 2)
        g = dloss_dw(a * b)
        return -eta * np.concatenate([g * b, g * a])

    y0 = np.sqrt(q) if symmetric else np.concatenate([np.sqrt(q), np.sqrt(q)])
    sol = solve_ivp(rhs, (0, taus[-1]), y0, "DOP853", t_eval=taus, rtol=1e-12, atol=1e-14)
    product = sol.y**2 if symmetric else np.prod(np.split(sol.y, 2), axis=0)
    closed = deep_linear.weights(lam[None, :], q[None, :], taus[:, None], sigma[None, :], eta=eta, symmetric=symmetric)
    assert_allclose(closed, product.T, atol=1e-8, rtol=0)


def test_weight_emergence_time():
    lam, q, sigma, eta = 2.0, 1e-3, 0.1, 0.5
    tau = deep_linear.weight_emergence_time(lam, eta=eta)
    assert_allclose(tau, np.log(2) / (8 * eta * lam), rtol=1e-15)
    balanced = deep_linear.weight_emergence_time(lam, eta=eta, symmetric=False)
    assert_allclose(balanced, 2 * tau, rtol=1e-15)
    w_star = linear.optimal_weight(lam, sigma)
    doubled = 2 * w_star * q / (w_star + q)  # ~2 q for q << w*
    assert_allclose(deep_linear.weights(lam, q, tau, sigma, eta=eta), doubled, rtol=1e-13)


@pytest.mark.parametrize(
    "lam, q, tau",
    [(10.0, 0.1, 0.1), (0.01, 0.5, 3.0), (1.0, 0.3, 1e-6), (0.5, 0.2, 0.0), (0.5, 0.2, 1e300)],
)
@pytest.mark.parametrize("symmetric", [True, False])
def test_gradients_match_central_differences(lam, q, tau, symmetric):
    def variance(x):
        return deep_linear.generated_variance(*x, symmetric=symmetric)

    args = np.array([lam, q, tau])
    grads = jax.grad(variance)(args)
    assert np.all(np.isfinite(grads))
    for i, h in enumerate([1e-3 * lam, 1e-3, 1e-3 * max(tau, 1e-4)]):
        fd = _central_difference(variance, args, i, h)
        assert_allclose(grads[i], fd, rtol=1e-6, atol=1e-12)


def test_balanced_depth_two_numerical_flow_equals_closed_form():
    lam = jnp.array([0.01, 0.3, 3.0, 30.0])
    taus = jnp.geomspace(1e-3, 1e2, 9)
    sigma = jnp.array([0.1, 1.0, 10.0])
    numerical = deep_linear.balanced_weights(lam[None, :], 0.1, taus, sigma[:, None], depth=2).value
    closed = deep_linear.weights(lam[None, None, :], 0.1, taus[:, None, None], sigma[None, :, None], symmetric=False)
    np.testing.assert_allclose(numerical, closed, atol=1e-8)
    variance = deep_linear.balanced_generated_variance(lam, 0.1, taus, depth=2).value
    expected = deep_linear.generated_variance(lam[None, :], 0.1, taus[:, None], symmetric=False)
    np.testing.assert_allclose(variance, expected, rtol=1e-7)


def test_balanced_depth_three_is_slower_from_small_init_and_reaches_the_optimum():
    """Depth 3 from q = 0.01: the product grows like w^(4/3) (slower start than depth 2) and
    converges to w* = lam / (lam + sigma^2)."""
    lam, sigma = jnp.array([1.0]), 0.5
    taus = jnp.array([1.0, 200.0])
    deep = deep_linear.balanced_weights(lam, 0.01, taus, sigma, depth=3).value
    shallow = deep_linear.balanced_weights(lam, 0.01, taus, sigma, depth=2).value
    assert float(deep[0, 0]) < float(shallow[0, 0])
    np.testing.assert_allclose(deep[-1], lam / (lam + sigma**2), rtol=1e-8)
