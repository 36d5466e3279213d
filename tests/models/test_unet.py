"""Convolutional U-Net raw network: shapes, zero output at init, locality, bad sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics import edm
from diffdyn.models.denoisers.unet import UNet, conv, downsample, upsample

MODEL = UNet(height=8, width=8, channels=1, base_channels=4, levels=2, embedding=8)
network = jax.jit(MODEL.network)  # compiled once: op-by-op dispatch of the U-Net is slow


def _trained_like(params, key):
    params = dict(params)
    params["output"] = {"w": jax.random.normal(key, params["output"]["w"].shape), "b": jnp.zeros(1)}
    return params


def test_shapes_and_zero_init_denoiser():
    params = MODEL.init(jax.random.key(0))
    assert params["input"]["w"].shape == (3, 3, 1, 4)
    assert params["middle"]["conv"]["w"].shape == (3, 3, 16, 16)
    assert params["down"][1]["widen"]["w"].shape == (1, 1, 8, 16)
    x = jax.random.normal(jax.random.key(1), (8, 8, 1))
    assert network(params, x, 0.2).shape == (8, 8, 1)
    denoise = jax.jit(edm.precondition(MODEL.network))
    np.testing.assert_allclose(denoise(params, x, 2.0), edm.preconditioning(2.0).c_skip * x, rtol=1e-14)


def test_noise_conditioning_and_batching():
    params = _trained_like(MODEL.init(jax.random.key(2)), jax.random.key(3))
    x = jax.random.normal(jax.random.key(4), (5, 8, 8, 1))
    batch = jax.jit(jax.vmap(MODEL.network, in_axes=(None, 0, None)))
    batched = batch(params, x, 0.5)
    np.testing.assert_allclose(batched[2], network(params, x[2], 0.5), rtol=1e-10)
    assert float(jnp.max(jnp.abs(batched - batch(params, x, -0.5)))) > 1e-3


def test_convolution_matches_a_direct_sum():
    key_w, key_x = jax.random.split(jax.random.key(5))
    params = {"w": jax.random.normal(key_w, (3, 3, 2, 3)), "b": jnp.arange(3.0)}
    x = jax.random.normal(key_x, (5, 6, 2))
    padded = jnp.pad(x, ((1, 1), (1, 1), (0, 0)))
    direct = np.zeros((5, 6, 3))
    for i in range(5):
        for j in range(6):
            direct[i, j] = np.einsum("abc,abco->o", padded[i : i + 3, j : j + 3], params["w"]) + params["b"]
    np.testing.assert_allclose(conv(params, x), direct, rtol=1e-10, atol=1e-12)


def test_pooling_and_upsampling():
    x = jnp.arange(16.0).reshape(4, 4, 1)
    np.testing.assert_allclose(downsample(x)[..., 0], [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_allclose(downsample(upsample(x)), x)


def test_receptive_field_is_local_at_one_level():
    """One level of 3x3 convolutions: the output at a pixel barely depends on far pixels."""
    model = UNet(height=16, width=16, channels=1, base_channels=4, levels=1, embedding=8)
    params = _trained_like(model.init(jax.random.key(6)), jax.random.key(7))
    x = jax.random.normal(jax.random.key(8), (16, 16, 1))
    jacobian_row = jax.jit(jax.grad(lambda y: model.network(params, y, 0.0)[0, 0, 0]))(x)[..., 0]
    # The one-group normalisation couples all pixels weakly; the conv path is local: the response
    # at distance >= 10 is far below the response at the pixel itself.
    assert float(jnp.max(jnp.abs(jacobian_row[10:, 10:]))) < 0.05 * float(jnp.abs(jacobian_row[0, 0]))


def test_sizes_not_divisible_by_the_levels_are_rejected():
    with pytest.raises(ValueError, match="levels"):
        UNet(height=12, width=12, levels=3)
