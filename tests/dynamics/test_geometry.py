"""Denoiser geometry (docs/theory.md section 10): Jacobian measures, principal angles, the
intrinsic-dimension estimators on exact scores, the dominant subspace, the MMD."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics import geometry
from diffdyn.dynamics.theory import manifolds as theory
from diffdyn.models.distributions import manifolds as data


def plane_rotation(dim, angle):
    """Rotation by ``angle`` in the (e_1, e_2) plane."""
    rotation = np.eye(dim)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return rotation


def test_principal_angles_and_the_jacobian_summary():
    """span(e_1, e_3) rotated by 0.3 in the (e_1, e_2) plane meets span(e_1, e_3) at angles 0 and
    0.3; the tangent projector as a Jacobian has trace k, no leakage, angle 0; the identity has
    leakage ||P_N||_F = sqrt(D - k)."""
    basis = np.eye(6)[:, [0, 2]]
    tangent = jnp.asarray(basis @ basis.T)

    @jax.jit
    def measured(rotated):
        return geometry.principal_angles(rotated, tangent), geometry.jacobian_summary(tangent, tangent, 2), geometry.jacobian_summary(jnp.eye(6), tangent, 2)

    angles, collapsed, identity = measured(jnp.asarray(plane_rotation(6, 0.3) @ basis))
    np.testing.assert_allclose(angles, [0.0, 0.3], atol=1e-7)
    assert (float(collapsed.trace), float(collapsed.leakage), float(collapsed.angle)) == pytest.approx((2.0, 0.0, 0.0), abs=1e-7)
    np.testing.assert_allclose(collapsed.spectrum, [1, 1, 0, 0, 0, 0], atol=1e-12)
    assert (float(identity.trace), float(identity.leakage)) == pytest.approx((6.0, 2.0), abs=1e-12)


@pytest.mark.parametrize(("kind", "k", "concentration"), [("subspace", 2, 0.0), ("sphere", 2, 1.5), ("torus", 2, 0.0)])
def test_estimators_recover_k_on_exact_scores(kind, k, concentration):
    """At sigma = 0.01, D = 7, 16 points of M, the exact score:

    * FLIPD gives k within the O(sigma^2) curvature and density terms (subspace: its mean equals the
      closed form within Monte Carlo error), and equals the denoiser form tr dD/dx + |D - x|^2 / sigma^2;
    * the normal-bundle SVD of 14 noised copies gives k exactly, after a gap of > 10x;
    * the dominant subspace of the tangent projectors is the span of M.
    """
    manifold = data.random_manifold(jax.random.key(3), kind, k, 7, 1.0, concentration)
    sigma, points = 0.01, data.sample(jax.random.key(4), manifold, 16)
    score, denoise = partial(data.score, manifold, sigma=sigma), partial(data.optimal_denoiser, manifold, sigma=sigma)

    @jax.jit
    def estimates(points, noise):
        flipd = jax.vmap(lambda x: geometry.flipd(score, x, sigma))(points)
        from_denoiser = jax.vmap(lambda x: geometry.denoiser_flipd(jnp.trace(jax.jacfwd(denoise)(x)), jnp.sum(jnp.square(denoise(x) - x)), sigma))(points)
        bundle = jax.vmap(lambda x, z: geometry.normal_bundle_dimension(jax.vmap(score)(x[None, :] + sigma * z)))(points, noise)
        encoder = geometry.dominant_subspace(jax.vmap(partial(data.tangent_projector, manifold))(points), data.chart_dim(kind, k))
        return flipd, from_denoiser, bundle, geometry.principal_angles(encoder, manifold.embedding @ manifold.embedding.T)

    flipd, from_denoiser, (bundle, values), angles = estimates(points, jax.random.normal(jax.random.key(5), (16, 14, 7)))
    np.testing.assert_allclose(flipd, k, atol=2e-3)
    np.testing.assert_allclose(from_denoiser, flipd, rtol=1e-10)
    if kind == "subspace":
        spread = float(np.std(flipd)) / np.sqrt(flipd.size)
        assert abs(float(np.mean(flipd)) - float(theory.subspace_flipd(k, 1.0, sigma))) < 4 * spread
    np.testing.assert_array_equal(bundle, k)
    assert float(np.min(values[:, 6 - k] / values[:, 7 - k])) > 10.0
    np.testing.assert_allclose(angles, 0.0, atol=1e-6)


def test_gaussian_mmd_against_its_definition():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 3)), rng.normal(loc=0.5, size=(30, 3))
    kernel = lambda a, b: np.exp(-np.sum((a[:, None] - b[None]) ** 2, axis=-1) / (2 * 0.7**2)).mean()
    expected = kernel(x, x) + kernel(y, y) - 2 * kernel(x, y)
    assert float(geometry.gaussian_mmd(jnp.asarray(x), jnp.asarray(y), 0.7)) == pytest.approx(expected, rel=1e-12)
    assert float(geometry.gaussian_mmd(jnp.asarray(x), jnp.asarray(x), 0.7)) == pytest.approx(0.0, abs=1e-15)
    floor = float(geometry.gaussian_mmd(jnp.asarray(rng.normal(size=(400, 3))), jnp.asarray(rng.normal(size=(400, 3))), 0.7))
    shifted = float(geometry.gaussian_mmd(jnp.asarray(rng.normal(size=(400, 3))), jnp.asarray(rng.normal(loc=0.5, size=(400, 3))), 0.7))
    assert floor < 0.02 < shifted
