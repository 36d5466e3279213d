"""One-layer linear denoiser ``D(x; sigma) = W_sigma x + b_sigma`` ([WP] sec. 3)."""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from diffdyn.dynamics.validation import require_choice
from diffdyn.models.distributions.gaussian import random_rotation

INIT_MODES = ("aligned", "random")


def scaled_init_matrix(key: PRNGKeyArray, dim: int, scale, init_mode: str) -> Float[Array, "d d"]:
    """``scale * I`` (``aligned``: aligned with every data basis) or ``scale * O`` with ``O`` a
    Haar-random rotation (``random``: not aligned with the data)."""
    require_choice("init_mode", init_mode, INIT_MODES)
    base = jnp.eye(dim) if init_mode == "aligned" else random_rotation(key, dim)
    return jnp.asarray(scale) * base


@dataclass(frozen=True)
class Linear:
    """Affine denoiser with independent ``(W, b)`` per noise level.

    ``init(key, q)`` gives ``W = q I`` (aligned init with mode values ``Q_k = q``) or
    ``W = q O`` (``init_mode="random"``), and ``b = 0``.
    """

    dim: int
    init_mode: str = "aligned"

    def init(self, key: PRNGKeyArray, scale) -> dict[str, Array]:
        matrix = scaled_init_matrix(key, self.dim, scale, self.init_mode)
        return {"W": matrix, "b": jnp.zeros(self.dim, matrix.dtype)}

    def apply(self, params, x: Float[Array, " d"], sigma=None) -> Float[Array, " d"]:
        return params["W"] @ x + params["b"]

    def affine(self, params) -> tuple[Float[Array, "d d"], Float[Array, " d"]]:
        return params["W"], params["b"]
