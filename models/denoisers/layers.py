"""Building blocks shared by the nonlinear denoisers (:mod:`diffdyn.models.denoisers.mlp`,
:mod:`diffdyn.models.denoisers.unet`): pure functions over plain dict pytrees, ONE sample at a time.

Initialisations are LeCun-normal (``N(0, 1/fan_in)``) with zero biases; the fixed Gaussian-Fourier
noise embedding (Tancik et al. 2020; as in EDM's ``FourierEmbedding``) stores its frequencies in
the parameters but reads them through ``jax.lax.stop_gradient``, so optimizers leave them fixed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


def dense_init(key: PRNGKeyArray, fan_in: int, fan_out: int, dtype=None, *, zero: bool = False) -> dict[str, Array]:
    """``{"w": (fan_in, fan_out), "b": (fan_out,)}``; ``zero`` gives an all-zero layer."""
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    weight = jax.random.normal(key, (fan_in, fan_out), dtype) / jnp.sqrt(fan_in).astype(dtype)
    return {"w": jnp.zeros_like(weight) if zero else weight, "b": jnp.zeros((fan_out,), dtype)}


def dense(params: dict[str, Array], x: Float[Array, "... fan_in"]) -> Float[Array, "... fan_out"]:
    return x @ params["w"] + params["b"]


def normalize(x: Float[Array, "*shape"], eps: float = 1e-5) -> Float[Array, "*shape"]:
    """Zero mean, unit variance over ALL elements of one sample (LayerNorm without affine)."""
    centred = x - jnp.mean(x)
    return centred / jnp.sqrt(jnp.mean(jnp.square(centred)) + eps)


def fourier_init(key: PRNGKeyArray, size: int, scale: float, dtype=None) -> Float[Array, " half"]:
    """Frequencies ``b ~ N(0, scale^2)`` of a ``size``-dimensional (even) Fourier embedding."""
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    return scale * jax.random.normal(key, (size // 2,), dtype)


def fourier_embedding(frequencies: Float[Array, " half"], c_noise: Float[Array, ""]) -> Float[Array, " size"]:
    """``[cos(2 pi b c), sin(2 pi b c)]`` of the noise conditioning ``c`` (frequencies fixed)."""
    phase = 2.0 * jnp.pi * jax.lax.stop_gradient(frequencies) * c_noise
    return jnp.concatenate([jnp.cos(phase), jnp.sin(phase)])


def modulate(x: Float[Array, "... channels"], params: dict[str, Array], embedding: Float[Array, " e"]) -> Float[Array, "... channels"]:
    """Adaptive scale and shift ``x (1 + scale) + shift`` with ``(scale, shift) = dense(embedding)``
    acting on the last axis (features or channels)."""
    scale, shift = jnp.split(dense(params, embedding), 2)
    lead = (1,) * (x.ndim - 1)  # explicit broadcasting over the leading (pixel) axes
    return x * (1.0 + scale.reshape(lead + scale.shape)) + shift.reshape(lead + shift.shape)
