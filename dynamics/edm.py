"""The EDM training recipe for nonlinear denoisers (Karras et al. 2022; [WP] sec. 6, app. I).

docs/theory.md section 6. A raw network ``F(params, x_in, c_noise)`` (ONE sample, any shape)
becomes the denoiser

    ``D(params, x, sigma) = c_skip(sigma) x + c_out(sigma) F(params, c_in(sigma) x, c_noise(sigma))``

with ``c_skip = sd^2 / (s^2 + sd^2)``, ``c_out = s sd / sqrt(s^2 + sd^2)``,
``c_in = 1 / sqrt(s^2 + sd^2)``, ``c_noise = ln(s) / 4`` (``s = sigma``, ``sd = sigma_data = 0.5``;
EDM table 1). Training noise levels are log-normal, ``ln sigma ~ N(P_mean, P_std^2)`` with
``P_mean = -1.2``, ``P_std = 1.2``, and each example's squared error is weighted by
``lambda(sigma) = (s^2 + sd^2) / (s sd)^2 = 1 / c_out^2`` (so the effective target of ``F`` has
unit weight at every sigma).

Loss convention (differs from the linear studies, docs/theory.md section 1): the squared error is
AVERAGED over the elements of a sample and over the minibatch, weighted by ``lambda(sigma)``;
minibatches are drawn with replacement from a fixed training array, with fresh noise and fresh
sigmas at every step.
:func:`make_loss` returns ``loss(params, key, hparams)``, the signature of
:func:`diffdyn.dynamics.training.make_train`, so several seeds / learning rates train at once under
``jax.vmap`` with parameter checkpoints recorded inside the compiled loop. Training time for
these runs is counted in optimizer steps (Adam, ``optimizer="adam"``); the linear theory's
``tau = learning rate x steps`` is a convention for laying it beside them, not an identity.

Sampling (:func:`generate`): ONE sample of a trained ``D(params, x, sigma)`` from ``x_T`` at
``sigma_max``, by EDM's deterministic Heun sampler on the Karras grid (Alg. 1, ``S_churn = 0``) or
by the adaptive diffrax probability-flow ODE (:func:`diffdyn.dynamics.sampling.pf_ode_sample`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from diffdyn.dynamics.sampling import heun_sample, pf_ode_sample
from diffdyn.dynamics.schedules import SIGMA_MAX, SIGMA_MIN, karras_sigmas
from diffdyn.dynamics.status import OK, Solved

SIGMA_DATA = 0.5
P_MEAN = -1.2
P_STD = 1.2

Network = Callable[[PyTree, Float[Array, "*shape"], Float[Array, ""]], Float[Array, "*shape"]]
ParamDenoiser = Callable[[PyTree, Float[Array, "*shape"], Float[Array, ""]], Float[Array, "*shape"]]


class Preconditioning(NamedTuple):
    """EDM coefficients at one noise level (Karras et al. 2022, table 1)."""

    c_skip: Float[Array, ""]
    c_out: Float[Array, ""]
    c_in: Float[Array, ""]
    c_noise: Float[Array, ""]


def preconditioning(sigma: Float[Array, ""], sigma_data: float = SIGMA_DATA) -> Preconditioning:
    """``(c_skip, c_out, c_in, c_noise)`` at noise level ``sigma`` (docs/theory.md section 6)."""
    sigma = jnp.asarray(sigma)
    total = jnp.square(sigma) + sigma_data**2
    return Preconditioning(
        c_skip=sigma_data**2 / total,
        c_out=sigma * sigma_data / jnp.sqrt(total),
        c_in=1.0 / jnp.sqrt(total),
        c_noise=jnp.log(sigma) / 4.0,
    )


def loss_weight(sigma: Float[Array, ""], sigma_data: float = SIGMA_DATA) -> Float[Array, ""]:
    """EDM weighting ``lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 = 1 / c_out^2``."""
    sigma = jnp.asarray(sigma)
    return (jnp.square(sigma) + sigma_data**2) / jnp.square(sigma * sigma_data)


def precondition(network: Network, sigma_data: float = SIGMA_DATA) -> ParamDenoiser:
    """Wrap a raw network ``F(params, x_in, c_noise)`` into ``D(params, x, sigma)`` (ONE sample).

    ``D = c_skip x + c_out F(c_in x, c_noise)``; with ``F = 0`` it is the optimal denoiser of
    isotropic data of variance ``sigma_data^2``.
    """

    def denoise(params: PyTree, x: Float[Array, "*shape"], sigma: Float[Array, ""]) -> Float[Array, "*shape"]:
        c = preconditioning(sigma, sigma_data)
        return c.c_skip * x + c.c_out * network(params, c.c_in * x, c.c_noise)

    return denoise


def training_sigma(key: PRNGKeyArray, p_mean: float = P_MEAN, p_std: float = P_STD) -> Float[Array, ""]:
    """One training noise level, ``sigma = exp(p_mean + p_std n)``, ``n ~ N(0, 1)`` (EDM sec. 5)."""
    return jnp.exp(p_mean + p_std * jax.random.normal(key))


def sample_loss(
    denoise: ParamDenoiser,
    params: PyTree,
    x0: Float[Array, "*shape"],
    key: PRNGKeyArray,
    *,
    sigma_data: float = SIGMA_DATA,
    p_mean: float = P_MEAN,
    p_std: float = P_STD,
) -> Float[Array, ""]:
    """EDM loss of ONE example: ``lambda(sigma) mean((D(x0 + sigma z, sigma) - x0)^2)`` with a
    log-normal ``sigma`` and ``z ~ N(0, I)`` drawn from ``key`` (mean over the elements)."""
    sigma_key, noise_key = jax.random.split(key)
    sigma = training_sigma(sigma_key, p_mean, p_std).astype(x0.dtype)
    noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
    error = denoise(params, x0 + sigma * noise, sigma) - x0
    return loss_weight(sigma, sigma_data) * jnp.mean(jnp.square(error))


def minibatch_loss(
    denoise: ParamDenoiser,
    params: PyTree,
    data: Float[Array, "n *shape"],  # noqa: F821 (jaxtyping variadic dims)
    key: PRNGKeyArray,
    batch_size: int,
    *,
    sigma_data: float = SIGMA_DATA,
    p_mean: float = P_MEAN,
    p_std: float = P_STD,
) -> Float[Array, ""]:
    """Mean of :func:`sample_loss` over ``batch_size`` examples drawn WITH replacement from
    ``data`` (leading axis: examples), each with its own sigma and noise."""
    index_key, example_key = jax.random.split(key)
    indices = jax.random.randint(index_key, (batch_size,), 0, data.shape[0])
    keys = jax.random.split(example_key, batch_size)
    one = lambda x0, k: sample_loss(denoise, params, x0, k, sigma_data=sigma_data, p_mean=p_mean, p_std=p_std)
    return jnp.mean(jax.vmap(one)(data[indices], keys))


def make_loss(
    denoise: ParamDenoiser,
    data: Float[Array, "n *shape"],  # noqa: F821 (jaxtyping variadic dims)
    batch_size: int,
    *,
    sigma_data: float = SIGMA_DATA,
    p_mean: float = P_MEAN,
    p_std: float = P_STD,
) -> Callable[[PyTree, PRNGKeyArray, PyTree], Float[Array, ""]]:
    """``loss(params, key, hparams)`` for :func:`diffdyn.dynamics.training.make_train`: the EDM
    :func:`minibatch_loss` on the training array ``data`` (closed over, a constant of the
    compiled program). ``hparams`` is not read here (the learning rate lives there)."""

    def loss(params: PyTree, key: PRNGKeyArray, hparams: PyTree) -> Float[Array, ""]:
        del hparams
        return minibatch_loss(denoise, params, data, key, batch_size, sigma_data=sigma_data, p_mean=p_mean, p_std=p_std)

    return loss


def generate(
    denoise: ParamDenoiser,
    params: PyTree,
    x_T: Float[Array, "*shape"],
    *,
    heun_steps: int | None = 20,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rtol: float = 1e-4,
    max_steps: int = 4096,
) -> Solved:
    """ONE sample of the denoiser ``denoise(params, x, sigma)`` from ``x_T`` (the state at
    ``sigma_max``, e.g. ``sigma_max z``): Heun on the Karras grid of ``heun_steps`` levels from
    ``sigma_max`` to ``sigma_min`` and a final Euler step to 0 (:func:`diffdyn.dynamics.sampling.heun_sample`,
    ``2 heun_steps - 1`` denoiser calls; status always ok), or, with ``heun_steps=None``, the
    adaptive diffrax PF-ODE down to ``sigma_min`` (``rtol = atol``, at most ``max_steps`` steps;
    its status says whether it got there). Returns ``Solved(sample, status)``."""
    sample_denoise = lambda x, sigma: denoise(params, x, sigma)
    if heun_steps is None:
        return pf_ode_sample(sample_denoise, x_T, sigma_max=sigma_max, sigma_min=sigma_min, rtol=rtol, atol=rtol, max_steps=max_steps)
    sigmas = karras_sigmas(heun_steps, sigma_min, sigma_max).astype(x_T.dtype)
    return Solved(heun_sample(sample_denoise, x_T, sigmas), jnp.int32(OK))
