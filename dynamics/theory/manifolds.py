"""Collapse and refine on manifolds: the linear toy in closed form and exact denoisers (docs/theory.md section 10).

[H] (Huang et al., arXiv 2605.20235; only the abstract is public, so this is a **reconstruction**
of the mechanism): near a k-dimensional data manifold M in R^D the normal part of the score
``(D - x) / sigma^2`` diverges like ``1 / sigma^2``, so training at small noise first collapses the
denoiser's Jacobian onto the tangent projector, and only then refines the density along M.

Conventions (docs/theory.md section 1): EDM sigma time ``x = x0 + sigma z``; losses summed over
dimensions, un-halved; training time ``tau`` = learning rate x steps (gradient flow
``d theta / d tau = -grad L``).

**Parameterisations.** A network output ``F`` gives the denoiser ``D = c_skip x + c_out F``, trained
on ``weight(sigma) E ||D(x0 + sigma z) - x0||^2``:

============== ======== ========= ============ ===========================================
name           c_skip   c_out     weight       loss in its own variable
============== ======== ========= ============ ===========================================
denoiser       0        1         1            ``E ||F - x0||^2``
score_weighted 0        1         sigma^-4     ``E ||s - grad log p(x | x0)||^2``, ``s = (F - x) / sigma^2``
eps            1        -sigma    sigma^-2     ``E ||F - z||^2`` (``F`` predicts the noise)
============== ======== ========= ============ ===========================================

**Linear toy.** For ``F = A x + b`` the denoiser ``D = W x + c`` is affine, and (Gaussian
equivalence) the loss depends on the data only through ``mu = E x0`` and ``Sigma = Cov x0``.
With ``W~ = [W c]``, ``M = E[(x, 1)(x, 1)^T] = [[Sigma + mu mu^T + sigma^2 I, mu], [mu^T, 1]]``
and ``C = E[x0 (x, 1)^T] = [Sigma + mu mu^T, mu]``, the flow of ``A`` moves ``W~`` by
``dW~/dtau = c_out dA~/dtau = -2 weight c_out^2 (W~ M - C)``, so

    ``W~(tau) = W~* + (W~(0) - W~*) exp(-r M tau)``,  ``W~* = C M^-1``,  ``r = 2 weight c_out^2``.

A direction ``v`` normal to the data (``Sigma v = 0``, ``mu . v = 0``) has ``M (v, 0) = sigma^2 (v, 0)``
and ``C (v, 0) = 0``, so the normal block of a denoiser started at the identity decays as
``exp(-r sigma^2 tau)``: rate ``2 sigma^2`` (denoiser loss), ``2 / sigma^2`` (score-weighted: the
collapse takes ``tau ~ sigma^2``, fast at small noise) and ``2 sigma^2`` (eps-prediction; the issue's
numbers). The collapse time to a normal leakage ``threshold`` is ``ln(1 / threshold) / (r sigma^2)``:
slope ``d ln tau_c / d ln sigma`` = -2, +2, -2. (A weight ``sigma^-2`` on the denoiser output would give
rate 2 at every sigma: the eps loss has that weight, its ``c_out^2 = sigma^2`` restores ``2 sigma^2``.)

**Exact denoisers.** Subspace with ``N(0, s^2 I_k)`` latents: ``D* = s^2 / (s^2 + sigma^2) P``. A round
sphere ``S^(p-1)`` of radius ``r`` with a von Mises-Fisher density ``vMF(mu, c)`` (``c = 0``: uniform):
the posterior of the unit direction is ``vMF`` with parameter ``eta = c mu + r u / sigma^2`` (``u`` the
point's coordinates in the sphere's span), so ``E[y | x] = A_p(|eta|) eta / |eta|`` with the mean
resultant length ``A_p = I_(p/2) / I_(p/2-1)`` (:func:`mean_resultant_length`). A flat torus is a
product of circles (``p = 2``), each denoised alone.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from diffdyn.dynamics.theory import linear
from diffdyn.dynamics.validation import require_choice

PARAMETERISATIONS = ("denoiser", "score_weighted", "eps")
_SMALL_KAPPA = 10.0  # below: the continued fraction of the Bessel ratio; above: the forward recurrence
_FRACTION_DEPTH = 48  # continued-fraction depth (exact to double precision for kappa < 10)


class Coefficients(NamedTuple):
    """``D = skip x + out F``, trained on ``weight E ||D - x0||^2`` (module docstring table)."""

    skip: Float[Array, ""]
    out: Float[Array, ""]
    weight: Float[Array, ""]


def coefficients(name: str, sigma: Float[ArrayLike, ""]) -> Coefficients:
    """The parameterisation ``name`` at noise level ``sigma`` (traceable in ``sigma``)."""
    sigma = jnp.asarray(sigma)
    one, zero = jnp.ones_like(sigma), jnp.zeros_like(sigma)
    return {
        "denoiser": lambda: Coefficients(zero, one, one),
        "score_weighted": lambda: Coefficients(zero, one, sigma**-4),
        "eps": lambda: Coefficients(one, -sigma, sigma**-2),
    }[require_choice("parameterisation", name, PARAMETERISATIONS)]()


def flow_rate(name: str, sigma: Float[ArrayLike, ""]) -> Float[Array, ""]:
    """``r = 2 weight c_out^2``: the factor of ``W~ M - C`` in the flow of the affine denoiser."""
    c = coefficients(name, sigma)
    return 2.0 * c.weight * jnp.square(c.out)


def descent_schedule(
    names: tuple[str, ...], sigmas: Float[ArrayLike, " s"], mean: Float[Array, " d"], cov: Float[Array, "d d"], fraction: Float[ArrayLike, ""]
) -> dict[str, Float[Array, "p s"]]:
    """Per parameterisation and noise level (leaves ``[name, sigma]``): ``sigma``, the coefficients
    ``skip``, ``out``, ``weight``, the flow rate ``rate`` and the gradient-descent step
    ``learning_rate = fraction x 2 / (r mu_max(M))``, that ``fraction`` of the affine denoiser's
    stability bound on data with these moments: every entry is then the same discretisation of
    its own flow (descent on an affine denoiser is stable iff ``fraction < 1``)."""
    sigmas = jnp.asarray(sigmas, cov.dtype)
    top = jax.vmap(lambda sigma: jnp.linalg.eigvalsh(second_moments(mean, cov, sigma)[0])[-1])(sigmas)
    rows = []
    for name in names:
        c, rate = coefficients(name, sigmas), flow_rate(name, sigmas)
        rows.append({"sigma": sigmas, "skip": c.skip, "out": c.out, "weight": c.weight, "rate": rate, "learning_rate": 2.0 * fraction / (rate * top)})
    return jax.tree.map(lambda *columns: jnp.stack(columns), *rows)


def collapse_time(
    rate: Float[ArrayLike, ""], sigma: Float[ArrayLike, ""], threshold: Float[ArrayLike, ""], learning_rate: Float[ArrayLike, ""] | None = None
) -> Float[Array, ""]:
    """Training time at which the normal block of the identity-initialised linear toy with flow
    rate ``r`` (:func:`flow_rate`) has decayed to ``threshold``: ``ln(1 / threshold) / (r sigma^2)``
    under gradient flow; with ``learning_rate`` (gradient descent, ``tau = learning_rate x steps``)
    ``learning_rate ln(threshold) / ln(1 - learning_rate r sigma^2)`` (a real number of steps)."""
    decay = rate * jnp.square(sigma)
    if learning_rate is None:
        return -jnp.log(threshold) / decay
    return learning_rate * jnp.log(threshold) / jnp.log1p(-learning_rate * decay)


def second_moments(mean: Float[Array, " d"], cov: Float[Array, "d d"], sigma: Float[ArrayLike, ""]) -> tuple[Float[Array, "e e"], Float[Array, "d e"]]:
    """``M = E[(x, 1)(x, 1)^T]`` and ``C = E[x0 (x, 1)^T]`` for ``x = x0 + sigma z`` (``e = d + 1``)."""
    dim = mean.shape[0]
    clean = cov + jnp.outer(mean, mean)
    cross = jnp.concatenate([clean, mean[:, None]], axis=1)
    noisy = clean + jnp.square(sigma) * jnp.eye(dim, dtype=cov.dtype)
    moments = jnp.block([[noisy, mean[:, None]], [mean[None, :], jnp.ones((1, 1), cov.dtype)]])
    return moments, cross


def optimal_affine(mean: Float[Array, " d"], cov: Float[Array, "d d"], sigma: Float[ArrayLike, ""]) -> Float[Array, "d e"]:
    """``W~* = [W* c*] = C M^-1``: the best affine denoiser (any parameterisation)."""
    moments, cross = second_moments(mean, cov, sigma)
    return jnp.linalg.solve(moments, cross.T).T  # M is symmetric


def linear_toy_weights(
    initial: Float[Array, "d e"],
    mean: Float[Array, " d"],
    cov: Float[Array, "d d"],
    sigma: Float[ArrayLike, ""],
    tau: Float[ArrayLike, ""],
    rate: Float[ArrayLike, ""],
    learning_rate: Float[ArrayLike, ""] | None = None,
) -> Float[Array, "d e"]:
    """The affine denoiser ``D = W x + c`` (``W~ = [W c]``) trained from ``W~(0) = initial`` with flow
    rate ``r`` (:func:`flow_rate` of a parameterisation): by gradient flow,
    ``W~(tau) = W~* + (W~(0) - W~*) exp(-r M tau)`` (:func:`diffdyn.dynamics.theory.linear.affine_weights`
    with ``eta = r / 2``); with ``learning_rate`` by gradient descent with that step,
    ``W~* + (W~(0) - W~*) (I - learning_rate r M)^(tau / learning_rate)`` (each step moves ``W~`` by
    ``-learning_rate r (W~ M - C)``; ``tau / learning_rate`` steps, rounded)."""
    if learning_rate is None:
        matrix, offset = linear.affine_weights(initial[:, :-1], initial[:, -1], mean, cov, sigma, tau, eta=rate / 2.0)
        return jnp.concatenate([matrix, offset[:, None]], axis=1)
    target = optimal_affine(mean, cov, sigma)
    curvature, basis = jnp.linalg.eigh(second_moments(mean, cov, sigma)[0])
    factors = jnp.power(1.0 - learning_rate * rate * curvature, jnp.round(tau / learning_rate))
    return target + (initial - target) @ ((basis * factors[None, :]) @ basis.T)


def subspace_shrinkage(scale: Float[ArrayLike, ""], sigma: Float[ArrayLike, ""]) -> Float[Array, ""]:
    """``s^2 / (s^2 + sigma^2)``: the optimal denoiser of ``N(0, s^2 I_k)`` latents on a subspace
    is this times the projector ``P``; its Jacobian trace (effective rank) is ``k`` times it."""
    return jnp.square(scale) / (jnp.square(scale) + jnp.square(sigma))


def subspace_flipd(dim: int, scale: Float[ArrayLike, ""], sigma: Float[ArrayLike, ""]) -> Float[Array, ""]:
    """Expected FLIPD estimate ``D + sigma^2 (div s + |s|^2)`` at on-manifold points of the
    subspace with ``N(0, s^2 I_k)`` latents (``dim = k``): the score there is ``-U z / (s^2 + sigma^2)``
    and its divergence ``-k / (s^2 + sigma^2) - (D - k) / sigma^2``, so the estimate is
    ``k s^2 (s^2 + 2 sigma^2) / (s^2 + sigma^2)^2`` (``-> k`` as ``sigma -> 0``)."""
    s2, v = jnp.square(scale), jnp.square(sigma)
    return dim * s2 * (s2 + 2.0 * v) / jnp.square(s2 + v)


def _ratio_fraction(order: float, kappa: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """``I_(order+1) / I_order`` by the backward continued fraction
    ``R_n = kappa / (2 (n + 1) + kappa R_(n+1))`` from depth :data:`_FRACTION_DEPTH` (small kappa)."""
    step = lambda index, ratio: kappa / (2.0 * (order + _FRACTION_DEPTH - index + 1.0) + kappa * ratio)
    return jax.lax.fori_loop(0, _FRACTION_DEPTH + 1, step, jnp.zeros_like(kappa))


def _ratio_recurrence(twice_order: int, kappa: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """``I_(order+1) / I_order`` (``order = twice_order / 2``) from the closed form at order 0
    (``I_1 / I_0``) or 1/2 (``coth kappa - 1 / kappa``) and the forward recurrence
    ``R_n = 1 / R_(n-1) - 2 n / kappa`` (stable for kappa >~ order; used for kappa >= 10)."""
    if twice_order % 2 == 0:
        ratio, order = jax.scipy.special.i1e(kappa) / jax.scipy.special.i0e(kappa), 0.0
    else:
        ratio, order = 1.0 / jnp.tanh(kappa) - 1.0 / kappa, 0.5
    while order < twice_order / 2:
        order += 1.0
        ratio = 1.0 / ratio - 2.0 * order / kappa
    return ratio


def mean_resultant_length(p: int, kappa: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
    """``A_p(kappa) = I_(p/2)(kappa) / I_(p/2-1)(kappa)``: the mean length ``|E y|`` of the von
    Mises-Fisher law ``vMF(mu, kappa)`` on the unit sphere of R^p (``p >= 2``, static). Traceable
    and differentiable in ``kappa >= 0``; ``~ kappa / p`` at 0 and ``1 - (p - 1) / (2 kappa)`` at infinity."""
    kappa = jnp.asarray(kappa)
    small = kappa < _SMALL_KAPPA
    fraction = _ratio_fraction(p / 2 - 1, jnp.where(small, kappa, 1.0))
    recurrence = _ratio_recurrence(p - 2, jnp.where(small, _SMALL_KAPPA, kappa))
    return jnp.where(small, fraction, recurrence)


def mean_resultant_slope(p: int, kappa: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
    """``A_p'(kappa)`` elementwise, by forward-mode autodiff (the identity
    ``A' = 1 - A^2 - (p - 1) A / kappa`` cancels catastrophically at large kappa)."""
    kappa = jnp.asarray(kappa)
    return jax.jvp(lambda value: mean_resultant_length(p, value), (kappa,), (jnp.ones_like(kappa),))[1]


def round_effective_rank(factors: int, p: int, radius: Float[ArrayLike, ""], sigma: Float[ArrayLike, ""]) -> Float[Array, ""]:
    """Jacobian trace of the exact denoiser at a point of a product of ``factors`` round spheres
    ``S^(p-1)`` of radius ``r`` with uniform density (sphere: 1 factor, ``p = k + 1``; flat torus:
    ``k`` circles, ``p = 2``): per factor ``(p - 1) A_p(kappa)`` along the tangent directions plus
    ``kappa A_p'(kappa)`` along the radius, ``kappa = r^2 / sigma^2``; ``-> k`` as ``sigma -> 0``."""
    kappa = jnp.square(radius) / jnp.square(sigma)
    return factors * ((p - 1) * mean_resultant_length(p, kappa) + kappa * mean_resultant_slope(p, kappa))
