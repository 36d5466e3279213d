"""A conservative denoiser: the gradient of a potential (tied two-layer network plus a quadratic).

``F(x) = grad V(x)`` with ``V(x) = x^T A x / 2 + c . x + sum_i a_i psi(w_i . x + b_i) / width``, i.e.

    ``F(x) = sym(A) x + c + W^T (a * psi'(W x + b)) / width``

(``sym(A) = (A + A^T) / 2``; ``psi = log cosh``, ``psi' = tanh``, or ``psi = softplus``,
``psi' = sigmoid``; the tied part is averaged over its ``width`` units, so its tangent kernel stays of
the order of ``D / width`` next to the quadratic part's ``|x|^2``). Its Jacobian is symmetric, as that of an exact denoiser is (the Hessian of
``|x|^2 / 2 + sigma^2 log p_sigma``). The quadratic term lets it start at any multiple of the
identity (``init(skip=1)``: ``F(0) ~ x``), from where the normal block of ``A`` collapses as in
the linear toy (docs/theory.md section 10) while the tied part bends the denoiser onto curved
manifolds. ONE sample at a time; parameters a plain dict pytree; ``init`` traceable in ``skip``
and ``scale``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from diffdyn.dynamics.validation import require_choice

ACTIVATIONS = {  # name: (psi, psi')
    "tanh": (lambda u: jnp.logaddexp(u, -u) - jnp.log(2.0), jnp.tanh),
    "sigmoid": (jax.nn.softplus, jax.nn.sigmoid),
}


@dataclass(frozen=True)
class Conservative:
    """Shapes of the conservative denoiser: data ``dim``, hidden ``width``, activation ``psi'``."""

    dim: int
    width: int = 64
    activation: str = "tanh"

    def __post_init__(self):
        require_choice("activation", self.activation, ACTIVATIONS)

    def init(self, key: PRNGKeyArray, skip: Float[ArrayLike, ""] = 1.0, scale: Float[ArrayLike, ""] = 0.1) -> dict[str, Array]:
        """``A = skip I``, ``c = b = 0``, features ``w_i ~ N(0, I)`` (pre-activations of the order of
        ``|x|``), output weights ``a_i ~ N(0, scale^2)`` (the tied part starts at ``~ scale sqrt(D / width)``)."""
        feature_key, output_key = jax.random.split(key)
        dtype = jnp.zeros(()).dtype
        return {
            "A": jnp.asarray(skip, dtype) * jnp.eye(self.dim, dtype=dtype),
            "c": jnp.zeros((self.dim,), dtype),
            "w": jax.random.normal(feature_key, (self.width, self.dim), dtype),
            "b": jnp.zeros((self.width,), dtype),
            "a": jnp.asarray(scale, dtype) * jax.random.normal(output_key, (self.width,), dtype),
        }

    def potential(self, params: dict[str, Array], x: Float[Array, " dim"]) -> Float[Array, ""]:
        """``V(x) = x^T A x / 2 + c . x + sum_i a_i psi(w_i . x + b_i) / width``."""
        psi = ACTIVATIONS[self.activation][0]
        return 0.5 * x @ params["A"] @ x + params["c"] @ x + params["a"] @ psi(params["w"] @ x + params["b"]) / self.width

    def apply(self, params: dict[str, Array], x: Float[Array, " dim"]) -> Float[Array, " dim"]:
        """``F(x) = grad V(x) = sym(A) x + c + W^T (a * psi'(W x + b)) / width`` for ONE sample."""
        slope = ACTIVATIONS[self.activation][1]
        symmetric = 0.5 * (params["A"] + params["A"].T)
        return symmetric @ x + params["c"] + params["w"].T @ (params["a"] * slope(params["w"] @ x + params["b"])) / self.width
