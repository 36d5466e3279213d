"""Closed-form learning dynamics of the one-layer linear denoiser [WP sec. 3-4].

Model: ``D(x; sigma) = W_sigma x + b_sigma`` with independent parameters at every noise level,
trained on data with mean ``mu`` and covariance ``Sigma = sum_k lam_k u_k u_k^T``
(docs/theory.md section 2).

Conventions (docs/theory.md section 1):

- EDM / variance-exploding sigma-time: ``x = x0 + sigma z``; samples are drawn with the
  probability-flow ODE ``dx/du = x - D(x, e^u)`` in ``u = ln sigma`` from ``sigma_max`` down to
  ``sigma_min``, starting from ``N(0, sigma_max^2 I)``.
- Loss per noise level ``L_sigma = E ||D(x0 + sigma z; sigma) - x0||^2``: summed over
  dimensions, not halved, not averaged.
- Gradient flow ``dtheta/dtau = -eta grad L_sigma``; training time ``tau`` is learning rate x
  number of steps, so only the product ``eta * tau`` matters in the flow.

Per-mode functions take the mode variance ``lam`` (an eigenvalue of ``Sigma``), the aligned
initial weight ``q`` (``W_sigma(0) = sum_k q_k u_k u_k^T``), the training time ``tau`` and the
noise level ``sigma``. All inputs are broadcast together first and combined elementwise, so any
grid of (mode, tau, sigma, ...) is one call; every function is pure ``jax.numpy``,
differentiable, and wrapped in ``jax.jit`` (except :func:`generated_variance_quadrature`, which
takes a Python callable and is meant to be called inside a jitted function).

[WP] B. Wang, C. Pehlevan, "An Analytical Theory of Spectral Bias in the Learning Dynamics of
Diffusion Models", arXiv 2503.03206, sec. 3 (Gaussian equivalence, gradient flow) and sec. 4
(generated distribution; the printed lemma has the sign of the exponent flipped, the sign used
here is the one consistent with the probability-flow ODE).
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
QUADRATURE_NODES = 128
"""Default Gauss-Legendre nodes in ``u = ln sigma``: relative error ~1e-13 (see the tests)."""


@jax.jit
def optimal_weight(lam: Float[ArrayLike, "*b"], sigma: Float[ArrayLike, "*b"]) -> Float[Array, "*b"]:
    """Ridge-regression optimum ``w* = lam / (lam + sigma^2)`` of one mode [WP sec. 3]."""
    lam, sigma = jnp.broadcast_arrays(lam, sigma)
    return lam / (lam + sigma**2)


@jax.jit
def optimal_loss(lam: Float[ArrayLike, "*b"], sigma: Float[ArrayLike, "*b"]) -> Float[Array, "*b"]:
    """Minimal per-mode loss ``sigma^2 lam / (lam + sigma^2)`` (summed, un-halved) [WP sec. 3]."""
    lam, sigma = jnp.broadcast_arrays(lam, sigma)
    return sigma**2 * lam / (lam + sigma**2)


@jax.jit
def weights(
    lam: Float[ArrayLike, "*b"],
    q: Float[ArrayLike, "*b"],
    tau: Float[ArrayLike, "*b"],
    sigma: Float[ArrayLike, "*b"],
    *,
    eta: Float[ArrayLike, "*b"] = 1.0,
) -> Float[Array, "*b"]:
    """Gradient-flow weight ``psi(sigma, tau)`` of one mode from the aligned init ``q``.

    ``psi = w* + (q - w*) exp(-2 eta tau (sigma^2 + lam))`` [WP sec. 3]; ``tau`` is training time
    (learning rate x steps) for the summed, un-halved loss.
    """
    lam, q, tau, sigma, eta = jnp.broadcast_arrays(lam, q, tau, sigma, eta)
    w_star = optimal_weight(lam, sigma)
    return w_star + (q - w_star) * jnp.exp(-2.0 * eta * tau * (sigma**2 + lam))


@jax.jit
def gd_weights(
    lam: Float[ArrayLike, "*b"],
    q: Float[ArrayLike, "*b"],
    steps: ArrayLike,
    sigma: Float[ArrayLike, "*b"],
    *,
    eta: Float[ArrayLike, "*b"],
) -> Float[Array, "*b"]:
    """Per-mode weight after ``steps`` full-batch gradient-descent steps of size ``eta``.

    ``w* + (q - w*) (1 - 2 eta (sigma^2 + lam))^steps`` (docs/theory.md sec. 2): stable iff
    ``eta < 1 / (sigma^2 + lam)``; tends to :func:`weights` at ``tau = eta * steps`` as
    ``eta -> 0``, with an error of order ``eta``. Give ``steps`` as integers when the contraction
    factor can be negative (``eta > 1 / (2 (sigma^2 + lam))``).
    """
    lam, q, steps, sigma, eta = jnp.broadcast_arrays(lam, q, steps, sigma, eta)
    w_star = optimal_weight(lam, sigma)
    return w_star + (q - w_star) * jnp.power(1.0 - 2.0 * eta * (sigma**2 + lam), steps)


@jax.jit
def affine_weights(
    w0: Float[ArrayLike, "d d"],
    b0: Float[ArrayLike, " d"],
    mu: Float[ArrayLike, " d"],
    cov: Float[ArrayLike, "d d"],
    sigma: Float[ArrayLike, ""],
    tau: Float[ArrayLike, ""],
    *,
    eta: Float[ArrayLike, ""] = 1.0,
) -> tuple[Float[Array, "d d"], Float[Array, " d"]]:
    """Gradient flow of ``(W, b)`` at one noise level from any init, data mean ``mu`` != 0.

    With ``W~ = [W b]`` and ``M = [[cov + sigma^2 I + mu mu^T, mu], [mu^T, 1]]`` the flow of the
    summed, un-halved loss is ``W~(tau) = W~* + (W~(0) - W~*) expm(-2 eta M tau)``
    (docs/theory.md sec. 2, [WP sec. 3]); ``W* = cov (cov + sigma^2 I)^-1``, ``b* = (I - W*) mu``.
    The matrix exponential uses the eigendecomposition of the symmetric ``M``. Scalar ``sigma``
    and ``tau``: ``jax.vmap`` over grids.
    """
    w0, b0, mu, cov = (jnp.asarray(a) for a in (w0, b0, mu, cov))
    eye = jnp.eye(mu.shape[0])
    ridge = cov + sigma**2 * eye
    w_star = jnp.linalg.solve(ridge, cov).T  # = cov ridge^-1, both symmetric
    b_star = mu - w_star @ mu
    m = jnp.block([[ridge + jnp.outer(mu, mu), mu[:, None]], [mu[None, :], jnp.ones((1, 1))]])
    evals, evecs = jnp.linalg.eigh(m)
    decay = (evecs * jnp.exp(-2.0 * eta * tau * evals)[None, :]) @ evecs.T
    gap = jnp.concatenate([w0 - w_star, (b0 - b_star)[:, None]], axis=1) @ decay
    return w_star + gap[:, :-1], b_star + gap[:, -1]


_EIN_SERIES = np.array([(-1) ** (k + 1) / (k * math.factorial(k)) for k in range(26, 0, -1)] + [0])
"""``Ein(x) = sum_k (-1)^(k+1) x^k / (k k!)`` to ``x^26``, highest power first (for polyval)."""
_E1_FRACTION_DEPTH = 60


def _e1_large(x: Float[Array, "*b"]) -> Float[Array, "*b"]:
    """``E1(x)`` for ``x >= 2``: continued fraction ``e^-x / (x+1 - 1/(x+3 - 4/(x+5 - ...)))``."""

    def level(i, tail):
        k = _E1_FRACTION_DEPTH - i
        return k**2 / (x + 2 * k + 1 - tail)

    tail = jax.lax.fori_loop(0, _E1_FRACTION_DEPTH, level, jnp.zeros_like(x))
    return jnp.exp(-x) / (x + 1.0 - tail)


@jax.custom_jvp
@jax.jit
def _ein(x: Float[Array, "*b"]) -> Float[Array, "*b"]:
    """Entire exponential integral ``Ein(x) = int_0^x (1 - e^-t)/t dt = E1(x) + gamma + ln x``.

    Equal to ``-Ei(-x) + gamma + ln x`` but regular at ``x = 0``, so closed forms written with it
    need no branch at ``tau = 0`` and have exact gradients there. ``jax.scipy.special.expi`` is
    not used: on batched inputs it runs every branch, and its continued fraction at arguments
    below ~1e-8 (early training times) loops for minutes. For ``x >= 0`` (small negative ``x``
    also works): power series for ``x <= 2``, continued fraction above; relative error ~1e-16.
    """
    small = x <= 2.0
    series = jnp.polyval(jnp.asarray(_EIN_SERIES, x.dtype), jnp.where(small, x, 2.0))
    y = jnp.where(small, 2.0, x)
    return jnp.where(small, series, _e1_large(y) + np.euler_gamma + jnp.log(y))


@_ein.defjvp
def _ein_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    nonzero = x != 0
    slope = jnp.where(nonzero, -jnp.expm1(-x) / jnp.where(nonzero, x, 1.0), 1.0)
    return _ein(x), slope * dx


@jax.jit
def generated_variance(
    lam: Float[ArrayLike, "*b"],
    q: Float[ArrayLike, "*b"],
    tau: Float[ArrayLike, "*b"],
    *,
    eta: Float[ArrayLike, "*b"] = 1.0,
    sigma_min: Float[ArrayLike, "*b"] = SIGMA_MIN,
    sigma_max: Float[ArrayLike, "*b"] = SIGMA_MAX,
) -> Float[Array, "*b"]:
    """Variance ``lam~(tau)`` of one mode in the generated distribution [WP sec. 4].

    docs/theory.md sec. 2: ``lam~ = sigma_max^2 Phi(sigma_min)^2 / Phi(sigma_max)^2`` with
    ``Phi(s) = sqrt(lam + s^2) exp[(1-q)/2 Ei(-a s^2) e^{-a lam} - 1/2 Ei(-a (s^2 + lam))]``,
    ``a = 2 eta tau``. Evaluated in log space with ``Ei(-x) = gamma + ln x - Ein(x)``, in which
    the logarithms of ``a`` cancel::

        ln lam~ = 2 ln s1 + Ein(a (s0^2 + lam)) - Ein(a (s1^2 + lam))
                  + (1-q) e^{-a lam} [2 ln(s0/s1) - Ein(a s0^2) + Ein(a s1^2)]

    with ``s0 = sigma_min`` and ``s1 = sigma_max``. So ``tau = 0`` gives exactly
    ``sigma_max^{2q} sigma_min^{2(1-q)}`` (with exact, finite gradients) and large ``tau`` tends
    to :func:`optimal_generated_variance` without overflow.
    Training time ``tau`` = learning rate x steps, summed un-halved loss.
    """
    lam, q, tau, eta, s0, s1 = jnp.broadcast_arrays(lam, q, tau, eta, sigma_min, sigma_max)
    a = 2.0 * eta * tau
    arguments = jnp.stack([a * s0**2, a * s1**2, a * (s0**2 + lam), a * (s1**2 + lam)])
    ein_s0, ein_s1, ein_s0_lam, ein_s1_lam = _ein(arguments)  # one Ein in the compiled program
    unlearned = (1.0 - q) * jnp.exp(-a * lam) * (2.0 * jnp.log(s0 / s1) - ein_s0 + ein_s1)
    return jnp.exp(2.0 * jnp.log(s1) + unlearned + ein_s0_lam - ein_s1_lam)


@jax.jit
def optimal_generated_variance(
    lam: Float[ArrayLike, "*b"],
    *,
    sigma_min: Float[ArrayLike, "*b"] = SIGMA_MIN,
    sigma_max: Float[ArrayLike, "*b"] = SIGMA_MAX,
) -> Float[Array, "*b"]:
    """``tau -> inf`` limit of :func:`generated_variance` [WP sec. 4].

    ``sigma_max^2 (lam + sigma_min^2) / (lam + sigma_max^2)``: the data variance ``lam`` up to
    the truncation of the noise schedule at ``sigma_min`` and ``sigma_max``.
    """
    lam, s0, s1 = jnp.broadcast_arrays(lam, sigma_min, sigma_max)
    return s1**2 * (lam + s0**2) / (lam + s1**2)


def log_sigma_nodes(
    *,
    sigma_min: Float[ArrayLike, ""] = SIGMA_MIN,
    sigma_max: Float[ArrayLike, ""] = SIGMA_MAX,
    num_nodes: int = QUADRATURE_NODES,
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """Gauss-Legendre nodes ``sigma_j`` and weights ``h_j`` in ``u = ln sigma`` on
    ``[ln sigma_min, ln sigma_max]``: ``integral f(e^u) du ~ sum_j h_j f(sigma_j)``."""
    nodes, node_weights = np.polynomial.legendre.leggauss(num_nodes)
    log_s0, log_s1 = jnp.log(sigma_min), jnp.log(sigma_max)
    half = 0.5 * (log_s1 - log_s0)
    return jnp.exp(0.5 * (log_s1 + log_s0) + half * nodes), half * node_weights


def generated_variance_from_nodes(
    weights_at_nodes: Float[Array, "n *modes"],  # noqa: F821 (jaxtyping variadic dims)
    node_weights: Float[Array, " n"],
    sigma_max: Float[ArrayLike, ""] = SIGMA_MAX,
) -> Float[Array, "*modes"]:
    """``sigma_max^2 exp(2 sum_j h_j (w(sigma_j) - 1))`` for per-mode weights at the nodes of
    :func:`log_sigma_nodes` (nodes on the leading axis)."""
    integral = jnp.tensordot(node_weights, weights_at_nodes - 1.0, axes=(0, 0))
    return jnp.exp(2.0 * jnp.log(sigma_max) + 2.0 * integral)


def generated_variance_quadrature(
    weight_fn: Callable[[Float[Array, ""]], Float[Array, "*modes"]],
    *,
    sigma_min: Float[ArrayLike, ""] = SIGMA_MIN,
    sigma_max: Float[ArrayLike, ""] = SIGMA_MAX,
    num_nodes: int = QUADRATURE_NODES,
) -> Float[Array, "*modes"]:
    """Generated variance of modes whose denoiser weights commute, by quadrature in ``ln sigma``.

    ``weight_fn(sigma)`` maps one scalar noise level to the real per-mode weights (for a complex
    transfer function pass its real part). The probability-flow ODE ``dx/du = x - D(x, e^u)``
    multiplies each mode by ``exp(int (w(e^u) - 1) du)`` between ``u = ln sigma_max`` and
    ``ln sigma_min``, so the variance is
    ``sigma_max^2 exp(2 int_{ln sigma_min}^{ln sigma_max} (w(e^u) - 1) du)``, computed with
    ``num_nodes`` Gauss-Legendre nodes (static).
    """
    sigmas, node_weights = log_sigma_nodes(sigma_min=sigma_min, sigma_max=sigma_max, num_nodes=num_nodes)
    return generated_variance_from_nodes(jax.vmap(weight_fn)(sigmas), node_weights, sigma_max)
