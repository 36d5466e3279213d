"""Small convolutional U-Net denoiser network for image-shaped data ([WP] sec. 6; docs/theory.md 6).

The raw network ``F(params, x_in, c_noise)`` of the EDM recipe (wrap it with
:func:`diffdyn.dynamics.edm.precondition`) for ONE image ``x_in`` of shape ``(height, width, channels)``:

* a 3x3 convolution to ``base_channels``;
* ``levels`` resolution levels: a residual block ``h <- h + conv3x3(SiLU(GN(h) (1 + scale) + shift))``
  (one-group normalisation; per-channel scale and shift from the noise embedding), the result
  kept as the skip, then 2x2 average pooling and a 1x1 convolution doubling the channels;
* a residual block at the coarsest level;
* back up: nearest-neighbour 2x upsampling, a 1x1 convolution halving the channels, the skip
  added, a residual block;
* normalisation, SiLU and a 3x3 convolution back to ``channels``, initialised at ZERO (the
  untrained denoiser is ``c_skip(sigma) x``, as for :class:`diffdyn.models.denoisers.mlp.MLPUNet`).

Height and width must be divisible by ``2**levels``. Convolutions are
``jax.lax.conv_general_dilated`` with SAME padding (NHWC / HWIO); weight sharing over pixels makes
the model (nearly) translation equivariant, the inductive bias that [WP] finds flattens the
spectral law. ``base_channels`` sets narrow vs wide. Parameters are a plain dict pytree.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from diffdyn.models.denoisers.layers import dense, dense_init, fourier_embedding, fourier_init, modulate, normalize


def conv_init(key: PRNGKeyArray, size: int, c_in: int, c_out: int, dtype=None, *, zero: bool = False) -> dict[str, Array]:
    """``{"w": (size, size, c_in, c_out), "b": (c_out,)}``, LeCun normal (fan-in ``size^2 c_in``)."""
    flat = dense_init(key, size * size * c_in, c_out, dtype, zero=zero)
    return {"w": flat["w"].reshape(size, size, c_in, c_out), "b": flat["b"]}


def conv(params: dict[str, Array], x: Float[Array, "h w c_in"]) -> Float[Array, "h w c_out"]:
    """SAME-padded stride-1 convolution of ONE image."""
    out = jax.lax.conv_general_dilated(x[None], params["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
    return out + params["b"][None, None, :]


def downsample(x: Float[Array, "h w c"]) -> Float[Array, "h/2 w/2 c"]:
    height, width, channels = x.shape
    return x.reshape(height // 2, 2, width // 2, 2, channels).mean(axis=(1, 3))


def upsample(x: Float[Array, "h w c"]) -> Float[Array, "2h 2w c"]:
    return jnp.repeat(jnp.repeat(x, 2, axis=0), 2, axis=1)


@dataclass(frozen=True)
class UNet:
    """Shapes of the U-Net: image ``(height, width, channels)``, ``base_channels``, ``levels``."""

    height: int
    width: int
    channels: int = 1
    base_channels: int = 16
    levels: int = 2
    embedding: int = 64
    fourier_scale: float = 1.0

    def __post_init__(self):
        factor = 2**self.levels
        if self.height % factor or self.width % factor:
            raise ValueError(f"levels: image {self.height}x{self.width} must be divisible by 2**levels = {factor}")

    def init(self, key: PRNGKeyArray, dtype=None) -> dict:
        keys = iter(jax.random.split(key, 8 + 6 * self.levels))
        widths = [self.base_channels * 2**level for level in range(self.levels + 1)]

        def block(c):
            return {
                "modulation": dense_init(next(keys), self.embedding, 2 * c, dtype),
                "conv": conv_init(next(keys), 3, c, c, dtype),
            }

        return {
            "fourier": fourier_init(next(keys), self.embedding, self.fourier_scale, dtype),
            "embed": dense_init(next(keys), self.embedding, self.embedding, dtype),
            "input": conv_init(next(keys), 3, self.channels, widths[0], dtype),
            "down": [
                {"block": block(widths[level]), "widen": conv_init(next(keys), 1, widths[level], widths[level + 1], dtype)} for level in range(self.levels)
            ],
            "middle": block(widths[-1]),
            "up": [
                {"narrow": conv_init(next(keys), 1, widths[level + 1], widths[level], dtype), "block": block(widths[level])} for level in range(self.levels)
            ],
            "output": conv_init(next(keys), 3, widths[0], self.channels, dtype, zero=True),
        }

    def network(self, params: dict, x: Float[Array, "h w c"], c_noise: Float[Array, ""]) -> Float[Array, "h w c"]:
        """Raw network ``F(x_in, c_noise)`` for ONE image (see the module docstring)."""
        embedding = jax.nn.silu(dense(params["embed"], fourier_embedding(params["fourier"], c_noise)))

        def residual(block, h):
            update = jax.nn.silu(modulate(normalize(h), block["modulation"], embedding))
            return h + conv(block["conv"], update)

        hidden = conv(params["input"], x)
        skips = []
        for level in params["down"]:
            hidden = residual(level["block"], hidden)
            skips.append(hidden)
            hidden = conv(level["widen"], downsample(hidden))
        hidden = residual(params["middle"], hidden)
        for level, skip in zip(reversed(params["up"]), reversed(skips)):
            hidden = conv(level["narrow"], upsample(hidden)) + skip
            hidden = residual(level["block"], hidden)
        return conv(params["output"], jax.nn.silu(normalize(hidden)))
