"""Denoisers: apply agrees with affine, inits, and the N-fold rate of weight sharing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics import objectives
from diffdyn.models.denoisers import Circulant, DeepLinear, Linear, Patch, SymmetricTwoLayer
from diffdyn.models.distributions.gaussian import stationary_data

MODELS = [Linear(6), Linear(6, "random"), SymmetricTwoLayer(6), DeepLinear(6, 3), DeepLinear(6, 3, "random"), Circulant(6), Patch(7, 3), Patch(9, 5)]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: repr(m))
def test_apply_is_the_affine_map(model):
    dim = getattr(model, "dim", None) or model.n_pixels
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape), model.init(jax.random.key(0), 0.3))
    x = jax.random.normal(jax.random.key(2), (dim,))
    matrix, offset = model.affine(params)
    np.testing.assert_allclose(model.apply(params, x, 1.0), matrix @ x + offset, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("model", [Linear(5), SymmetricTwoLayer(5), DeepLinear(5, 3), Circulant(5), Patch(5, 3)], ids=repr)
def test_aligned_init_is_q_identity(model):
    matrix, _ = model.affine(model.init(jax.random.key(0), 0.4))
    np.testing.assert_allclose(matrix, 0.4 * np.eye(5), atol=1e-12)


def test_random_init_is_scaled_rotation_not_aligned():
    matrix, _ = DeepLinear(6, 3, "random").affine(DeepLinear(6, 3, "random").init(jax.random.key(0), 0.5))
    np.testing.assert_allclose(matrix @ matrix.T, 0.25 * np.eye(6), atol=1e-12)
    assert np.abs(matrix - np.diag(np.diag(matrix))).max() > 0.05


def test_circulant_gradient_is_n_times_the_full_models_per_mode_gradient():
    """Weight sharing: in the DFT basis, d(h_k)/d tau = N x the full linear model's rate."""
    n, sigma = 8, 0.7
    power = jnp.array([5.0, 2.0, 1.0, 0.5, 0.2, 0.5, 1.0, 2.0])
    data = stationary_data(power)
    loss = lambda model, params: objectives.population_loss(model.affine, params, data.mean, data.covariance, sigma)
    conv, full = Circulant(n), Linear(n)
    conv_params, full_params = conv.init(None, 0.3), full.init(None, 0.3)
    conv_velocity = conv.affine(jax.grad(lambda p: -loss(conv, p))(conv_params))[0]
    full_velocity = -jax.grad(lambda p: loss(full, p))(full_params)["W"]
    diagonal = lambda m: jnp.diagonal(data.basis.T @ m @ data.basis)
    np.testing.assert_allclose(diagonal(conv_velocity), n * diagonal(full_velocity), rtol=1e-12)
    lam = data.eigenvalues
    np.testing.assert_allclose(diagonal(full_velocity), -2 * ((sigma**2 + lam) * 0.3 - lam), rtol=1e-12)
