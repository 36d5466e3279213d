"""The exact-score backward (generative) dynamics of Gaussian mixtures ([BBdBM], docs/theory.md section 8).

[BBdBM] G. Biroli, T. Bonnaire, V. de Bortoli, M. Mezard, "Dynamical regimes of diffusion
models", Nat. Commun. 15:9957 (2024), arXiv 2402.18491.

OU time ``t`` (docs/theory.md section 1), ``x_t = e^-t x0 + sqrt(Delta_t) xi``; the backward SDE
``dx = [x + 2 grad log P_t(x)] ds + sqrt(2) dW`` runs in the reversed time ``s = -t`` with the
exact score of the noised mixture (:func:`diffdyn.models.distributions.mixtures.time_score`: numpyro
``log_prob`` + ``jax.grad``). Two measurements, both pure and traceable (every mixture field may
be a tracer; vmap outside):

* :func:`clone_commitment` / :func:`commitment_curves`, the cloning protocol: a point of class
  ``c`` is noised to time ``t`` (which draws ``x_t`` from ``P_t`` given the class, as a backward
  trajectory would pass there), two clones run the backward SDE on from ``x_t`` with independent
  noise (Euler-Maruyama) down to ``t_end``, and each clone's class probabilities
  ``P(c' | x_{t_end})`` are read off. Their closed form for two isotropic classes is
  :func:`diffdyn.dynamics.theory.speciation.commitment_theory`.
* :func:`basin_appearance_time`: the latest ``t`` at which the backward drift has a stable zero
  for each of two classes on their centroid line (bisection in ``t``, zeros counted on a grid of
  the line); closed form :func:`diffdyn.dynamics.theory.speciation.minority_basin_time`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from diffdyn.dynamics.schedules import vp_noise_variance, vp_signal_scale
from diffdyn.models.distributions import mixtures
from diffdyn.models.distributions.mixtures import GaussianMixture


def backward_sde(mixture: GaussianMixture, x_t: Float[Array, " d"], t: ArrayLike, t_end: ArrayLike, key: PRNGKeyArray, num_steps: int) -> Float[Array, " d"]:
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
    label: Int[ArrayLike, ""],
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


def stable_zeros_on_line(mixture: GaussianMixture, t: ArrayLike, num_grid: int = 4001) -> Int[Array, ""]:
    """Number of stable zeros (``+ -> -`` sign changes) of the backward drift
    ``mu^ . [x + 2 grad log P_t(x)]`` along ``x = e^-t m + y mu^`` (``m`` the midpoint of the first
    two centroids, ``mu^`` their unit direction), ``|y| <= 2 e^-t |mu| + 8`` on ``num_grid``
    points; the exact score of the OU-noised mixture. For isotropic classes every zero lies on
    this line."""
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


def basin_appearance_time(mixture: GaussianMixture, t_low: ArrayLike, t_high: ArrayLike, *, iterations: int = 40, num_grid: int = 4001) -> Float[Array, ""]:
    """Latest OU time in ``[t_low, t_high]`` at which the backward drift has two stable zeros on the
    centroid line (both classes have a basin), by ``iterations`` bisection steps (a
    ``fori_loop``: traceable, vmappable); assumes one basin at ``t_high`` and two at ``t_low``.
    Resolution ``(t_high - t_low) 2^-iterations`` plus the grid's."""

    def bisect(_, bracket):
        low, high = bracket
        middle = 0.5 * (low + high)
        both = stable_zeros_on_line(mixture, middle, num_grid) >= 2
        return jnp.where(both, middle, low), jnp.where(both, high, middle)

    high = jnp.asarray(t_high, mixture.means.dtype)
    low, high = jax.lax.fori_loop(0, iterations, bisect, (jnp.full_like(high, t_low), high))
    return 0.5 * (low + high)
