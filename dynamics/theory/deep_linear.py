"""Closed-form learning dynamics of two-layer linear denoisers [WP sec. 5.1].

Models (docs/theory.md section 3), per noise level ``sigma`` and from an init aligned with the data
eigenbasis, so that every mode ``k`` evolves on its own:

- symmetric ``D(x) = P_sigma P_sigma^T x``: per-mode product weight ``w = p^2``;
- balanced non-symmetric ``D(x) = W2 W1 x`` (``W1 = W2^T`` at init): ``w = a b`` with ``a = b``.

With the per-mode loss ``L = lam (1 - w)^2 + sigma^2 w^2`` the product weight follows the
logistic equation ``dw/dtau = rate * w (1 - w / w*)``, ``w* = lam / (lam + sigma^2)``, with
``rate = 8 eta lam`` (symmetric) or ``4 eta lam`` (balanced), independent of ``sigma``.
``q = 0`` is a fixed point: a mode that starts at zero is never learned. Weights must start at
``q >= 0`` (a square ``p^2`` or a balanced product ``a^2``).

Conventions (docs/theory.md section 1): EDM sigma-time ``x = x0 + sigma z``; per-noise-level loss
summed over dimensions and not halved; gradient flow ``dtheta/dtau = -eta grad L`` on every
layer's parameters; training time ``tau`` = learning rate x number of steps. Inputs broadcast
together elementwise over any (mode, tau, sigma, ...) grid; functions are jitted with
``symmetric`` static.

[WP] B. Wang, C. Pehlevan, arXiv 2503.03206, sec. 5.1 (deep linear networks).
"""

from functools import partial

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from diffdyn.dynamics.status import Solved, from_diffrax

from . import linear
from .linear import QUADRATURE_NODES, SIGMA_MAX, SIGMA_MIN


def _rate(lam: Float[ArrayLike, "*b"], eta: Float[ArrayLike, "*b"], symmetric: bool) -> Float[Array, "*b"]:
    """Logistic rate ``8 eta lam`` (symmetric ``P P^T``) or ``4 eta lam`` (balanced ``W2 W1``)."""
    lam, eta = jnp.broadcast_arrays(lam, eta)
    return (8.0 if symmetric else 4.0) * eta * lam


def _logistic_factors(
    lam: Float[Array, "*b"],
    q: Float[Array, "*b"],
    tau: Float[Array, "*b"],
    eta: Float[Array, "*b"],
    symmetric: bool,
) -> tuple[Float[Array, "*b"], Float[Array, "*b"]]:
    """``s = q / (q + (1-q) E)`` and ``rho = s (1 - E)`` with ``E = exp(-rate tau)``.

    The weight is ``w = lam s / (lam + rho sigma^2)``: ``s`` runs from ``q`` to 1 and ``rho``
    from 0 to 1 as ``tau`` goes from 0 to infinity. ``s = 0`` at the fixed point ``q = 0``, also
    where ``E`` underflows (double-where keeps the gradient finite).
    """
    rate_tau = _rate(lam, eta, symmetric) * tau
    denominator = q + (1.0 - q) * jnp.exp(-rate_tau)
    positive = denominator > 0
    s = jnp.where(positive, q / jnp.where(positive, denominator, 1.0), 0.0)
    return s, -s * jnp.expm1(-rate_tau)


@partial(jax.jit, static_argnames=("symmetric",))
def weights(
    lam: Float[ArrayLike, "*b"],
    q: Float[ArrayLike, "*b"],
    tau: Float[ArrayLike, "*b"],
    sigma: Float[ArrayLike, "*b"],
    *,
    eta: Float[ArrayLike, "*b"] = 1.0,
    symmetric: bool = True,
) -> Float[Array, "*b"]:
    """Per-mode product weight ``W(sigma, tau) = w* q / ((w* - q) e^{-rate tau} + q)``.

    Logistic growth from ``q`` to ``w* = lam / (lam + sigma^2)`` at ``rate = 8 eta lam``
    (``symmetric=True``, ``P P^T``) or ``4 eta lam`` (balanced ``W2 W1``) [WP sec. 5.1];
    ``tau`` = learning rate x steps for the summed, un-halved loss.
    """
    lam, q, tau, sigma, eta = jnp.broadcast_arrays(lam, q, tau, sigma, eta)
    s, rho = _logistic_factors(lam, q, tau, eta, symmetric)
    return lam * s / (lam + rho * sigma**2)


@partial(jax.jit, static_argnames=("symmetric",))
def weight_emergence_time(lam: Float[ArrayLike, "*b"], *, eta: Float[ArrayLike, "*b"] = 1.0, symmetric: bool = True) -> Float[Array, "*b"]:
    """``ln 2 / rate``: the time at which ``e^{-rate tau} = 1/2`` [WP sec. 5.1].

    From a small init ``q << w*`` the weight has then doubled; it scales as ``1 / (eta lam)``
    (training time = learning rate x steps, summed un-halved loss).
    """
    return jnp.log(2.0) / _rate(lam, eta, symmetric)


@partial(jax.jit, static_argnames=("symmetric",))
def generated_variance(
    lam: Float[ArrayLike, "*b"],
    q: Float[ArrayLike, "*b"],
    tau: Float[ArrayLike, "*b"],
    *,
    eta: Float[ArrayLike, "*b"] = 1.0,
    sigma_min: Float[ArrayLike, "*b"] = SIGMA_MIN,
    sigma_max: Float[ArrayLike, "*b"] = SIGMA_MAX,
    symmetric: bool = True,
) -> Float[Array, "*b"]:
    """Variance of one mode in the generated distribution of the two-layer model [WP sec. 5.1].

    ``sigma_max^2 Phi(sigma_min)^2 / Phi(sigma_max)^2`` with docs/theory.md sec. 3's
    ``Phi(s) = s^{(1-q)E/(q + (1-q)E)} [lam E + q (1-E)(lam + s^2)]^{q/(2q + 2(1-q)E)}``,
    ``E = e^{-rate tau}``; in the factors of :func:`_logistic_factors`::

        ln lam~ = 2 ln sigma_max + 2 (1-s) ln(sigma_min/sigma_max)
                  + s ln[(lam + rho sigma_min^2) / (lam + rho sigma_max^2)]

    ``tau = 0`` gives the linear model's ``sigma_max^{2q} sigma_min^{2(1-q)}``, ``q = 0`` gives
    ``sigma_min^2`` (nothing learned), ``tau -> inf`` the optimum
    ``sigma_max^2 (lam + sigma_min^2) / (lam + sigma_max^2)``.
    """
    lam, q, tau, eta, s0, s1 = jnp.broadcast_arrays(lam, q, tau, eta, sigma_min, sigma_max)
    s, rho = _logistic_factors(lam, q, tau, eta, symmetric)
    log_variance = 2.0 * jnp.log(s1) + 2.0 * (1.0 - s) * jnp.log(s0 / s1) + s * jnp.log((lam + rho * s0**2) / (lam + rho * s1**2))
    return jnp.exp(log_variance)


def balanced_weights(
    lam: Float[ArrayLike, "*b"],
    q: Float[ArrayLike, "*b"],
    taus: Float[ArrayLike, " t"],
    sigma: Float[ArrayLike, "*b"],
    *,
    depth: int,
    eta: Float[ArrayLike, ""] = 1.0,
    rtol: float = 1e-9,
    atol: float = 1e-12,
    max_steps: int = 1_000_000,
) -> Solved:
    """Per-mode product weight of a depth-``L`` balanced aligned denoiser ``W_L ... W_1``.

    Every layer starts at ``q^(1/L)`` on the mode and the layers stay equal, so the product
    ``w = a^L`` obeys ``dw/dtau = -eta L w^(2(L-1)/L) dl/dw`` with ``l = lam (1-w)^2 + sigma^2 w^2``
    (summed un-halved loss, ``tau`` = learning rate x steps). Depth 2 is the logistic closed form
    of :func:`weights` with ``symmetric=False``; other depths have none (docs/theory.md 3), so this
    integrates the scalar ODE of every mode with diffrax (Tsit5, adaptive; all modes in one
    state) and saves at the increasing times ``taus`` (leading axis of the result). Returns
    ``Solved(weights[t, *b], status)``: past ``max_steps`` steps the solve stops with a status
    instead of raising (:mod:`diffdyn.dynamics.status`).
    """
    lam, q, sigma = jnp.broadcast_arrays(*(jnp.asarray(x, dtype=float) for x in (lam, q, sigma)))
    power = 2.0 * (depth - 1) / depth

    def velocity(tau, w, args):
        slope = 2.0 * ((lam + sigma**2) * w - lam)
        return -eta * depth * jnp.power(jnp.maximum(w, 0.0), power) * slope

    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(velocity),
        diffrax.Tsit5(),
        t0=0.0,
        t1=jnp.asarray(taus)[-1],
        dt0=None,
        y0=q,
        saveat=diffrax.SaveAt(ts=jnp.asarray(taus)),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        throw=False,
    )
    return Solved(solution.ys, from_diffrax(solution.result))


def balanced_generated_variance(
    lam: Float[ArrayLike, " m"],
    q: Float[ArrayLike, ""],
    taus: Float[ArrayLike, " t"],
    *,
    depth: int,
    eta: Float[ArrayLike, ""] = 1.0,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    num_nodes: int = QUADRATURE_NODES,
    max_steps: int = 1_000_000,
) -> Solved:
    """Generated variance ``(tau, mode)`` of the depth-``L`` balanced aligned denoiser (with the
    solver status of :func:`balanced_weights`): the
    weights of :func:`balanced_weights` at the Gauss-Legendre nodes in ``ln sigma``
    (all nodes and modes in one ODE state), integrated as in
    :func:`.linear.generated_variance_quadrature`."""
    sigmas, node_weights = linear.log_sigma_nodes(sigma_min=sigma_min, sigma_max=sigma_max, num_nodes=num_nodes)
    table, status = balanced_weights(jnp.asarray(lam)[None, :], q, taus, sigmas[:, None], depth=depth, eta=eta, max_steps=max_steps)
    return Solved(linear.generated_variance_from_nodes(jnp.swapaxes(table, 0, 1), node_weights, sigma_max), status)
