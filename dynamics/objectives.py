"""Denoising score-matching objectives.

Conventions ([WP] eq. 2, docs/theory.md section 1): the per-noise-level loss is
``L_sigma = E ||D(x0 + sigma z; sigma) - x0||^2``, summed over dimensions and NOT halved.
Gradient flow on it with learning rate ``eta`` runs in training time ``tau = eta * steps``.

Two evaluations of the same loss:

* :func:`affine_population_loss` is exact for any denoiser affine in ``x``,
  ``D(x) = A x + c`` (linear, deep linear and convolutional denoisers): by Gaussian
  equivalence ([WP] sec. 3) it depends on the data only through its mean and covariance.
* :func:`dsm_loss` is the Monte Carlo estimate on data samples with fresh noise, for any denoiser.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

Denoiser = Callable[[PyTree, Float[Array, " d"], Float[Array, ""]], Float[Array, " d"]]
AffineMap = Callable[[PyTree], tuple[Float[Array, "d d"], Float[Array, " d"]]]


def affine_population_loss(
    matrix: Float[Array, "d d"],
    offset: Float[Array, " d"],
    mean: Float[Array, " d"],
    cov: Float[Array, "d d"],
    sigma: Float[Array, ""],
) -> Float[Array, ""]:
    """Exact ``E ||A (x0 + sigma z) + c - x0||^2`` for ``x0`` with the given mean and covariance.

    ``= Tr[(A - I) Sigma (A - I)^T] + sigma^2 Tr[A A^T] + ||(A - I) mu + c||^2`` ([WP] sec. 3).
    """
    residual = matrix - jnp.eye(matrix.shape[0], dtype=matrix.dtype)
    bias = residual @ mean + offset
    return jnp.sum((residual @ cov) * residual) + jnp.square(sigma) * jnp.sum(jnp.square(matrix)) + jnp.sum(jnp.square(bias))


def population_loss(
    affine: AffineMap,
    params: PyTree,
    mean: Float[Array, " d"],
    cov: Float[Array, "d d"],
    sigma: Float[Array, ""],
) -> Float[Array, ""]:
    """Exact population loss of a denoiser whose ``affine(params)`` returns ``(A, c)``."""
    matrix, offset = affine(params)
    return affine_population_loss(matrix, offset, mean, cov, sigma)


def dsm_sample_loss(
    apply: Denoiser,
    params: PyTree,
    x0: Float[Array, " d"],
    sigma: Float[Array, ""],
    key: PRNGKeyArray,
) -> Float[Array, ""]:
    """One-sample Monte Carlo loss ``||D(x0 + sigma z; sigma) - x0||^2`` with fresh noise ``z``."""
    noise = jax.random.normal(key, x0.shape, x0.dtype)
    return jnp.sum(jnp.square(apply(params, x0 + sigma * noise, sigma) - x0))


def dsm_loss(
    apply: Denoiser,
    params: PyTree,
    x0: Float[Array, "n d"],
    sigma: Float[Array, ""],
    key: PRNGKeyArray,
) -> Float[Array, ""]:
    """Monte Carlo DSM loss: mean over the samples ``x0`` of :func:`dsm_sample_loss`."""
    keys = jax.random.split(key, x0.shape[0])
    per_sample = jax.vmap(dsm_sample_loss, in_axes=(None, None, 0, None, 0))
    return jnp.mean(per_sample(apply, params, x0, sigma, keys))
