"""Tied two-layer noise predictor at one OU time, trained online ([BMG] sec. 3; docs/theory.md section 9).

``z_hat(x) = s x + sigma W^T g(c W x)`` for ONE noised sample ``x = x_t`` (OU time ``t``, fixed),
``c = e^-t / sqrt(1 - e^-2t)``, a learnable scalar skip ``s`` (init 1) and ``W`` (``width x dim``,
init ``N(0, scale^2 / dim)``; the authors' ``scale = 0.1``). Readout ``noise`` (``sigma = +1``) is
the authors' released code; ``data`` (``sigma = -1``) lets the hidden units write into the
clean-data estimate ``e^t (x - sqrt(Delta) z_hat)`` instead (a tied autoencoder behind a skip).
Which spikes draw the units depends on that sign and on ``g`` (:func:`diffdyn.dynamics.theory.cumulants.spike_order`).
Loss: the mean over the ``d`` coordinates of ``(z_hat - z)^2`` (the authors' ``F.mse_loss``).

:func:`train_online` runs online SGD or Adam on fresh batches (one ``lax.scan``; optionally
spherical: every row of ``W`` renormalised after each step), records the parameters at chosen
steps and, at every step, the first step at which the best hidden unit's normalised overlap with
each spike direction reaches a threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from diffdyn.dynamics.theory.cumulants import READOUT_SIGNS
from diffdyn.dynamics.training import OPTIMIZERS

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "scaled_tanh": lambda h: 0.1 * jnp.tanh(10 * h),
    "quadratic": jnp.square,
    "relu_squared": lambda h: jnp.square(jnp.where(h > 0, h, 0.0)),  # no custom_jvp: Taylor mode (jet) goes through it
}


@dataclass(frozen=True)
class TiedDenoiser:
    """Shapes and choices of the tied noise predictor (see the module docstring)."""

    dim: int
    width: int
    activation: str = "tanh"
    readout: str = "noise"

    def init(self, key: PRNGKeyArray, scale) -> dict[str, Array]:
        weights = scale / jnp.sqrt(self.dim) * jax.random.normal(key, (self.width, self.dim))
        return {"W": weights, "skip": jnp.ones((), weights.dtype)}

    def apply(self, params: dict, x: Float[Array, " d"], t) -> Float[Array, " d"]:
        scale = jnp.exp(-t) / jnp.sqrt(1 - jnp.exp(-2 * t))
        hidden = ACTIVATIONS[self.activation](scale * (params["W"] @ x))
        return params["skip"] * x + READOUT_SIGNS[self.readout] * (params["W"].T @ hidden)

    def loss(self, params: dict, x: Float[Array, " d"], z: Float[Array, " d"], t) -> Float[Array, ""]:
        """Squared noise-prediction error of ONE sample, averaged over the coordinates."""
        return jnp.mean(jnp.square(self.apply(params, x, t) - z))


def unit_overlaps(weights: Float[Array, "m d"], frame: Float[Array, "k d"]) -> Float[Array, "m k"]:
    """``|w_i . e_k| / |w_i|`` for every hidden unit ``i`` and direction ``e_k`` (rows of ``frame``)."""
    return jnp.abs(weights @ frame.T) / jnp.linalg.norm(weights, axis=1, keepdims=True)


def best_overlaps(weights: Float[Array, "m d"], frame: Float[Array, "k d"]) -> Float[Array, " k"]:
    """The largest normalised overlap over the hidden units, per direction."""
    return jnp.max(unit_overlaps(weights, frame), axis=0)


def normalized_rows(params: dict, norm) -> dict:
    """``params`` with every row of ``W`` rescaled to length ``norm`` (spherical SGD)."""
    return {**params, "W": norm * params["W"] / jnp.linalg.norm(params["W"], axis=1, keepdims=True)}


class OnlineTraining(NamedTuple):
    """Parameters at ``record_steps`` (leading ``record`` axis) and, per direction, the first step
    at which the best unit's overlap reached the threshold (NaN: never within the run)."""

    params: dict
    first_recovery: Float[Array, " k"]


def train_online(
    denoiser: TiedDenoiser,
    params: dict,
    batch: Callable[[PRNGKeyArray], tuple[Float[Array, "b d"], Float[Array, "b d"]]],
    key: PRNGKeyArray,
    *,
    t,
    learning_rate,
    optimizer: str,
    row_norm,
    spherical: bool,
    steps: int,
    record_steps: Sequence[int],
    frame: Float[Array, "k d"],
    threshold,
) -> OnlineTraining:
    """``steps`` updates on fresh batches ``batch(fold_in(key, step)) -> (x_t, z)`` (see the module
    docstring). With ``spherical`` the rows of ``W`` have length ``row_norm`` from the start."""
    transform = OPTIMIZERS[optimizer](learning_rate=learning_rate)
    project = (lambda p: normalized_rows(p, row_norm)) if spherical else (lambda p: p)
    params = project(params)
    records = np.asarray(record_steps)
    targets = jnp.asarray(np.append(records, -1))  # a sentinel no step equals
    buffer = jax.tree.map(lambda leaf: jnp.zeros((records.size, *leaf.shape), leaf.dtype), params)
    batch_loss = lambda p, x, z: jnp.mean(jax.vmap(denoiser.loss, in_axes=(None, 0, 0, None))(p, x, z, t))

    def step(carry, index):
        params, state, buffer, slot, first = carry
        best = best_overlaps(params["W"], frame)
        first = jnp.where(jnp.isnan(first) & (best >= threshold), index.astype(first.dtype), first)
        hit = index == targets[slot]
        row = jnp.minimum(slot, records.size - 1)
        buffer = jax.tree.map(lambda b, p: b.at[row].set(jnp.where(hit, p, b[row])), buffer, params)
        grads = jax.grad(batch_loss)(params, *batch(jax.random.fold_in(key, index)))
        updates, state = transform.update(grads, state, params)
        return (project(optax.apply_updates(params, updates)), state, buffer, slot + hit.astype(int), first), None

    first = jnp.full(frame.shape[:1], jnp.nan, params["W"].dtype)
    carry = (params, transform.init(params), buffer, 0, first)
    (_, _, buffer, _, first), _ = jax.lax.scan(step, carry, jnp.arange(steps + 1))  # the last update is discarded
    return OnlineTraining(buffer, first)


def langevin_sample(denoiser: TiedDenoiser, params: dict, start: Float[Array, " d"], key: PRNGKeyArray, *, t, step_size, num_steps: int) -> Float[Array, " d"]:
    """ONE sample of the noised law the denoiser has learned at time ``t``: unadjusted Langevin
    ``x <- x + h score(x) + sqrt(2 h) xi`` with the learned score ``-z_hat(x) / sqrt(1 - e^-2t)``,
    ``num_steps`` steps of size ``h`` from ``start``."""
    noise_std = jnp.sqrt(1 - jnp.exp(-2 * t))

    def move(x, step_key):
        score = -denoiser.apply(params, x, t) / noise_std
        return x + step_size * score + jnp.sqrt(2 * step_size) * jax.random.normal(step_key, x.shape, x.dtype), None

    return jax.lax.scan(move, start, jax.random.split(key, num_steps))[0]
