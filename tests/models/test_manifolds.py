"""Manifold data (docs/theory.md section 10): samples on M, the vMF sampler's law, projections and
tangent projectors, the exact denoiser (against importance sampling and its Jacobian's closed
form); and the conservative denoiser used on it."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics.theory import manifolds as theory
from diffdyn.dynamics.validation import ConfigError
from diffdyn.models.denoisers.conservative import Conservative
from diffdyn.models.distributions import manifolds as data

CASES = [("subspace", 2, 0.0), ("sphere", 2, 2.0), ("torus", 2, 1.0)]


def test_embedding_is_an_isometry_and_too_small_ambient_dims_fail():
    for kind, k, dim in (("subspace", 3, 3), ("sphere", 3, 4), ("torus", 2, 4)):
        embedding = data.random_manifold(jax.random.key(1), kind, k, 9).embedding
        assert embedding.shape == (9, dim)
        np.testing.assert_allclose(embedding.T @ embedding, np.eye(dim), atol=1e-12)
    with pytest.raises(ConfigError, match="ambient_dim"):
        data.random_manifold(jax.random.key(1), "torus", 3, 5)
    padded = data.random_manifold(jax.random.key(1), "sphere", 1, 4, padded_dim=7).embedding
    assert padded.shape == (7, 2) and not np.any(padded[4:])
    np.testing.assert_allclose(padded[:4], data.random_manifold(jax.random.key(1), "sphere", 1, 4).embedding, rtol=1e-15)


@pytest.mark.parametrize(("kind", "k", "concentration"), CASES)
def test_samples_projection_tangent_space_and_exact_denoiser(kind, k, concentration):
    """On a manifold in R^6 (radius 0.8):

    * samples lie on M, the projection is idempotent, every factor's coordinates have the radius;
    * the tangent projector has rank k, and the projection of a line through a point of M is a
      curve whose velocity there is the tangent projection of the line's direction (d pi_M = P_T);
    * the exact denoiser equals E[x0 | x] by self-normalised importance sampling over 20k prior
      draws (sigma = 0.5), within 5 of that estimate's standard errors.
    """
    manifold = data.random_manifold(jax.random.key(0), kind, k, 6, 0.8, concentration)
    sigma = 0.5

    @jax.jit
    def measured(key):
        prior_key, noise_key, direction_key = jax.random.split(key, 3)
        prior = data.sample(prior_key, manifold, 20_000)
        x = prior[:3] + sigma * jax.random.normal(noise_key, (3, prior.shape[1]))
        weights = jax.nn.softmax(-jnp.sum(jnp.square(x[:, None, :] - prior[None]), axis=-1) / (2 * sigma**2), axis=-1)
        estimate = weights @ prior
        error = jnp.sqrt(jnp.sum(jnp.square(weights) * jnp.sum(jnp.square(prior[None] - estimate[:, None, :]), axis=-1), axis=-1))
        exact = jax.vmap(lambda y: data.optimal_denoiser(manifold, y, sigma))(x)
        project = jax.vmap(partial(data.project, manifold))
        direction = jax.random.normal(direction_key, prior.shape[1:])
        velocity = jax.jvp(lambda t: data.project(manifold, prior[0] + t * direction), (0.0,), (1.0,))[1]
        chart = jax.vmap(partial(data.coordinates, manifold))(x)
        return (
            prior[:50],
            project(prior[:50]),
            project(x),
            project(project(x)),
            chart,
            data.tangent_projector(manifold, prior[0]),
            direction,
            velocity,
            exact,
            estimate,
            error,
        )

    points, on_manifold, projected, twice, chart, tangent, direction, velocity, exact, estimate, error = measured(jax.random.key(10))
    np.testing.assert_allclose(on_manifold, points, atol=1e-12)
    np.testing.assert_allclose(twice, projected, atol=1e-12)
    if kind != "subspace":
        np.testing.assert_allclose(np.linalg.norm(np.reshape(chart, (3, manifold.factors, -1)), axis=-1), 0.8, rtol=1e-12)
    np.testing.assert_allclose(tangent @ tangent, tangent, atol=1e-12)
    assert float(jnp.trace(tangent)) == pytest.approx(k, abs=1e-12)
    np.testing.assert_allclose(velocity, tangent @ direction, atol=1e-12)
    gap = np.linalg.norm(np.asarray(exact - estimate), axis=-1)
    assert np.all(gap < 5 * np.asarray(error) + 1e-3), (gap, error)


def test_von_mises_fisher_sampler_has_the_mean_length_and_is_uniform_at_zero():
    """E[y . e_1] = A_p(c) within Monte Carlo error; c = 0: E[y y^T] = I / p."""

    @jax.jit
    def draws(key):
        keys = jax.random.split(key, 4)
        return [
            data.von_mises_fisher(keys[0], 2, 2.0, 20_000),
            data.von_mises_fisher(keys[1], 3, 0.7, 20_000),
            data.von_mises_fisher(keys[2], 4, 5.0, 20_000),
            data.von_mises_fisher(keys[3], 3, 0.0, 20_000),
        ]

    *concentrated, uniform = draws(jax.random.key(2))
    for sample, (p, c) in zip(concentrated, ((2, 2.0), (3, 0.7), (4, 5.0))):
        np.testing.assert_allclose(np.linalg.norm(sample, axis=1), 1.0, rtol=1e-12)
        first = np.asarray(sample[:, 0])
        assert abs(first.mean() - float(theory.mean_resultant_length(p, c))) < 4 * first.std() / np.sqrt(first.size)
    np.testing.assert_allclose(uniform.T @ uniform / uniform.shape[0], np.eye(3) / 3, atol=0.015)


def test_optimal_denoiser_on_the_subspace_is_the_shrunk_projector():
    manifold = data.random_manifold(jax.random.key(12), "subspace", 2, 5, 0.7)
    x = jax.random.normal(jax.random.key(13), (5,))
    projector = manifold.embedding @ manifold.embedding.T
    np.testing.assert_allclose(data.optimal_denoiser(manifold, x, 0.3), 0.49 / (0.49 + 0.09) * projector @ x, rtol=1e-14)
    np.testing.assert_allclose(data.score(manifold, x, 0.3), (0.49 / 0.58 * projector @ x - x) / 0.09, rtol=1e-13)


@pytest.mark.parametrize(("kind", "k"), [("sphere", 2), ("torus", 2), ("subspace", 3)])
def test_effective_rank_of_the_exact_denoiser_tends_to_k(kind, k):
    """tr dD*/dx at a point of M (uniform density) equals the closed form and -> k as sigma -> 0."""
    manifold = data.random_manifold(jax.random.key(14), kind, k, 8, 0.9)
    x = data.sample(jax.random.key(15), manifold, 1)[0]
    closed = lambda sigma: (
        k * theory.subspace_shrinkage(0.9, sigma) if kind == "subspace" else theory.round_effective_rank(manifold.factors, manifold.factor_dim, 0.9, sigma)
    )
    both = lambda sigma: (jnp.trace(jax.jacfwd(lambda y: data.optimal_denoiser(manifold, y, sigma))(x)), closed(sigma))
    ranks, expected = jax.jit(jax.vmap(both))(jnp.asarray([0.5, 0.1, 0.02, 0.004]))
    ranks = np.asarray(ranks)
    np.testing.assert_allclose(ranks, expected, rtol=1e-10)
    assert abs(ranks[-1] - k) < 1e-3 * k and np.all(np.diff(np.abs(ranks - k)) < 0)


# ----------------------------------------------------------------------------- the conservative denoiser


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_conservative_denoiser_is_the_gradient_of_its_potential(activation):
    """F = grad V (A stored non-symmetric, random biases), so dF/dx is symmetric; with scale 0
    it starts at skip x, with a small scale near it."""
    model = Conservative(5, 7, activation)
    x = jax.random.normal(jax.random.key(19), (5,))

    @jax.jit
    def measured(key):
        params = model.init(key, skip=0.5, scale=0.8)
        params = params | {"A": params["A"] + jax.random.normal(jax.random.key(17), (5, 5)), "b": jax.random.normal(jax.random.key(18), (7,))}
        start = model.init(key, skip=1.0, scale=0.0)
        return model.apply(params, x), jax.grad(partial(model.potential, params))(x), jax.jacfwd(partial(model.apply, params))(x), model.apply(start, x)

    value, gradient, jacobian, start = measured(jax.random.key(16))
    np.testing.assert_allclose(value, gradient, rtol=1e-12)
    np.testing.assert_allclose(jacobian, jacobian.T, atol=1e-12)
    np.testing.assert_allclose(start, x, rtol=1e-15)
