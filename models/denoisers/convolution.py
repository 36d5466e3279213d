"""Convolutional denoisers on periodic 1-d signals of ``n_pixels`` pixels ([WP] sec. 5.2).

Convention (docs/theory.md 4): ``D(x)_n = sum_j w_j x_{(n + j) mod N}``. A :class:`Circulant` filter
has a weight for every offset ``j = 0..N-1``; a :class:`Patch` filter of odd width
``K = 2r + 1 < N`` has weights for offsets ``j = -r..r``. Weight sharing makes every gradient
``N`` times larger than for the equivalent full matrix, so rates scale with ``N eta``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


def circulant_matrix(kernel: Float[Array, " n"]) -> Float[Array, "n n"]:
    """Matrix ``A`` with ``(A x)_n = sum_j kernel_j x_{(n+j) mod N}``, i.e. ``A[n, m] = kernel[(m - n) mod N]``."""
    n = kernel.shape[0]
    offsets = (jnp.arange(n)[None, :] - jnp.arange(n)[:, None]) % n
    return kernel[offsets]


@dataclass(frozen=True)
class Circulant:
    """Full-width circular convolution; ``init(key, q)`` gives ``w = q e_0`` (``W = q I``)."""

    n_pixels: int

    def init(self, key: PRNGKeyArray, scale) -> dict[str, Array]:
        return {"w": jnp.asarray(scale) * jnp.zeros(self.n_pixels).at[0].set(1.0)}

    def apply(self, params, x: Float[Array, " n"], sigma=None) -> Float[Array, " n"]:
        # Transfer function h_k = sum_j w_j exp(2 pi i k j / N) = N ifft(w)_k.
        transfer = self.n_pixels * jnp.fft.ifft(params["w"])
        return jnp.real(jnp.fft.ifft(jnp.fft.fft(x) * transfer))

    def affine(self, params):
        matrix = circulant_matrix(params["w"])
        return matrix, jnp.zeros(self.n_pixels, matrix.dtype)


@dataclass(frozen=True)
class Patch:
    """Local filter of odd width ``kernel_size = 2r + 1``; ``init(key, q)`` gives ``w = q e_r``."""

    n_pixels: int
    kernel_size: int = 3

    @property
    def radius(self) -> int:
        return self.kernel_size // 2

    def init(self, key: PRNGKeyArray, scale) -> dict[str, Array]:
        return {"w": jnp.asarray(scale) * jnp.zeros(self.kernel_size).at[self.radius].set(1.0)}

    def full_kernel(self, w: Float[Array, " k"]) -> Float[Array, " n"]:
        """The patch weights placed at offsets ``-r..r`` (mod N) of a length-``N`` kernel."""
        offsets = jnp.arange(-self.radius, self.radius + 1) % self.n_pixels
        return jnp.zeros(self.n_pixels, w.dtype).at[offsets].set(w)

    def apply(self, params, x: Float[Array, " n"], sigma=None) -> Float[Array, " n"]:
        shifted = jnp.stack([jnp.roll(x, -j) for j in range(-self.radius, self.radius + 1)])
        return params["w"] @ shifted

    def affine(self, params):
        matrix = circulant_matrix(self.full_kernel(params["w"]))
        return matrix, jnp.zeros(self.n_pixels, matrix.dtype)
