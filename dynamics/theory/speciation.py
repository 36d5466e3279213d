"""Speciation, collapse and the minority delay of exact-score diffusion ([BBdBM], docs/theory.md section 8).

[BBdBM] G. Biroli, T. Bonnaire, V. de Bortoli, M. Mezard, "Dynamical regimes of diffusion
models", Nat. Commun. 15:9957 (2024), arXiv 2402.18491.

Conventions: OU time ``t`` (docs/theory.md section 1), ``x_t = e^-t x0 + sqrt(Delta_t) xi``; the
generative (backward) SDE runs from large ``t`` to 0, ``dx = [x + 2 grad log P_t(x)] ds +
sqrt(2) dW`` in the reversed time ``s = -t``.

Closed forms (pure ``jax.numpy``, elementwise, jit- and grad-able):

* speciation ``t_S = 1/2 ln Lambda`` (``Lambda`` the top eigenvalue of the data covariance);
* collapse ``t_C = 1/2 ln[1 + sigma^2 / (n^{2/d} - 1)]`` (``n`` points, per-dimension variance
  ``sigma^2``);
* minority delay. For ``omega N(mu, I) + (1 - omega) N(-mu, I)``, ``h = 1/2 ln(omega/(1-omega))``,
  the backward drift projected on ``mu^ = mu/|mu|`` is ``-y + 2 a tanh(a y + h)`` with
  ``a = e^-t |mu|``; in ``u = a y + h`` its zeros solve ``u - h = K tanh u``,
  ``K(t) = 2 a^2 = 2 |mu|^2 e^-2t`` (docs/theory.md's ``2 mu~^2 d e^-2t``). The majority basin
  exists at every ``t``; the minority one appears (saddle-node) only once ``K >= K*(h)`` with
  ``sqrt(K*(K*-1)) - arccosh(sqrt K*) = h``, i.e. ``1/2 ln K*`` later in the backward run than the
  symmetric split at ``K = 1``;
* the cloning curves of two isotropic classes (:func:`commitment_theory`): the probability that
  two clones of a backward path launched at time ``t`` end in the same class, and that a clone
  ends in the class it started from, from a 1-D Gauss-Hermite integral at any ``d``.

The simulations these are compared with (exact-score backward SDE, cloning, basins of the
exact drift) act on a Gaussian mixture and live in :mod:`diffdyn.models.distributions.backward`;
:func:`crossing_time` reads a time off their curves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from diffdyn.dynamics.schedules import vp_noise_variance, vp_signal_scale


def speciation_time(top_eigenvalue: ArrayLike) -> Float[Array, "..."]:
    """``t_S = 1/2 ln Lambda`` ([BBdBM] eq. for the speciation time; docs/theory.md section 8)."""
    return 0.5 * jnp.log(jnp.asarray(top_eigenvalue))


def collapse_time(variance: ArrayLike, num_points: ArrayLike, dim: ArrayLike) -> Float[Array, "..."]:
    """``t_C = 1/2 ln[1 + sigma^2 / (n^{2/d} - 1)]`` for ``n`` points of per-dimension variance
    ``sigma^2`` in ``d`` dimensions ([BBdBM], docs/theory.md section 8)."""
    excess = jnp.expm1(2.0 * jnp.log(jnp.asarray(num_points, float)) / jnp.asarray(dim, float))
    return 0.5 * jnp.log1p(jnp.asarray(variance) / excess)


def imbalance_field(omega: ArrayLike) -> Float[Array, "..."]:
    """``h = 1/2 ln(omega / (1 - omega))``, ``omega`` the majority weight."""
    omega = jnp.asarray(omega)
    return 0.5 * (jnp.log(omega) - jnp.log1p(-omega))


def minority_threshold(h: ArrayLike, iterations: int = 60) -> Float[Array, "..."]:
    """``K*(h) >= 1`` solving ``sqrt(K(K-1)) - arccosh(sqrt K) = h`` for ``h >= 0``.

    ``f(K) = sqrt(K(K-1)) - arccosh(sqrt K)`` is increasing and convex with ``f' = sqrt(1 - 1/K)``,
    so Newton's method from ``K0 = h + 2 + ln(4h + 8)`` (where ``f(K0) >= h``) decreases
    monotonically to the root; ``h = 0`` gives ``K* = 1``. Elementwise, jit- and grad-able.
    """
    h = jnp.asarray(h, float)
    f = lambda k: jnp.sqrt(k * (k - 1.0)) - jnp.arccosh(jnp.sqrt(k))

    def newton(_, k):
        step = (f(k) - h) / jnp.sqrt(jnp.clip(1.0 - 1.0 / k, 1e-300))
        return jnp.maximum(k - step, 1.0)

    return jax.lax.fori_loop(0, iterations, newton, h + 2.0 + jnp.log(4.0 * h + 8.0))


def minority_delay(omega: ArrayLike) -> Float[Array, "..."]:
    """``1/2 ln K*(h(omega))``: how much later (in OU time, i.e. closer to the data) the
    minority basin appears than the symmetric split (docs/theory.md section 8: 0.9 -> ~0.51,
    0.999 -> ~0.85)."""
    return 0.5 * jnp.log(minority_threshold(imbalance_field(omega)))


def minority_basin_time(omega: ArrayLike, centroid_norm_squared: ArrayLike) -> Float[Array, "..."]:
    """Closed-form time at which the minority basin appears for ``omega N(mu, I) + (1-omega)
    N(-mu, I)``, ``|mu|^2 = centroid_norm_squared``: ``K(t) = 2 |mu|^2 e^-2t = K*``."""
    return 0.5 * jnp.log(2.0 * jnp.asarray(centroid_norm_squared) / minority_threshold(imbalance_field(omega)))


# ----------------------------------------------------------------------------- cloning curves


def signal_strength(t: ArrayLike, mean_norm: ArrayLike, variance: ArrayLike = 1.0) -> Float[Array, "..."]:
    """``a = e^-t |mu| / Gamma_t``, ``Gamma_t^2 = e^-2t s^2 + Delta_t``: the signal of the
    projection on the centroid axis of ``omega N(mu, s^2 I) + (1-omega) N(-mu, s^2 I)`` noised to
    OU time ``t`` (``mean_norm = |mu|``, ``variance = s^2``), the input of
    :func:`commitment_theory`."""
    t = jnp.asarray(t)
    return vp_signal_scale(t) * mean_norm / jnp.sqrt(jnp.exp(-2.0 * t) * variance + vp_noise_variance(t))


def commitment_theory(signal: ArrayLike, h: ArrayLike, reference_sign: ArrayLike, num_nodes: int = 81) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    """Exact ``(same, stay)`` of the cloning protocol
    (:func:`diffdyn.models.distributions.backward.clone_commitment`) with ``t_end -> 0`` for two isotropic
    classes ``omega N(mu, s^2 I) + (1-omega) N(-mu, s^2 I)`` at any ``d``: with ``signal = a``
    (:func:`signal_strength`) the projection ``y = a r + z`` (``r = reference_sign`` = +1 for the
    class at ``+mu``) decides everything and ``P(+ | y) = sigmoid(2 (a y + h))``; the orthogonal
    directions decouple. ``same = E[P(+)^2 + P(-)^2]``, ``stay = E[P(r)]``; Gauss-Hermite in
    ``z`` with ``num_nodes`` nodes. Elementwise in ``signal, h, reference_sign``."""
    nodes, node_weights = np.polynomial.hermite_e.hermegauss(num_nodes)
    node_weights = jnp.asarray(node_weights / node_weights.sum())
    a, h, r = jnp.broadcast_arrays(*(jnp.asarray(v, float) for v in (signal, h, reference_sign)))
    a, h, r = a[..., None], h[..., None], r[..., None]
    lead = (1,) * (a.ndim - 1) + (num_nodes,)
    z, node_weights = jnp.reshape(jnp.asarray(nodes), lead), jnp.reshape(node_weights, lead)
    plus = jax.nn.sigmoid(2.0 * (a * (a * r + z) + h))
    same = jnp.sum(node_weights * (jnp.square(plus) + jnp.square(1.0 - plus)), axis=-1)
    stay = jnp.sum(node_weights * jnp.where(r > 0, plus, 1.0 - plus), axis=-1)
    return same, stay


def crossing_time(times: Float[Array, " m"], curve: Float[Array, " m"], level: ArrayLike) -> Float[Array, ""]:
    """First time (``times`` increasing) at which a curve that falls with ``t`` drops to ``level``,
    by linear interpolation between the bracketing records; ``times[0]`` if already below, NaN if
    never. A speciation time is where a cloning curve crosses the midpoint of its limits."""
    below = curve <= level
    upper = jnp.argmax(below)
    lower = jnp.maximum(upper - 1, 0)
    bracketed = upper > lower
    span = jnp.where(bracketed, curve[upper] - curve[lower], 1.0)
    fraction = jnp.where(bracketed, (level - curve[lower]) / span, 0.0)
    crossing = times[lower] + fraction * (times[upper] - times[lower])
    return jnp.where(jnp.any(below), crossing, jnp.nan)
