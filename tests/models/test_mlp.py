"""MLP-UNet raw network (docs/theory.md 6): shapes, zero output at init, noise conditioning, skips."""

import jax
import jax.numpy as jnp
import numpy as np

from diffdyn.dynamics import edm
from diffdyn.models.denoisers.mlp import MLPUNet

MODEL = MLPUNet(dim=6, width=16, depth=5, embedding=8)


def test_parameter_shapes_and_count():
    params = MODEL.init(jax.random.key(0))
    assert params["input"]["w"].shape == (6, 16)
    assert params["output"]["w"].shape == (16, 6)
    assert len(params["blocks"]) == 5
    assert params["blocks"][0]["modulation"]["w"].shape == (8, 32)  # scale and shift per feature
    assert params["fourier"].shape == (4,)
    expected = 4 + (8 * 8 + 8) + (6 * 16 + 16) + 5 * (8 * 32 + 32 + 16 * 16 + 16) + (16 * 6 + 6)
    assert sum(leaf.size for leaf in jax.tree.leaves(params)) == expected


def test_zero_output_layer_makes_the_denoiser_c_skip_x_at_init():
    params = MODEL.init(jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (6,))
    denoise = edm.precondition(MODEL.network)
    for sigma in (0.01, 1.0, 50.0):
        np.testing.assert_allclose(denoise(params, x, sigma), edm.preconditioning(sigma).c_skip * x, rtol=1e-14)


def test_lecun_output_layer_when_zero_output_is_off():
    """Same key: identical parameters apart from the output weight, which gets the LeCun-normal
    scale 1/sqrt(width) of the other layers, so the initial denoiser is no longer c_skip x."""
    key = jax.random.key(1)
    zero, lecun = MODEL.init(key), MLPUNet(dim=6, width=16, depth=5, embedding=8, zero_output=False).init(key)
    np.testing.assert_array_equal(zero["input"]["w"], lecun["input"]["w"])
    np.testing.assert_array_equal(lecun["output"]["b"], 0.0)
    assert abs(float(jnp.std(lecun["output"]["w"])) * 4.0 - 1.0) < 0.3  # std 1/sqrt(16) from 96 draws
    x = jax.random.normal(jax.random.key(2), (6,))
    denoise = edm.precondition(MODEL.network)
    assert float(jnp.max(jnp.abs(denoise(lecun, x, 1.0) - edm.preconditioning(1.0).c_skip * x))) > 1e-2


def _trained_like(params, key):
    """Random non-zero output layer (an untrained zero layer hides every other dependence)."""
    params = dict(params)
    params["output"] = {"w": jax.random.normal(key, (16, 6)), "b": jnp.zeros(6)}
    return params


def test_output_depends_on_noise_conditioning_and_is_vmappable():
    params = _trained_like(MODEL.init(jax.random.key(3)), jax.random.key(4))
    x = jax.random.normal(jax.random.key(5), (10, 6))
    low = jax.vmap(MODEL.network, in_axes=(None, 0, None))(params, x, -1.0)
    high = jax.vmap(MODEL.network, in_axes=(None, 0, None))(params, x, 1.0)
    assert low.shape == (10, 6)
    assert float(jnp.max(jnp.abs(low - high))) > 1e-2
    np.testing.assert_allclose(low[3], MODEL.network(params, x[3], -1.0), rtol=1e-12)


def test_fourier_frequencies_are_fixed_under_gradients():
    params = _trained_like(MODEL.init(jax.random.key(6)), jax.random.key(7))
    x = jnp.ones(6)
    grads = jax.grad(lambda p: jnp.sum(MODEL.network(p, x, 0.3) ** 2))(params)
    assert float(jnp.max(jnp.abs(grads["fourier"]))) == 0.0
    assert float(jnp.max(jnp.abs(grads["embed"]["w"]))) > 0.0


def test_input_layer_norm_removes_scale_and_mean_of_the_input():
    params = _trained_like(MODEL.init(jax.random.key(8)), jax.random.key(9))
    x = jax.random.normal(jax.random.key(10), (6,))
    np.testing.assert_allclose(MODEL.network(params, 3.0 * x + 2.0, 0.1), MODEL.network(params, x, 0.1), rtol=1e-4)  # up to eps = 1e-5
    plain = MLPUNet(dim=6, width=16, depth=5, embedding=8, input_norm=False)
    assert not np.allclose(plain.network(params, 3.0 * x, 0.1), plain.network(params, x, 0.1))


def test_unet_skips_connect_mirrored_blocks():
    """With depth 5 the decoder blocks 3 and 4 read the outputs of blocks 1 and 0: zeroing block 0's
    dense layer changes the output through two paths, the middle block through one."""
    params = _trained_like(MODEL.init(jax.random.key(11)), jax.random.key(12))
    x = jax.random.normal(jax.random.key(13), (6,))

    def without(index):
        blocks = list(params["blocks"])
        blocks[index] = {**blocks[index], "dense": jax.tree.map(jnp.zeros_like, blocks[index]["dense"])}
        return MODEL.network({**params, "blocks": blocks}, x, 0.0)

    reference = MODEL.network(params, x, 0.0)
    for index in range(5):
        assert float(jnp.max(jnp.abs(without(index) - reference))) > 1e-6
