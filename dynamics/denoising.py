"""Denoising losses at fixed noise draws over training, and when two loss curves separate.

The measures of the distributional simplicity bias ([BMG] = Bardone, Merger, Goldt, arXiv
2603.12901; docs/theory.md section 9): a denoiser's loss on several evaluation sets (held-out
data, samples of its Gaussian clones) at every recorded checkpoint and several noise levels, and
the first checkpoint from which the loss on one set stays apart from another's.

Loss convention: PER ELEMENT and un-weighted, ``L(sigma) = (1/d) E ||D(x0 + sigma z, sigma) - x0||^2``
(the summed loss of docs/theory.md section 1 divided by the ``d`` elements of a sample; not the
EDM weighting ``lambda(sigma)`` of training). The expectation is a Monte Carlo mean over the
evaluation samples ``x0`` with FIXED noise draws ``z``: the same draws at every checkpoint and
for every evaluation set (common random numbers), so curves differ only through the denoiser and
the clean samples. Each mean comes with its standard error over the samples.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree

ParamDenoiser = Callable[[PyTree, Float[Array, "*shape"], Float[Array, ""]], Float[Array, "*shape"]]


def sample_loss(
    denoise: ParamDenoiser, params: PyTree, clean: Float[Array, "*shape"], noise: Float[Array, "*shape"], sigma: Float[Array, ""]
) -> Float[Array, ""]:
    """``mean((D(x0 + sigma z, sigma) - x0)^2)`` of ONE sample ``x0`` with ONE noise draw ``z``."""
    return jnp.mean(jnp.square(denoise(params, clean + sigma * noise, sigma) - clean))


def loss_curves(
    denoise: ParamDenoiser,
    checkpoints: PyTree,
    sets: Float[Array, "k n *shape"],
    noise: Float[Array, "s n *shape"],
    sigmas: Float[Array, " s"],
) -> tuple[Float[Array, "k record s"], Float[Array, "k record s"]]:
    """Mean loss and its standard error (sample std / sqrt(n)) on each of the ``k`` evaluation
    ``sets`` at every checkpoint (``checkpoints``: parameters with a leading record axis) and
    noise level; sample ``i`` of every set sees the noise draw ``noise[level, i]``. Checkpoints
    run one after another (``lax.map``: memory of one checkpoint's evaluation)."""

    def per_sample(params, clean, draws, sigma):
        return jax.vmap(lambda x0, z: sample_loss(denoise, params, x0, z, sigma))(clean, draws)

    def at_checkpoint(params):
        over_sigmas = jax.vmap(per_sample, in_axes=(None, None, 0, 0))
        losses = jax.vmap(over_sigmas, in_axes=(None, 0, None, None))(params, sets, noise, sigmas)  # (k, s, n)
        error = jnp.std(losses, axis=-1, ddof=1) / jnp.sqrt(losses.shape[-1])
        return jnp.mean(losses, axis=-1), error

    mean, error = jax.lax.map(at_checkpoint, checkpoints)  # (record, k, s)
    return jnp.swapaxes(mean, 0, 1), jnp.swapaxes(error, 0, 1)


def relative_gap(
    loss: Float[Array, "*b"], error: Float[Array, "*b"], reference: Float[Array, "*b"], reference_error: Float[Array, "*b"]
) -> tuple[Float[Array, "*b"], Float[Array, "*b"]]:
    """``(loss - reference) / reference`` (negative where ``loss`` is the lower one) and its
    standard error to first order from the standard errors of the two means, taken as independent
    (an overestimate when they share noise draws)."""
    gap = (loss - reference) / reference
    return gap, jnp.hypot(error, loss / reference * reference_error) / reference


def separation_step(steps: Int[Array, " record"], apart: Bool[Array, " record"]) -> Float[Array, ""]:
    """First recorded step from which ``apart`` holds at EVERY later record (the start of the
    final run of records apart); NaN if the last record is not apart (never separated, or came
    back together)."""
    lasting = jnp.flip(jnp.cumprod(jnp.flip(apart)).astype(bool))
    return jnp.where(lasting[-1], steps[jnp.argmax(lasting)].astype(float), jnp.nan)
