"""Data on k-dimensional manifolds, randomly isometrically embedded in R^D (docs/theory.md section 10).

Three manifolds, each given by canonical coordinates in R^m and an isometry ``Q`` (``D x m``,
orthonormal columns; the embedded point is ``x = Q u``):

* ``subspace``: ``u ~ N(0, s^2 I_k)`` (``m = k``; ``radius`` is the latent scale ``s``);
* ``sphere``: ``S^k`` of radius ``r``, ``u = r y`` with ``y`` on the unit sphere of R^(k+1) (``m = k + 1``);
* ``torus``: the flat torus, ``k`` circles of radius ``r``, ``u = r (y_1, ..., y_k)`` with ``y_j`` on
  the unit circle (``m = 2k``).

The sphere and the torus are products of round spheres ``S^(p-1)`` (``factors`` of them: 1 with
``p = k + 1``, or ``k`` with ``p = 2``); along each the density is uniform (``concentration = 0``)
or von Mises-Fisher with mean direction ``e_1`` of that factor (a non-uniform density along M).

Exact pieces, for ONE point ``x`` (vmap outside): the projection :func:`project` onto M, the
tangent projector :func:`tangent_projector` at it, the canonical coordinates :func:`coordinates`
of the projection, and the optimal denoiser :func:`optimal_denoiser` ``E[x0 | x0 + sigma z = x]``
(:mod:`diffdyn.dynamics.theory.manifolds`), with its score ``(D* - x) / sigma^2``. The projection and
tangent projector are undefined at the sphere's centre (a set of measure zero). Last, measures of a
denoiser against these exact quantities (:func:`denoiser_geometry`, :func:`denoiser_errors`,
:func:`normal_bundle_estimate`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from diffdyn.dynamics import geometry
from diffdyn.dynamics.theory.manifolds import mean_resultant_length, subspace_shrinkage
from diffdyn.dynamics.validation import ConfigError, require_choice
from diffdyn.models.distributions.gaussian import random_rotation

MANIFOLDS = ("subspace", "sphere", "torus")
PROPOSALS = 24  # Wood's rejection sampler: proposals per vMF draw


def chart_dim(kind: str, intrinsic_dim: int) -> int:
    """``m``: the dimension of the canonical coordinates (``k``, ``k + 1``, ``2 k``)."""
    return {"subspace": intrinsic_dim, "sphere": intrinsic_dim + 1, "torus": 2 * intrinsic_dim}[require_choice("manifold", kind, MANIFOLDS)]


class Manifold(eqx.Module):
    """A manifold of kind ``kind`` and dimension ``intrinsic_dim`` embedded by ``embedding``
    (``Q``, ``D x m``), with ``radius`` (subspace: latent scale) and vMF ``concentration``
    (sphere, torus; 0 = uniform). A pytree: ``radius`` and ``concentration`` may be traced."""

    kind: str = eqx.field(static=True)
    intrinsic_dim: int = eqx.field(static=True)
    embedding: Float[Array, "D m"]
    radius: Float[Array, ""]
    concentration: Float[Array, ""]

    @property
    def ambient_dim(self) -> int:
        """The rows of ``embedding`` (a padded manifold's ``padded_dim``)."""
        return self.embedding.shape[0]

    @property
    def factors(self) -> int:
        """Round factors: 1 (sphere), k (torus), 0 (subspace)."""
        return {"subspace": 0, "sphere": 1, "torus": self.intrinsic_dim}[self.kind]

    @property
    def factor_dim(self) -> int:
        """``p``: each round factor is the unit sphere of R^p."""
        return self.embedding.shape[1] // max(self.factors, 1)


def random_manifold(
    key: PRNGKeyArray,
    kind: str,
    intrinsic_dim: int,
    ambient_dim: int,
    radius: Float[ArrayLike, ""] = 1.0,
    concentration: Float[ArrayLike, ""] = 0.0,
    padded_dim: int | None = None,
) -> Manifold:
    """A manifold with a Haar-random isometric embedding into R^D drawn from ``key``; with
    ``padded_dim``, R^D is the first ``ambient_dim`` coordinates of R^padded_dim (zero rows
    below), so that manifolds of several ambient dimensions share one array shape."""
    dim = chart_dim(kind, intrinsic_dim)
    if intrinsic_dim < 1 or dim > ambient_dim:
        raise ConfigError(f"ambient_dim: a {kind} of dimension {intrinsic_dim} needs D >= {dim}; got {ambient_dim}")
    embedding = random_rotation(key, ambient_dim)[:, :dim]
    embedding = jnp.pad(embedding, ((0, (padded_dim or ambient_dim) - ambient_dim), (0, 0)))
    return Manifold(kind, intrinsic_dim, embedding, jnp.asarray(radius, embedding.dtype), jnp.asarray(concentration, embedding.dtype))


def von_mises_fisher(key: PRNGKeyArray, p: int, concentration: Float[ArrayLike, ""], num: int) -> Float[Array, "num p"]:
    """``num`` draws of ``vMF(e_1, concentration)`` on the unit sphere of R^p (uniform at 0).

    Wood's (1994) sampler: ``w = y . e_1`` by rejection from the proposal ``Beta((p-1)/2, (p-1)/2)``
    (drawn as ``(1 + g_1 / |g|) / 2``, ``g ~ N(0, I_p)``), then a uniform direction orthogonal to
    ``e_1``. :data:`PROPOSALS` proposals per draw, the first accepted one kept: no while loop, so it
    vmaps (acceptance >= 0.65 per proposal for every p and concentration, so all fail with odds < 1e-10)."""
    c = jnp.asarray(concentration)
    b = (p - 1) / (2.0 * c + jnp.sqrt(4.0 * jnp.square(c) + (p - 1) ** 2))  # = (-2c + sqrt(4c^2 + (p-1)^2)) / (p-1)
    x0 = (1.0 - b) / (1.0 + b)
    log_c = c * x0 + (p - 1) * jnp.log1p(-jnp.square(x0))
    proposal_key, accept_key, direction_key = jax.random.split(key, 3)
    gaussian = jax.random.normal(proposal_key, (num, PROPOSALS, p), dtype=c.dtype)
    z = 0.5 * (1.0 + gaussian[..., 0] / jnp.linalg.norm(gaussian, axis=-1))
    w = (1.0 - (1.0 + b) * z) / (1.0 - (1.0 - b) * z)
    log_u = jnp.log(jax.random.uniform(accept_key, (num, PROPOSALS), dtype=c.dtype))
    accepted = c * w + (p - 1) * jnp.log1p(-x0 * w) - log_c >= log_u
    w = jnp.take_along_axis(w, jnp.argmax(accepted, axis=1)[:, None], axis=1)
    normal = jax.random.normal(direction_key, (num, p - 1), dtype=c.dtype)
    direction = normal / jnp.linalg.norm(normal, axis=1, keepdims=True)
    return jnp.concatenate([w, jnp.sqrt(jnp.clip(1.0 - jnp.square(w), 0.0)) * direction], axis=1)


def sample(key: PRNGKeyArray, manifold: Manifold, num: int) -> Float[Array, "num D"]:
    """``num`` points of the data distribution on ``manifold``, embedded in R^D."""
    if manifold.kind == "subspace":
        chart = manifold.radius * jax.random.normal(key, (num, manifold.intrinsic_dim), manifold.embedding.dtype)
    else:
        keys = jax.random.split(key, manifold.factors)
        draws = jax.vmap(lambda k: von_mises_fisher(k, manifold.factor_dim, manifold.concentration, num))(keys)
        chart = manifold.radius * jnp.moveaxis(draws, 0, 1).reshape(num, -1)
    return chart @ manifold.embedding.T


def _factor_directions(manifold: Manifold, x: Float[Array, " D"]) -> Float[Array, "f p"]:
    """Unit direction of ``x`` within each round factor's plane (``x``'s chart coordinates per factor)."""
    chart = (manifold.embedding.T @ x).reshape(manifold.factors, manifold.factor_dim)
    return chart / jnp.linalg.norm(chart, axis=1, keepdims=True)


def coordinates(manifold: Manifold, x: Float[Array, " D"]) -> Float[Array, " m"]:
    """Canonical coordinates ``Q^T pi_M(x)`` of the projection of ``x`` onto M (the intrinsic
    coordinates in which densities along M are compared)."""
    if manifold.kind == "subspace":
        return manifold.embedding.T @ x
    return manifold.radius * _factor_directions(manifold, x).reshape(-1)


def project(manifold: Manifold, x: Float[Array, " D"]) -> Float[Array, " D"]:
    """``pi_M(x)``: the nearest point of M."""
    return manifold.embedding @ coordinates(manifold, x)


def tangent_projector(manifold: Manifold, x: Float[Array, " D"]) -> Float[Array, "D D"]:
    """Orthogonal projector onto the tangent space of M at ``pi_M(x)`` (rank ``k``)."""
    if manifold.kind == "subspace":
        return manifold.embedding @ manifold.embedding.T
    directions = _factor_directions(manifold, x)
    p = manifold.factor_dim
    blocks = jnp.eye(p, dtype=x.dtype)[None] - directions[:, :, None] * directions[:, None, :]
    chart_projector = jax.scipy.linalg.block_diag(*blocks)
    return manifold.embedding @ chart_projector @ manifold.embedding.T


def optimal_denoiser(manifold: Manifold, x: Float[Array, " D"], sigma: Float[ArrayLike, ""]) -> Float[Array, " D"]:
    """``D*(x, sigma) = E[x0 | x]``: ``s^2 / (s^2 + sigma^2) P x`` on the subspace; per round factor
    ``r A_p(|eta|) eta / |eta|`` with ``eta = c e_1 + r u / sigma^2`` (docs/theory.md section 10)."""
    chart = manifold.embedding.T @ x
    if manifold.kind == "subspace":
        return subspace_shrinkage(manifold.radius, sigma) * (manifold.embedding @ chart)
    pull = manifold.radius * chart.reshape(manifold.factors, manifold.factor_dim) / jnp.square(sigma)
    eta = pull.at[:, 0].add(manifold.concentration)
    length = jnp.linalg.norm(eta, axis=1, keepdims=True)
    mean = mean_resultant_length(manifold.factor_dim, length) * eta / length
    return manifold.embedding @ (manifold.radius * mean.reshape(-1))


def score(manifold: Manifold, x: Float[Array, " D"], sigma: Float[ArrayLike, ""]) -> Float[Array, " D"]:
    """Exact score ``grad log p_sigma(x) = (D*(x, sigma) - x) / sigma^2`` of the noised data."""
    return (optimal_denoiser(manifold, x, sigma) - x) / jnp.square(sigma)


# ----------------------------------------------------------------------------- a denoiser against M


def denoiser_geometry(
    manifold: Manifold, points: Float[Array, "n D"], tangents: Float[Array, "n D D"], denoise, sigma: Float[ArrayLike, ""]
) -> dict[str, Array]:
    """Mean over on-manifold ``points`` (with their tangent projectors) of the Jacobian measures of
    ``denoise`` (:func:`diffdyn.dynamics.geometry.jacobian_summary`: ``trace``, ``angle``, ``spectrum``;
    ``leakage`` per normal direction, ``/ sqrt(D - k)``, 1 for the identity) and of the FLIPD
    estimate of its score at ``sigma`` (``flipd``)."""
    k = manifold.intrinsic_dim

    def one(x, tangent):
        summary = geometry.jacobian_summary(jax.jacfwd(denoise)(x), tangent, k)
        return summary._asdict() | {"flipd": geometry.denoiser_flipd(summary.trace, jnp.sum(jnp.square(denoise(x) - x)), sigma)}

    mean = jax.tree.map(lambda leaf: jnp.mean(leaf, axis=0), jax.vmap(one)(points, tangents))
    return mean | {"leakage": mean["leakage"] / jnp.sqrt(manifold.ambient_dim - k)}


def denoiser_errors(manifold: Manifold, noisy: Float[Array, "n D"], denoise, sigma: Float[ArrayLike, ""]) -> Float[Array, " part"]:
    """Mean over the noised points of ``|D - D*|^2`` normal and tangent to M (at ``pi_M(x)``), and
    of ``|D - pi_M|^2``: collapse shows in the first, refinement along M in the second."""

    def one(x):
        error = denoise(x) - optimal_denoiser(manifold, x, sigma)
        tangent = tangent_projector(manifold, x) @ error
        return jnp.stack([jnp.sum(jnp.square(error - tangent)), jnp.sum(jnp.square(tangent)), jnp.sum(jnp.square(denoise(x) - project(manifold, x)))])

    return jnp.mean(jax.vmap(one)(noisy), axis=0)


def normal_bundle_estimate(score, points: Float[Array, "n D"], sigma: Float[ArrayLike, ""], key: PRNGKeyArray) -> Float[Array, ""]:
    """Mean over ``points`` of :func:`diffdyn.dynamics.geometry.normal_bundle_dimension` from ``score`` at
    ``2 D`` copies of each point noised at ``sigma``."""
    count, dim = points.shape
    copies = points[:, None, :] + sigma * jax.random.normal(key, (count, 2 * dim, dim), points.dtype)
    return jnp.mean(jax.vmap(lambda rows: geometry.normal_bundle_dimension(jax.vmap(score)(rows))[0])(copies))
