"""Speciation, collapse and the minority delay of exact-score diffusion ([BBdBM], THEORY.md 8).

[BBdBM] G. Biroli, T. Bonnaire, V. de Bortoli, M. Mezard, "Dynamical regimes of diffusion
models", Nat. Commun. 15:9957 (2024), arXiv 2402.18491.

Conventions: OU time ``t`` (THEORY.md 1), ``x_t = e^-t x0 + sqrt(Delta_t) xi``; the generative
(backward) SDE runs from large ``t`` to 0, ``dx = [x + 2 grad log P_t(x)] ds + sqrt(2) dW`` in
the reversed time ``s = -t``.

Closed forms:

* speciation ``t_S = 1/2 ln Lambda`` (``Lambda`` the top eigenvalue of the data covariance);
* collapse ``t_C = 1/2 ln[1 + sigma^2 / (n^{2/d} - 1)]`` (``n`` points, per-dimension variance
  ``sigma^2``);
* minority delay. For ``omega N(mu, I) + (1 - omega) N(-mu, I)``, ``h = 1/2 ln(omega/(1-omega))``,
  the backward drift projected on ``mu^ = mu/|mu|`` is ``-y + 2 a tanh(a y + h)`` with
  ``a = e^-t |mu|``; in ``u = a y + h`` its zeros solve ``u - h = K tanh u``,
  ``K(t) = 2 a^2 = 2 |mu|^2 e^-2t`` (THEORY.md's ``2 mu~^2 d e^-2t``). The majority basin
  exists at every ``t``; the minority one appears (saddle-node) only once ``K >= K*(h)`` with
  ``sqrt(K*(K*-1)) - arccosh(sqrt K*) = h``, i.e. ``1/2 ln K*`` later in the backward run than the
  symmetric split at ``K = 1``.

Measurements with exact scores (the mixture's numpyro ``log_prob`` + ``jax.grad``,
:mod:`models.distributions.mixtures`):

* :func:`clone_commitment`, the cloning protocol: a point of class ``c`` is noised to time ``t``
  (which draws ``x_t`` from ``P_t`` given the class, as a backward trajectory would pass there),
  two clones run the backward SDE on from ``x_t`` with independent noise (Euler-Maruyama) down to
  ``t_end``, and each clone's class probabilities ``P(c' | x_{t_end})`` are read off. Returns the
  probability that the two clones end in the same class and that a clone ends in ``c``.
  Speciation times are where these curves cross the midpoint of their limits
  (:func:`crossing_time`). For two isotropic classes the same curves follow exactly from a 1-D
  Gauss-Hermite integral (:func:`commitment_theory`), at any ``d``.
* :func:`basin_appearance_time`: the latest ``t`` at which a class has its own stable zero of the
  backward drift on the centroid line (bisection in ``t``; zeros counted on a grid of the line).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from dynamics.schedules import vp_noise_variance, vp_signal_scale
from models.distributions import mixtures
from models.distributions.mixtures import GaussianMixture


def speciation_time(top_eigenvalue: ArrayLike) -> Float[Array, "..."]:
    """``t_S = 1/2 ln Lambda`` ([BBdBM] eq. for the speciation time; THEORY.md 8)."""
    return 0.5 * jnp.log(jnp.asarray(top_eigenvalue))


def collapse_time(variance: ArrayLike, num_points: ArrayLike, dim: ArrayLike) -> Float[Array, "..."]:
    """``t_C = 1/2 ln[1 + sigma^2 / (n^{2/d} - 1)]`` for ``n`` points of per-dimension variance
    ``sigma^2`` in ``d`` dimensions ([BBdBM], THEORY.md 8)."""
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
    minority basin appears than the symmetric split (THEORY.md 8: 0.9 -> ~0.51, 0.999 -> ~0.85)."""
    return 0.5 * jnp.log(minority_threshold(imbalance_field(omega)))


def minority_basin_time(omega: ArrayLike, centroid_norm_squared: ArrayLike) -> Float[Array, "..."]:
    """Closed-form time at which the minority basin appears for ``omega N(mu, I) + (1-omega)
    N(-mu, I)``, ``|mu|^2 = centroid_norm_squared``: ``K(t) = 2 |mu|^2 e^-2t = K*``."""
    return 0.5 * jnp.log(2.0 * jnp.asarray(centroid_norm_squared) / minority_threshold(imbalance_field(omega)))


# ----------------------------------------------------------------------------- cloning protocol


def backward_sde(
    mixture: GaussianMixture, x_t: Float[Array, " d"], t: ArrayLike, t_end: ArrayLike, key: PRNGKeyArray, num_steps: int
) -> Float[Array, " d"]:
    """ONE path of the exact-score backward SDE ``dx = [x + 2 grad log P_s(x)] ds + sqrt(2) dW``
    from time ``t`` down to ``t_end`` by Euler-Maruyama with ``num_steps`` equal steps."""
    step = (jnp.asarray(t) - t_end) / num_steps

    def advance(x, inputs):
        s, noise_key = inputs
        drift = x + 2.0 * mixtures.time_score(mixture, x, s)
        noise = jax.random.normal(noise_key, x.shape, x.dtype)
        return x + step * drift + jnp.sqrt(2.0 * step) * noise, None

    times = t - step * jnp.arange(num_steps)
    x_end, _ = jax.lax.scan(advance, x_t, (times, jax.random.split(key, num_steps)))
    return x_end


def clone_commitment(
    mixture: GaussianMixture,
    key: PRNGKeyArray,
    label: ArrayLike,
    t: ArrayLike,
    *,
    t_end: float = 0.02,
    num_steps: int = 100,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """ONE cloning experiment ([BBdBM] cloning protocol): draw ``x0`` from class ``label``, noise it
    to ``x_t`` (OU), run two clones of the backward SDE from ``x_t`` with independent noise to
    ``t_end`` and return ``(same, stay)``: ``same = sum_c P_1(c) P_2(c)``, the probability that the
    clones end in the same class, and ``stay = (P_1(label) + P_2(label)) / 2``, that a clone ends
    in the reference's class, with ``P_i = P(class | x_i(t_end))`` (Rao-Blackwellised: the class
    of an exact-score path's endpoint given ``x(t_end)`` has exactly that law). vmap over keys,
    labels and times.
    """
    data_key, noise_key, clone_key = jax.random.split(key, 3)
    x0 = mixtures.sample_classes(data_key, mixture, jnp.reshape(label, (1,)))[0]
    x_t = vp_signal_scale(t) * x0 + jnp.sqrt(vp_noise_variance(t)) * jax.random.normal(noise_key, x0.shape, x0.dtype)
    ends = jax.vmap(lambda k: backward_sde(mixture, x_t, t, t_end, k, num_steps))(jax.random.split(clone_key, 2))
    end_law = mixtures.noised_at_time(mixture, t_end)
    posteriors = jnp.exp(jax.vmap(lambda x: mixtures.class_log_posterior(end_law, x))(ends))
    return jnp.sum(posteriors[0] * posteriors[1]), jnp.mean(posteriors[:, label])


def commitment_curves(
    mixture: GaussianMixture,
    key: PRNGKeyArray,
    times: Float[Array, " m"],
    num_pairs: int,
    *,
    t_end: float = 0.02,
    num_steps: int = 100,
) -> tuple[Float[Array, "k m"], Float[Array, "k m"]]:
    """Per reference class ``c`` and time ``t``: the mean over ``num_pairs`` cloning experiments
    of ``same`` and ``stay`` (:func:`clone_commitment`); keys by ``fold_in(key, class)`` then per
    time and pair. Returns ``(same[c, t], stay[c, t])``."""
    run = lambda k, c, t: clone_commitment(mixture, k, c, t, t_end=t_end, num_steps=num_steps)
    pairs = jax.vmap(run, in_axes=(0, None, None))

    def per_class(c):
        class_key = jax.random.fold_in(key, c)
        per_time = lambda i, t: pairs(jax.random.split(jax.random.fold_in(class_key, i), num_pairs), c, t)
        same, stay = jax.lax.map(lambda args: per_time(*args), (jnp.arange(times.shape[0]), times))
        return jnp.mean(same, axis=1), jnp.mean(stay, axis=1)

    same, stay = zip(*(per_class(c) for c in range(mixture.num_classes)))
    return jnp.stack(same), jnp.stack(stay)


def crossing_time(times: Float[Array, " m"], curve: Float[Array, " m"], level: ArrayLike) -> Float[Array, ""]:
    """First time (``times`` increasing) at which a curve that falls with ``t`` drops to ``level``,
    by linear interpolation between the bracketing records; ``times[0]`` if already below, NaN if
    never."""
    below = curve <= level
    upper = jnp.argmax(below)
    lower = jnp.maximum(upper - 1, 0)
    bracketed = upper > lower
    span = jnp.where(bracketed, curve[upper] - curve[lower], 1.0)
    fraction = jnp.where(bracketed, (level - curve[lower]) / span, 0.0)
    crossing = times[lower] + fraction * (times[upper] - times[lower])
    return jnp.where(jnp.any(below), crossing, jnp.nan)


def commitment_theory(
    signal: ArrayLike, h: ArrayLike, reference_sign: ArrayLike, num_nodes: int = 81
) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    """Exact ``(same, stay)`` of :func:`clone_commitment` with ``t_end -> 0`` for two isotropic
    classes ``omega N(mu, s^2 I) + (1-omega) N(-mu, s^2 I)`` at any ``d``: with
    ``signal = a = e^-t |mu| / Gamma_t`` (``Gamma_t^2 = e^-2t s^2 + Delta_t``) the projection
    ``y = a r + z`` (``r = reference_sign`` = +1 for the class at ``+mu``) decides everything
    and ``P(+ | y) = sigmoid(2 (a y + h))``; the orthogonal directions decouple. Gauss-Hermite in
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


def signal_strength(mixture: GaussianMixture, t: ArrayLike) -> Float[Array, "..."]:
    """``a = e^-t |mu| / Gamma_t`` of :func:`commitment_theory` for a two-class mixture built by
    :func:`models.distributions.mixtures.two_class_mixture` (class-0 variance ``s^2``)."""
    norm = 0.5 * jnp.linalg.norm(mixture.means[0] - mixture.means[1])
    variance = mixture.full_covariances[0, 0, 0]
    t = jnp.asarray(t)
    return vp_signal_scale(t) * norm / jnp.sqrt(jnp.exp(-2.0 * t) * variance + vp_noise_variance(t))


# ----------------------------------------------------------------------------- basin appearance


def stable_zeros_on_line(mixture: GaussianMixture, t: ArrayLike, num_grid: int = 4001) -> Float[Array, ""]:
    """Number of stable zeros (``+ -> -`` sign changes) of the backward drift
    ``mu^ . [x + 2 grad log P_t(x)]`` along ``x = m + y mu^`` (``m`` the midpoint of the first two
    centroids, ``mu^`` their unit direction), ``|y| <= 2 e^-t |mu| + 8`` on ``num_grid`` points;
    the exact score of the OU-noised mixture. For isotropic classes every zero lies on this line."""
    noised = mixtures.noised_at_time(mixture, t)
    centre = 0.5 * (mixture.means[0] + mixture.means[1])
    direction = mixture.means[0] - mixture.means[1]
    half_distance = 0.5 * jnp.linalg.norm(direction)
    direction = direction / (2.0 * half_distance)
    reach = 2.0 * vp_signal_scale(t) * half_distance + 8.0
    ys = jnp.linspace(-reach, reach, num_grid)
    points = vp_signal_scale(t) * centre[None, :] + ys[:, None] * direction[None, :]
    values = jax.vmap(lambda x: direction @ (x + 2.0 * mixtures.score(noised, x)))(points)
    return jnp.sum((values[:-1] > 0) & (values[1:] <= 0))


def basin_appearance_time(
    mixture: GaussianMixture, t_low: float, t_high: float, *, iterations: int = 40, num_grid: int = 4001
) -> float:
    """Latest OU time in ``[t_low, t_high]`` at which the backward drift has two stable zeros on the
    centroid line (both classes have a basin), by bisection; assumes one basin at ``t_high`` and
    two at ``t_low``. Resolution ``(t_high - t_low) 2^-iterations`` plus the grid's."""
    low, high = t_low, t_high
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if int(_count_stable_zeros(mixture, middle, num_grid)) >= 2 else (low, middle)
    return 0.5 * (low + high)


_count_stable_zeros = jax.jit(stable_zeros_on_line, static_argnames="num_grid")
