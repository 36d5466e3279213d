"""Noise processes and noise-level grids.

Conventions (docs/theory.md section 1):

* Canonical process, EDM / variance exploding ("sigma time"): ``x = x0 + sigma z``,
  ``z ~ N(0, I)``. A denoiser ``D(x, sigma)`` estimates ``E[x0 | x]``; the score is
  ``(D - x) / sigma**2``.
* VP / Ornstein-Uhlenbeck process ([BUBM], [BBdBM]): ``x_t = exp(-t) x0 + sqrt(Delta_t) xi`` with
  ``Delta_t = 1 - exp(-2 t)``. Dividing by ``exp(-t)`` gives sigma time with
  ``sigma**2 = exp(2 t) - 1``.
* Karras et al. (EDM, 2022) sampling grid, eq. (5):
  ``sigma_i = (sigma_max**(1/rho) + i/(N-1) (sigma_min**(1/rho) - sigma_max**(1/rho)))**rho``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0


def sigma_from_vp_time(t: ArrayLike) -> Float[Array, "..."]:
    """EDM noise level equivalent to OU time ``t``: ``sigma = sqrt(exp(2t) - 1)``."""
    return jnp.sqrt(jnp.expm1(2.0 * jnp.asarray(t)))


def vp_time_from_sigma(sigma: ArrayLike) -> Float[Array, "..."]:
    """OU time equivalent to EDM noise level ``sigma``: ``t = log(1 + sigma**2) / 2``."""
    return 0.5 * jnp.log1p(jnp.square(jnp.asarray(sigma)))


def vp_signal_scale(t: ArrayLike) -> Float[Array, "..."]:
    """Signal scale ``exp(-t)`` of the OU process at time ``t``."""
    return jnp.exp(-jnp.asarray(t))


def vp_noise_variance(t: ArrayLike) -> Float[Array, "..."]:
    """Noise variance ``Delta_t = 1 - exp(-2t)`` of the OU process at time ``t``."""
    return -jnp.expm1(-2.0 * jnp.asarray(t))


def vp_from_sigma_time(x_sigma: ArrayLike, sigma: ArrayLike) -> Float[Array, "..."]:
    """Map a sigma-time state ``x0 + sigma z`` to the OU state ``x_t = x_sigma / sqrt(1 + sigma^2)``."""
    return jnp.asarray(x_sigma) / jnp.sqrt(1.0 + jnp.square(jnp.asarray(sigma)))


def sigma_time_from_vp(x_t: ArrayLike, t: ArrayLike) -> Float[Array, "..."]:
    """Map an OU state at time ``t`` to the sigma-time state ``x_t exp(t)``."""
    return jnp.asarray(x_t) * jnp.exp(jnp.asarray(t))


def log_sigma_grid(num: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> Float[Array, " num"]:
    """``num`` noise levels equally spaced in ``log sigma`` from ``sigma_min`` to ``sigma_max``."""
    return jnp.geomspace(sigma_min, sigma_max, num)


def karras_sigmas(
    num_steps: int,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = 7.0,
    append_zero: bool = True,
) -> Float[Array, " n"]:
    """Karras et al. (2022) eq. (5) grid, decreasing from ``sigma_max`` to ``sigma_min``.

    With ``append_zero`` a final ``0`` is appended (the last Heun step is then an Euler step),
    so the result has ``num_steps + 1`` entries.
    """
    ramp = jnp.linspace(0.0, 1.0, num_steps)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    if append_zero:
        sigmas = jnp.concatenate([sigmas, jnp.zeros((1,), sigmas.dtype)])
    return sigmas
