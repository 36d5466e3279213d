"""Geometry of a denoiser near a data manifold: Jacobian spectrum, effective rank, principal
angles, normal leakage, intrinsic-dimension estimators, and a kernel distance between samples.

Conventions (docs/theory.md sections 1 and 10): EDM sigma time, ``D(x, sigma) ~ E[x0 | x]``,
score ``s = (D - x) / sigma^2``. Measures take ONE point (vmap outside) and a function of one
point; ``tangent`` is the orthogonal projector onto the tangent space ``T_x M`` (rank ``k``),
``I - tangent`` the normal one. For the exact denoiser as ``sigma -> 0``, ``dD/dx -> tangent``:
trace (effective rank) ``-> k``, normal leakage ``-> 0``, principal angles ``-> 0``.

Intrinsic dimension, from a score at noise level ``sigma``:

* FLIPD (Kamkari et al., 2024): ``d log p_sigma(x) / d log sigma = sigma^2 (div s + |s|^2)`` (heat
  equation in ``sigma^2``) equals ``-(D - k)`` at a point of a k-dimensional manifold as
  ``sigma -> 0``, so ``k ~ D + sigma^2 (div s + |s|^2)``;
* normal-bundle SVD (Stanczuk et al., 2023): scores at ``x0 + sigma z`` near ``x0`` on M point along
  the normal space (their normal part ``~ 1 / sigma``), so the score matrix (centred over the copies)
  has ``D - k`` large singular values; ``k = D -`` the position of the largest log gap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

PointMap = Callable[[Float[Array, " D"]], Float[Array, " D"]]


class JacobianSummary(NamedTuple):
    """Measures of one Jacobian ``J = dD/dx`` at one on-manifold point."""

    trace: Float[Array, ""]  # effective rank tr J
    leakage: Float[Array, ""]  # normal leakage ||(I - tangent) J||_F
    angle: Float[Array, ""]  # largest principal angle (radians) between the top-k eigenspace and T_x M
    spectrum: Float[Array, " D"]  # singular values of J, decreasing


def principal_angles(basis: Float[Array, "D k"], projector: Float[Array, "D D"]) -> Float[Array, " k"]:
    """Principal angles (radians, increasing) between the span of the orthonormal columns of
    ``basis`` and the range of the orthogonal projector ``projector`` (of rank >= k):
    ``arccos`` of the singular values of ``projector @ basis``."""
    cosines = jnp.linalg.svd(projector @ basis, compute_uv=False)
    return jnp.arccos(jnp.clip(cosines, -1.0, 1.0))


def top_eigenspace(matrix: Float[Array, "D D"], k: int) -> Float[Array, "D k"]:
    """Orthonormal eigenvectors of the symmetric part of ``matrix`` with the ``k`` largest eigenvalues."""
    _, vectors = jnp.linalg.eigh(0.5 * (matrix + matrix.T))
    return vectors[:, -k:]


def jacobian_summary(jacobian: Float[Array, "D D"], tangent: Float[Array, "D D"], k: int) -> JacobianSummary:
    """Trace, normal leakage, largest principal angle of the top-``k`` eigenspace to ``T_x M``,
    and singular values of one Jacobian (``k`` static)."""
    normal = jnp.eye(tangent.shape[0], dtype=tangent.dtype) - tangent
    return JacobianSummary(
        trace=jnp.trace(jacobian),
        leakage=jnp.linalg.norm(normal @ jacobian),
        angle=principal_angles(top_eigenspace(jacobian, k), tangent)[-1],
        spectrum=jnp.linalg.svd(jacobian, compute_uv=False),
    )


def flipd(score: PointMap, x: Float[Array, " D"], sigma: Float[ArrayLike, ""]) -> Float[Array, ""]:
    """FLIPD intrinsic-dimension estimate ``D + sigma^2 (div s(x) + |s(x)|^2)`` at ONE point
    ``x`` (on the manifold) from the score ``s`` at noise level ``sigma``."""
    divergence = jnp.trace(jax.jacfwd(score)(x))
    return x.shape[0] + jnp.square(sigma) * (divergence + jnp.sum(jnp.square(score(x))))


def denoiser_flipd(trace: Float[ArrayLike, ""], residual: Float[ArrayLike, ""], sigma: Float[ArrayLike, ""]) -> Float[Array, ""]:
    """:func:`flipd` of the score ``(D - x) / sigma^2`` of a denoiser ``D``, from ``tr dD/dx`` and
    ``|D(x) - x|^2`` at the point: ``div s = (tr dD/dx - D) / sigma^2``, so the estimate is
    ``tr dD/dx + |D(x) - x|^2 / sigma^2`` (the effective rank plus the squared pull per sigma^2)."""
    return trace + residual / jnp.square(sigma)


def normal_bundle_dimension(scores: Float[Array, "n D"]) -> tuple[Int[Array, ""], Float[Array, " D"]]:
    """Intrinsic-dimension estimate from ``n >= D`` scores at noised copies ``x0 + sigma z_i`` of
    ONE manifold point: ``k = D - g`` where the singular values ``v`` (decreasing) of the score
    matrix, centred over the copies, have their largest log gap ``v_g / v_(g+1)`` after position
    ``g``. Centring removes the common tangent part (the pull along M towards density, ``O(1)``),
    leaving tangent values ``O(sigma)`` against normal ones ``O(1 / sigma)``. Returns ``(k, v)``."""
    values = jnp.linalg.svd(scores - jnp.mean(scores, axis=0, keepdims=True), compute_uv=False)
    gaps = jnp.log(values[:-1]) - jnp.log(values[1:])
    return scores.shape[1] - 1 - jnp.argmax(gaps), values


def dominant_subspace(jacobians: Float[Array, "n D D"], dim: int) -> Float[Array, "D m"]:
    """The ``dim`` leading eigenvectors of the mean of ``J_i^T J_i``: for Jacobians of a collapsed
    denoiser (``J ~`` tangent projector) the span of every tangent space (the affine hull of M),
    an encoder ``y = V^T x`` for a latent model."""
    gram = jnp.einsum("nij,nik->jk", jacobians, jacobians) / jacobians.shape[0]
    return jnp.linalg.eigh(gram)[1][:, -dim:]


def gaussian_mmd(x: Float[Array, "n m"], y: Float[Array, "l m"], bandwidth: Float[ArrayLike, ""]) -> Float[Array, ""]:
    """Squared maximum mean discrepancy between the samples ``x`` and ``y`` with the Gaussian
    kernel ``exp(-|a - b|^2 / (2 h^2))``; the biased (V-statistic) estimate, >= 0, whose floor
    for two samples of one law is ``~ 1 / n + 1 / l``."""
    kernel = lambda a, b: jnp.mean(jnp.exp(-jnp.sum(jnp.square(a[:, None] - b[None]), axis=-1) / (2.0 * jnp.square(bandwidth))))
    return kernel(x, x) + kernel(y, y) - 2.0 * kernel(x, y)
