"""Linear flow-matching closed forms (docs/theory.md section 5) against numerical solutions."""

import jax
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.integrate import solve_ivp

from diffdyn.dynamics.theory import flow_matching


def _central_difference(f, x, i, h):
    """Fourth-order central difference of ``f`` at ``x`` in coordinate ``i`` with step ``h``."""
    step = h * np.eye(len(x))[i]
    stencil = [(-2, 1 / 12), (-1, -2 / 3), (1, 2 / 3), (2, -1 / 12)]
    return sum(c * f(x + k * step) for k, c in stencil) / h


def test_generated_variance_check_values():
    tau = np.array([0.01, 0.1, 1.0, 10.0])
    expected = [1.42855, 3.44837, 9.60804, 10.0]
    assert_allclose(flow_matching.generated_variance(10.0, 0.1, tau), expected, rtol=1e-5)


def test_closed_form_matches_quadrature_in_t():
    grid = np.meshgrid(np.logspace(-2, 2, 5), [0.0, 0.1, 0.8], np.logspace(-4, 3, 8))
    lam, q, tau = (a.ravel()[:, None] for a in grid)
    nodes, node_weights = np.polynomial.legendre.leggauss(200)
    t = 0.5 * (nodes[None, :] + 1.0)
    weights = np.asarray(flow_matching.weights(lam, q, tau, t))
    integral = 0.5 * np.sum(node_weights * weights, axis=1)
    closed = flow_matching.generated_variance(lam[:, 0], q[:, 0], tau[:, 0])
    assert_allclose(closed, np.exp(2 * integral), rtol=1e-10)  # exp(2 int_0^1 W dt)


def test_limits():
    lam, q = np.array([0.01, 1.0, 10.0]), np.array([0.0, 0.3, 1.0])
    assert_allclose(flow_matching.generated_variance(lam, q, 0.0), np.exp(2 * q), rtol=1e-15)
    assert_allclose(flow_matching.generated_variance(lam, q, 1e-12), np.exp(2 * q), rtol=1e-9)
    for tau in (1e6, 1e300):
        assert_allclose(flow_matching.generated_variance(lam, q, tau), lam, rtol=1e-12)


def test_weights_solve_gradient_flow():
    lam = np.array([0.05, 0.5, 3.0, 10.0])
    t = np.array([0.1, 0.5, 0.9, 0.99])
    q = np.array([0.9, 0.0, 0.3, -0.2])
    eta = 0.7
    taus = np.array([0.05, 0.3, 1.0, 4.0])
    d, cross = t**2 * lam + (1 - t) ** 2, t * lam - (1 - t)

    def rhs(_, w):  # L = E (w x_t - (x1 - x0))^2 = w^2 d - 2 w cross + const
        return -eta * (2.0 * w * d - 2.0 * cross)

    sol = solve_ivp(rhs, (0, taus[-1]), q, "DOP853", t_eval=taus, rtol=1e-12, atol=1e-14)
    closed = flow_matching.weights(lam[None, :], q[None, :], taus[:, None], t[None, :], eta=eta)
    assert_allclose(closed, sol.y.T, atol=1e-8, rtol=0)


@pytest.mark.parametrize(
    "lam, q, tau",
    [(10.0, 0.1, 0.1), (0.3, 0.5, 3.0), (1.0, 0.3, 1e-6), (0.5, 0.2, 0.0), (0.5, 0.2, 1e300)],
)
def test_gradients_match_central_differences(lam, q, tau):
    def variance(x):
        return flow_matching.generated_variance(*x)

    args = np.array([lam, q, tau])
    grads = jax.grad(variance)(args)
    assert np.all(np.isfinite(grads))
    for i, h in enumerate([1e-3 * lam, 1e-3, 1e-3 * max(tau, 1e-4)]):
        fd = _central_difference(variance, args, i, h)
        assert_allclose(grads[i], fd, rtol=1e-6, atol=1e-12)
