"""Samplers of the mixed cumulant model (MCM) of [BMG] and of its Gaussian clones, and OU noising.

Our implementation of the model in the authors' released code (Bardone, Merger & Goldt, arXiv
2603.12901), plus the classic whitened MCM; the law, its moments and the theory are in
:mod:`diffdyn.dynamics.theory.cumulants` (docs/theory.md section 9). One sample per function (vmap
outside); the spike directions are the rows ``(m, u, v)`` of an orthonormal ``frame``:

    x0 = mu m + sqrt(beta_u) lambda u + alpha nu v + G,   G ~ N(0, I - gamma_u u u^T - alpha^2 v v^T)

The Gaussian part is drawn as ``z`` with its ``u`` and ``v`` coordinates scaled by
``sqrt(1 - gamma_u)`` and ``sqrt(1 - alpha^2)``; for the whitened variant that is ``S z`` with
``S = I - beta_v / (1 + beta_v + sqrt(1 + beta_v)) v v^T``, and ``alpha nu v = S sqrt(beta_v) nu v``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from diffdyn.dynamics.theory.cumulants import MixedCumulantModel, coupled_latent, latent_atoms, mean_clone_variance, spike_covariance


def spike_frame(key: PRNGKeyArray, dim: int, random: bool = True) -> Float[Array, "3 d"]:
    """Orthonormal spike directions ``(mean, covariance, cumulant)`` as rows: Haar-random (QR of
    a Gaussian ``d x 3`` matrix), or the coordinate axes ``e_2, e_1, e_0`` of the authors' code."""
    if not random:
        return jnp.eye(dim)[jnp.array([2, 1, 0])]
    q, r = jnp.linalg.qr(jax.random.normal(key, (dim, 3)))
    return (q * jnp.sign(jnp.diagonal(r))[None, :]).T


def sample_latent(key: PRNGKeyArray, latent: str, parameter) -> Float[Array, ""]:
    """One unit-variance draw of the latent law (``student_t``: ``t_df`` times ``sqrt((df - 2) / df)``;
    the discrete laws by inverting their CDF)."""
    if latent == "student_t":
        return jax.random.t(key, parameter) * jnp.sqrt((parameter - 2) / parameter)
    values, probabilities = latent_atoms(latent, parameter)
    index = jnp.searchsorted(jnp.cumsum(probabilities)[:-1], jax.random.uniform(key), side="right")
    return values[index]


def sample_mcm(key: PRNGKeyArray, model: MixedCumulantModel, frame: Float[Array, "3 d"]) -> Float[Array, " d"]:
    """One clean MCM sample ``x0`` (see the module docstring)."""
    gaussian_key, lambda_key, latent_key = jax.random.split(key, 3)
    z = jax.random.normal(gaussian_key, frame.shape[1:])
    lam = jax.random.normal(lambda_key)
    nu = coupled_latent(model.coupling, lam, sample_latent(latent_key, model.latent, model.latent_parameter))
    alpha = model.cumulant_scale
    coordinates = frame @ z  # the Gaussian's (m, u, v) coordinates
    kept = jnp.stack([1.0, jnp.sqrt(1.0 - model.gaussian_removed_along_u), jnp.sqrt(1 - jnp.square(alpha))])
    latents = jnp.stack([model.mu, jnp.sqrt(model.beta_u) * lam, alpha * nu])
    return z + frame.T @ ((kept - 1) * coordinates + latents)


def sample_clone(key: PRNGKeyArray, model: MixedCumulantModel, frame: Float[Array, "3 d"], law: str) -> Float[Array, " d"]:
    """One sample of a Gaussian clone of the MCM: ``mean_clone`` ``N(mu m, (tr Cov / d) I)`` (the
    authors' mean-only clone) or ``covariance_clone`` ``N(mu m, Cov)`` (mean and covariance,
    including the ``u``-``v`` covariance of correlated latents)."""
    z = jax.random.normal(key, frame.shape[1:])
    mean = model.mu * frame[0]
    if law == "mean_clone":
        return mean + jnp.sqrt(mean_clone_variance(model, frame.shape[1])) * z
    factor = jnp.linalg.cholesky(spike_covariance(model)) - jnp.eye(3)
    return mean + z + frame.T @ (factor @ (frame @ z))


def sample_law(key: PRNGKeyArray, model: MixedCumulantModel, frame: Float[Array, "3 d"], law: str) -> Float[Array, " d"]:
    """One clean sample of ``law``: ``mcm``, ``mean_clone`` or ``covariance_clone``."""
    return sample_mcm(key, model, frame) if law == "mcm" else sample_clone(key, model, frame, law)


def noised(key: PRNGKeyArray, clean: Float[Array, " d"], t) -> tuple[Float[Array, " d"], Float[Array, " d"]]:
    """The OU state at time ``t`` and its noise: ``x_t = e^-t x0 + sqrt(1 - e^-2t) z``, ``z``."""
    z = jax.random.normal(key, clean.shape, clean.dtype)
    return jnp.exp(-t) * clean + jnp.sqrt(1 - jnp.exp(-2 * t)) * z, z
