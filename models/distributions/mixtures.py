"""Gaussian mixtures with classes: exact noised densities, scores, denoisers and samples.

``x0 ~ sum_c rho_c N(mu_c, C_c)`` with class weights ``rho_c`` (on the simplex), centroids
``mu_c`` and covariances ``C_c`` (isotropic ``sigma_c^2 I`` or full); a training set draws
``n_c`` points from class ``c`` (the sampling imbalance ``n_c / n`` may differ from ``rho_c``).
docs/theory.md 8 ([N] data model; [BBdBM] = Biroli, Bonnaire, de Bortoli, Mezard, Nat. Commun. 15:9957).

Noise processes (docs/theory.md 1): a Gaussian mixture stays a Gaussian mixture with the same weights,

* EDM sigma time ``x = x0 + sigma z``: means ``mu_c``, covariances ``C_c + sigma^2 I``
  (:func:`noised_at_sigma`);
* OU time ``x_t = e^-t x0 + sqrt(Delta_t) xi``: means ``e^-t mu_c``, covariances
  ``e^-2t C_c + Delta_t I`` (:func:`noised_at_time`).

Densities are numpyro ``MixtureSameFamily(Categorical, MultivariateNormal)``; the exact score is
``jax.grad`` of its ``log_prob`` and the exact (posterior-mean) denoiser is Tweedie's
``D(x, sigma) = x + sigma^2 grad log p_sigma(x)``, which :func:`sample_pf_ode` integrates with
:func:`diffdyn.dynamics.sampling.pf_ode_sample`. Every function acts on ONE point; vmap outside.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from diffdyn.dynamics.sampling import pf_ode_sample
from diffdyn.dynamics.schedules import SIGMA_MAX, SIGMA_MIN, vp_noise_variance, vp_signal_scale
from diffdyn.dynamics.status import Solved
from diffdyn.dynamics.validation import (
    ConfigError,
    require_positive_int,
    require_psd,
    require_range,
)


class GaussianMixture(NamedTuple):
    """Class weights ``rho`` (k,), centroids ``means`` (k, d) and ``covariances``: full (k, d, d)
    or, for isotropic classes ``C_c = sigma_c^2 I``, the variances ``sigma_c^2`` (k,) (an
    ``O(d)`` density instead of ``O(d^2)``). A pytree: every field may be traced."""

    weights: Float[Array, " k"]
    means: Float[Array, "k d"]
    covariances: Float[Array, "k d d"] | Float[Array, " k"]

    @property
    def num_classes(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def isotropic(self) -> bool:
        return self.covariances.ndim == 1

    @property
    def full_covariances(self) -> Float[Array, "k d d"]:
        if not self.isotropic:
            return self.covariances
        return self.covariances[:, None, None] * jnp.eye(self.dim, dtype=self.means.dtype)[None, :, :]

    def distribution(self) -> dist.MixtureSameFamily:
        """The numpyro ``MixtureSameFamily`` of this mixture (``Normal(...).to_event(1)``
        components when isotropic, ``MultivariateNormal`` otherwise)."""
        if self.isotropic:
            scales = jnp.broadcast_to(jnp.sqrt(self.covariances)[:, None], self.means.shape)
            components = dist.Normal(self.means, scales).to_event(1)
        else:
            components = dist.MultivariateNormal(self.means, covariance_matrix=self.covariances)
        return dist.MixtureSameFamily(dist.Categorical(probs=self.weights), components)

    def add_isotropic(self, variance: ArrayLike) -> GaussianMixture:
        """The same mixture with ``variance * I`` added to every class covariance."""
        if self.isotropic:
            return self._replace(covariances=self.covariances + variance)
        eye = jnp.eye(self.dim, dtype=self.covariances.dtype)
        return self._replace(covariances=self.covariances + variance * eye[None, :, :])

    @property
    def covariance(self) -> Float[Array, "d d"]:
        """Total covariance ``sum_c rho_c (C_c + mu_c mu_c^T) - m m^T`` (``m`` the global mean)."""
        mean = self.weights @ self.means
        second = jnp.einsum("c,cij->ij", self.weights, self.full_covariances)
        second = second + jnp.einsum("c,ci,cj->ij", self.weights, self.means, self.means)
        return second - jnp.outer(mean, mean)


def validate_mixture(weights, means, covariances, counts=None) -> None:
    """Host-side checks, each a :class:`ConfigError` naming the field: ``weights`` finite, >= 0,
    summing to 1 (within 1e-8); ``means`` a finite ``(k, d)`` array; ``covariances`` ``k``
    symmetric PSD ``d x d`` matrices; ``counts`` (optional) ``k`` integers >= 1."""
    weights = require_range("weights", weights, low=0.0)
    if weights.ndim != 1 or weights.size < 1 or abs(weights.sum() - 1.0) > 1e-8:
        raise ConfigError(f"weights: must be a vector on the simplex (>= 0, sum 1); got sum {weights.sum():.6g}")
    means = require_range("means", means)
    if means.ndim != 2 or means.shape[0] != weights.size:
        raise ConfigError(f"means: must have shape (num_classes={weights.size}, d); got {means.shape}")
    covariances = np.asarray(covariances, dtype=float)
    if covariances.shape != (weights.size, means.shape[1], means.shape[1]):
        raise ConfigError(f"covariances: must have shape {(weights.size, means.shape[1], means.shape[1])}; got {covariances.shape}")
    for index, cov in enumerate(covariances):
        require_psd(f"covariances[{index}]", cov)
    if counts is not None:
        if len(counts) != weights.size:
            raise ConfigError(f"counts: needs one training count per class ({weights.size}); got {len(counts)}")
        for count in counts:
            require_positive_int("counts", count)


def gaussian_mixture(weights: ArrayLike, means: ArrayLike, variances: ArrayLike | None = None, *, covariances: ArrayLike | None = None) -> GaussianMixture:
    """Validated mixture from class ``weights``, ``means`` (k, d) and either isotropic class
    ``variances`` ``sigma_c^2 > 0`` (k,) (default 1; stored as such) or full ``covariances``
    (k, d, d)."""
    means = np.asarray(means, dtype=float)
    if covariances is None:
        k = np.asarray(weights).size
        variances = np.ones(k) if variances is None else require_range("variances", variances, low=0.0, low_open=True)
        if variances.shape != (k,):
            raise ConfigError(f"variances: needs one variance per class ({k}); got shape {variances.shape}")
        validate_mixture(weights, means, variances[:, None, None] * np.eye(means.shape[-1])[None, :, :])
        stored = variances
    elif variances is not None:
        raise ConfigError("variances: give either variances or covariances, not both")
    else:
        validate_mixture(weights, means, covariances)
        stored = covariances
    return GaussianMixture(jnp.asarray(weights, float), jnp.asarray(means), jnp.asarray(stored, float))


def two_class_mixture(dim: int, weight: ArrayLike = 0.5, centroid_norm: ArrayLike = 1.0, variances: ArrayLike = (1.0, 1.0)) -> GaussianMixture:
    """``omega N(mu, sigma_0^2 I) + (1 - omega) N(-mu, sigma_1^2 I)``, ``omega = weight``, with
    ``mu`` along the first axis and ``|mu|^2 = d mu~^2`` (``mu~ = centroid_norm``). For
    ``omega > 1/2`` class 1 is the minority ([BBdBM] unbalanced classes, docs/theory.md 8)."""
    require_positive_int("dim", dim)
    omega = float(require_range("weight", weight, low=0.0, high=1.0))
    norm = float(require_range("centroid_norm", centroid_norm, low=0.0)) * np.sqrt(dim)
    means = np.zeros((2, dim))
    means[:, 0] = norm, -norm
    return gaussian_mixture([omega, 1.0 - omega], means, variances)


def noised_at_sigma(mixture: GaussianMixture, sigma: ArrayLike) -> GaussianMixture:
    """Law of ``x0 + sigma z`` (EDM): covariances ``C_c + sigma^2 I``."""
    return mixture.add_isotropic(jnp.square(sigma))


def noised_at_time(mixture: GaussianMixture, t: ArrayLike) -> GaussianMixture:
    """Law of ``x_t = e^-t x0 + sqrt(Delta_t) xi`` (OU): means ``e^-t mu_c``, covariances
    ``e^-2t C_c + Delta_t I``."""
    scale = vp_signal_scale(t)
    shrunk = GaussianMixture(mixture.weights, scale * mixture.means, jnp.square(scale) * mixture.covariances)
    return shrunk.add_isotropic(vp_noise_variance(t))


def log_prob(mixture: GaussianMixture, x: Float[Array, " d"]) -> Float[Array, ""]:
    """``log p(x)`` of ONE point (numpyro ``MixtureSameFamily.log_prob``)."""
    return mixture.distribution().log_prob(x)


def score(mixture: GaussianMixture, x: Float[Array, " d"]) -> Float[Array, " d"]:
    """Exact score ``grad_x log p(x)`` of ONE point, by ``jax.grad`` of :func:`log_prob`."""
    return jax.grad(log_prob, argnums=1)(mixture, x)


def sigma_score(mixture: GaussianMixture, x: Float[Array, " d"], sigma: ArrayLike) -> Float[Array, " d"]:
    """Exact score of the EDM-noised law ``p_sigma`` at ONE point."""
    return score(noised_at_sigma(mixture, sigma), x)


def time_score(mixture: GaussianMixture, x: Float[Array, " d"], t: ArrayLike) -> Float[Array, " d"]:
    """Exact score ``grad log P_t(x)`` of the OU-noised law at time ``t``, ONE point."""
    return score(noised_at_time(mixture, t), x)


def exact_denoiser(mixture: GaussianMixture, x: Float[Array, " d"], sigma: ArrayLike) -> Float[Array, " d"]:
    """Posterior mean ``E[x0 | x0 + sigma z = x] = x + sigma^2 grad log p_sigma(x)`` (Tweedie)."""
    return x + jnp.square(sigma) * sigma_score(mixture, x, sigma)


def class_log_posterior(mixture: GaussianMixture, x: Float[Array, " d"]) -> Float[Array, " k"]:
    """``log P(class c | x)`` under ``mixture`` (pass a noised mixture for a noised ``x``)."""
    components = mixture.distribution().component_distribution.log_prob(x[None, :])
    return jax.nn.log_softmax(jnp.log(mixture.weights) + components)


def sample(key: PRNGKeyArray, mixture: GaussianMixture, num: int) -> tuple[Float[Array, "n d"], Int[Array, " n"]]:
    """``num`` iid points and their class labels (labels ~ Categorical(rho))."""
    label_key, point_key = jax.random.split(key)
    labels = jax.random.categorical(label_key, jnp.log(mixture.weights), shape=(num,))
    return sample_classes(point_key, mixture, labels), labels


def sample_classes(key: PRNGKeyArray, mixture: GaussianMixture, labels: Int[Array, " n"]) -> Float[Array, "n d"]:
    """One point from class ``labels[i]`` for each ``i``: ``mu_c + L_c z`` (``C_c = L_c L_c^T``
    by the eigendecomposition, so singular covariances are fine)."""
    z = jax.random.normal(key, (labels.shape[0], mixture.dim), mixture.means.dtype)
    if mixture.isotropic:
        return mixture.means[labels] + jnp.sqrt(mixture.covariances)[labels][:, None] * z
    eigenvalues, vectors = jnp.linalg.eigh(mixture.covariances)
    roots = vectors * jnp.sqrt(jnp.clip(eigenvalues, 0.0))[:, None, :]
    return mixture.means[labels] + jnp.einsum("nij,nj->ni", roots[labels], z)


def training_set(key: PRNGKeyArray, mixture: GaussianMixture, counts: tuple[int, ...]) -> tuple[Float[Array, "n d"], Int[Array, " n"]]:
    """A training set with exactly ``counts[c]`` points of class ``c`` (class-sorted), and labels."""
    if len(counts) != mixture.num_classes:
        raise ConfigError(f"counts: needs one training count per class ({mixture.num_classes}); got {len(counts)}")
    labels = jnp.concatenate([jnp.full((int(n),), c) for c, n in enumerate(counts)])
    return sample_classes(key, mixture, labels), labels


def sample_pf_ode(
    key: PRNGKeyArray,
    mixture: GaussianMixture,
    num: int,
    *,
    sigma_max: float = SIGMA_MAX,
    sigma_min: float = SIGMA_MIN,
    rtol: float = 1e-6,
    atol: float = 1e-6,
) -> Solved:
    """``num`` samples by the probability-flow ODE with the exact denoiser (diffrax, log sigma;
    :func:`diffdyn.dynamics.sampling.pf_ode_sample`), started from the exact noised law at ``sigma_max``
    (the mixture with covariances ``C_c + sigma_max^2 I``), so the only error is the solver's.
    Returns ``Solved(x(sigma_min)[n, d], status[n])``: the data law smoothed by ``sigma_min``."""
    x_T, _ = sample(key, noised_at_sigma(mixture, sigma_max), num)
    denoise = jax.tree_util.Partial(exact_denoiser, mixture)
    solve = lambda x: pf_ode_sample(denoise, x, sigma_max=sigma_max, sigma_min=sigma_min, rtol=rtol, atol=atol)
    return jax.vmap(solve)(x_T)
