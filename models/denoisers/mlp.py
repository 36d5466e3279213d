"""MLP-UNet denoiser network for flat data ([WP] sec. 6, app. I; docs/theory.md 6).

The raw network ``F(params, x_in, c_noise)`` of the EDM recipe (wrap it with
:func:`diffdyn.dynamics.edm.precondition` to get the denoiser ``D(params, x, sigma)``), for ONE flat sample
``x_in`` of ``dim`` features:

* input LayerNorm (``input_norm``; it removes the per-sample mean and scale of ``x_in``, which in
  low dimension hides information the denoiser needs: switch it off there), then a dense layer
  to ``width`` features;
* a fixed Gaussian-Fourier embedding of ``c_noise`` (``embedding`` features, frequency scale
  ``fourier_scale``) followed by a dense layer + SiLU;
* ``depth`` residual blocks ``h <- h + dense(SiLU(LN(h) (1 + scale) + shift))`` whose scale and
  shift come from the noise embedding (adaptive, per block); U-Net skips: the input of block
  ``depth - 1 - i`` also receives the output of block ``i`` for ``i < depth // 2``;
* output LayerNorm, SiLU and a dense layer back to ``dim``, initialised at ZERO by default
  (``zero_output``, as EDM does), so the untrained denoiser is exactly ``c_skip(sigma) x`` (the
  optimal denoiser for isotropic data of variance ``sigma_data^2``) and every mode starts from the
  same generated variance; ``zero_output=False`` gives it the LeCun-normal init of the other
  layers (a random initial denoiser, as with PyTorch's default ``nn.Linear`` init).

[WP] Gaussian runs: depth 5, width 256, embedding 256. Parameters are a plain dict pytree.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
from jaxtyping import Array, Float, PRNGKeyArray

from diffdyn.models.denoisers.layers import dense, dense_init, fourier_embedding, fourier_init, modulate, normalize


@dataclass(frozen=True)
class MLPUNet:
    """Shapes of the MLP-UNet: data ``dim``, hidden ``width``, ``depth`` blocks, ``embedding`` size,
    Fourier frequency scale, whether the input is LayerNorm-ed, and whether the output layer
    starts at zero."""

    dim: int
    width: int = 256
    depth: int = 5
    embedding: int = 256
    fourier_scale: float = 1.0
    input_norm: bool = True
    zero_output: bool = True

    def init(self, key: PRNGKeyArray, dtype=None) -> dict:
        """LeCun-normal dense layers (the output layer zero if ``zero_output``), fixed Fourier frequencies."""
        keys = jax.random.split(key, 4 + 2 * self.depth)
        blocks = [
            {
                "modulation": dense_init(keys[4 + 2 * i], self.embedding, 2 * self.width, dtype),
                "dense": dense_init(keys[5 + 2 * i], self.width, self.width, dtype),
            }
            for i in range(self.depth)
        ]
        return {
            "fourier": fourier_init(keys[0], self.embedding, self.fourier_scale, dtype),
            "embed": dense_init(keys[1], self.embedding, self.embedding, dtype),
            "input": dense_init(keys[2], self.dim, self.width, dtype),
            "blocks": blocks,
            "output": dense_init(keys[3], self.width, self.dim, dtype, zero=self.zero_output),
        }

    def network(self, params: dict, x: Float[Array, " dim"], c_noise: Float[Array, ""]) -> Float[Array, " dim"]:
        """Raw network ``F(x_in, c_noise)`` for ONE sample (see the module docstring)."""
        embedding = jax.nn.silu(dense(params["embed"], fourier_embedding(params["fourier"], c_noise)))
        hidden = dense(params["input"], normalize(x) if self.input_norm else x)
        outputs = []
        for index, block in enumerate(params["blocks"]):
            partner = self.depth - 1 - index
            if partner < index:  # decoder half: U-Net skip from the mirrored encoder block
                hidden = hidden + outputs[partner]
            update = jax.nn.silu(modulate(normalize(hidden), block["modulation"], embedding))
            hidden = hidden + dense(block["dense"], update)
            outputs.append(hidden)
        return dense(params["output"], jax.nn.silu(normalize(hidden)))
