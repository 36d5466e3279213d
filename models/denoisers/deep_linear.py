"""Deep linear denoisers ([WP] sec. 5.1).

* :class:`SymmetricTwoLayer`: ``D(x) = P P^T x``; with aligned init ``P = sqrt(Q) I`` every mode
  follows a logistic curve of rate ``8 eta lambda`` (docs/theory.md 3).
* :class:`DeepLinear`: ``D(x) = W_L ... W_1 x``; ``aligned`` init is balanced, every layer
  ``Q^(1/L) I`` (depth 2: rate ``4 eta lambda``); ``random`` init takes ``Q^(1/L) O_l`` with
  independent Haar rotations ``O_l``, so the product ``Q O_L ... O_1`` is not aligned with the
  data (no closed form; simulate).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from diffdyn.models.denoisers.linear import scaled_init_matrix


@dataclass(frozen=True)
class SymmetricTwoLayer:
    """``D(x) = P P^T x`` with ``P`` of shape ``(dim, dim)``; ``init(key, q)`` gives ``P = sqrt(q) I``."""

    dim: int

    def init(self, key: PRNGKeyArray, scale) -> dict[str, Array]:
        return {"P": jnp.sqrt(jnp.asarray(scale)) * jnp.eye(self.dim)}

    def apply(self, params, x: Float[Array, " d"], sigma=None) -> Float[Array, " d"]:
        return params["P"] @ (params["P"].T @ x)

    def affine(self, params):
        matrix = params["P"] @ params["P"].T
        return matrix, jnp.zeros(self.dim, matrix.dtype)


@dataclass(frozen=True)
class DeepLinear:
    """``D(x) = W_L ... W_1 x`` (``depth = L``), parameters ``{"layers": (L, dim, dim)}``."""

    dim: int
    depth: int = 2
    init_mode: str = "aligned"

    def init(self, key: PRNGKeyArray, scale) -> dict[str, Array]:
        layer_scale = jnp.asarray(scale) ** (1.0 / self.depth)
        keys = jax.random.split(key, self.depth)
        layers = [scaled_init_matrix(k, self.dim, layer_scale, self.init_mode) for k in keys]
        return {"layers": jnp.stack(layers)}

    def apply(self, params, x: Float[Array, " d"], sigma=None) -> Float[Array, " d"]:
        return reduce(lambda h, layer: layer @ h, params["layers"], x)

    def affine(self, params):
        matrix = reduce(lambda product, layer: layer @ product, params["layers"])
        return matrix, jnp.zeros(self.dim, matrix.dtype)
