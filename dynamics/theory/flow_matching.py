"""Closed-form learning dynamics of a linear flow-matching model [WP app. H].

Interpolant ``x_t = t x1 + (1 - t) x0`` with noise ``x0 ~ N(0, I)`` at ``t = 0`` and data ``x1``
at ``t = 1`` (docs/theory.md section 5). A linear velocity field ``v(x, t) = W(t) x``, with
independent parameters at every ``t``, is trained on the loss
``E ||W x_t - (x1 - x0)||^2`` (summed over dimensions, not halved) by gradient flow
``dW/dtau = -eta grad``; training time ``tau`` = learning rate x number of steps. From an init
aligned with the data eigenbasis every mode of variance ``lam`` evolves on its own; samples are
drawn by integrating ``dx/dt = W(t) x`` from ``t = 0`` to 1. Inputs broadcast together
elementwise over any (mode, tau, t, ...) grid.

Note the time variables: ``t`` in [0, 1] is the flow (diffusion) time, not EDM's ``sigma``.

[WP] B. Wang, C. Pehlevan, arXiv 2503.03206, app. H (flow matching).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf
from jaxtyping import Array, ArrayLike, Float

from .linear import _ein

_ERF_RATIO_SERIES = 2.0 / np.sqrt(np.pi) * np.array([1 / 216, -1 / 42, 1 / 10, -1 / 3, 1.0])


def _erf_ratio(y: Float[Array, "*b"]) -> Float[Array, "*b"]:
    """``erf(sqrt(y)) / sqrt(y)`` for ``y >= 0``, smooth at ``y = 0`` (value ``2 / sqrt(pi)``).

    Taylor series below ``y = 1e-3`` (truncation error ~1e-18), the direct quotient above.
    """
    small = y < 1e-3
    series = jnp.polyval(_ERF_RATIO_SERIES, jnp.where(small, y, 0.0))
    root = jnp.sqrt(jnp.where(small, 1.0, y))
    return jnp.where(small, series, erf(root) / root)


@jax.jit
def weights(
    lam: Float[ArrayLike, "*b"],
    q: Float[ArrayLike, "*b"],
    tau: Float[ArrayLike, "*b"],
    t: Float[ArrayLike, "*b"],
    *,
    eta: Float[ArrayLike, "*b"] = 1.0,
) -> Float[Array, "*b"]:
    """Per-mode velocity weight ``W(tau; t) = f + (q - f) e^{-2 eta tau d}`` [WP app. H].

    ``d = t^2 lam + (1-t)^2`` is the variance of ``x_t`` and ``f = (t lam - (1-t)) / d`` the
    optimal weight; ``tau`` = learning rate x steps for the summed, un-halved loss.
    """
    lam, q, tau, t, eta = jnp.broadcast_arrays(lam, q, tau, t, eta)
    d = t**2 * lam + (1.0 - t) ** 2
    f = (t * lam - (1.0 - t)) / d
    return f + (q - f) * jnp.exp(-2.0 * eta * tau * d)


@jax.jit
def generated_variance(
    lam: Float[ArrayLike, "*b"],
    q: Float[ArrayLike, "*b"],
    tau: Float[ArrayLike, "*b"],
    *,
    eta: Float[ArrayLike, "*b"] = 1.0,
) -> Float[Array, "*b"]:
    """Variance ``exp(2 int_0^1 W(tau; t) dt)`` of one mode in the generated distribution.

    docs/theory.md sec. 5 [WP app. H], with ``a = 2 eta tau`` and ``b = sqrt(a / (lam + 1))``::

        ln lam~ = ln lam + Ei(-a) - Ei(-a lam)
                  + sqrt(pi) q e^{-a lam/(lam+1)} [erf(b) + erf(lam b)] / (b (lam + 1))

    where ``ln lam + Ei(-a) - Ei(-a lam) = Ein(a lam) - Ein(a)`` is evaluated in that form, so
    ``tau = 0`` gives exactly ``e^{2q}`` (constant weight ``q``) with finite gradients, and
    ``tau -> inf`` gives ``lam``. ``tau`` = learning rate x steps, summed un-halved loss.
    """
    lam, q, tau, eta = jnp.broadcast_arrays(lam, q, tau, eta)
    a = 2.0 * eta * tau
    y = a / (lam + 1.0)
    erf_terms = _erf_ratio(y) + lam * _erf_ratio(lam**2 * y)
    initial = jnp.sqrt(jnp.pi) * q * jnp.exp(-a * lam / (lam + 1.0)) * erf_terms / (lam + 1.0)
    ein_lam, ein_one = _ein(jnp.stack([a * lam, a]))
    return jnp.exp(ein_lam - ein_one + initial)
