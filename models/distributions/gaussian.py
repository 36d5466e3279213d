"""Gaussian data ``x0 ~ N(mu, Sigma)``, ``Sigma = U diag(lambda) U^T``, with chosen spectra.

Spectra: log-spaced (the [WP] figure grid), power law, log-normal (``exp(N(0, s^2))`` normalised
to mean 1, [WP] sec. 6), or any given values. The eigenbasis is the identity, a Haar-random
rotation, or (:func:`stationary_data`) the real Fourier basis of a stationary periodic signal.
Linear denoisers see the data only through ``(mu, Sigma)`` (Gaussian equivalence, [WP] sec. 3);
:func:`empirical_data` gives the statistics of a finite training set instead.

Input checks (:func:`validate_spectrum`, :func:`validate_covariance`) run on the host before any
tracing and raise :class:`diffdyn.dynamics.validation.ConfigError` naming the field.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from diffdyn.dynamics.validation import ConfigError, require_psd, require_range


class GaussianData(NamedTuple):
    """Mean, eigenvalues (per mode) and orthonormal eigenbasis (columns)."""

    mean: Float[Array, " d"]
    eigenvalues: Float[Array, " d"]
    basis: Float[Array, "d d"]

    @property
    def covariance(self) -> Float[Array, "d d"]:
        return (self.basis * self.eigenvalues[None, :]) @ self.basis.T


def validate_spectrum(values: ArrayLike, field: str = "spectrum") -> np.ndarray:
    """Variances must be finite and >= 0."""
    return require_range(field, values, low=0.0)


def validate_covariance(cov: ArrayLike, field: str = "covariance") -> np.ndarray:
    """A covariance must be finite, symmetric and positive semi-definite."""
    return require_psd(field, cov)


def load_covariance(path: str, field: str = "covariance") -> np.ndarray:
    """A positive-definite covariance from a ``.npy`` file, checked on the host: a
    :class:`~diffdyn.dynamics.validation.ConfigError` naming ``field`` if it cannot be read, is not
    symmetric positive semi-definite, or has a zero eigenvalue."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{field}: cannot read {path!r} as a .npy matrix ({error})") from None
    matrix = validate_covariance(loaded, field)
    smallest = float(np.linalg.eigvalsh(matrix).min())
    if smallest <= 0:
        raise ConfigError(f"{field}: must be positive definite; smallest eigenvalue {smallest:.3g}")
    return matrix


def symmetric_log_power(num: int, low: ArrayLike, high: ArrayLike) -> Float[Array, " num"]:
    """Power per DFT frequency of a real stationary signal of ``num`` pixels, log-spaced from
    ``high`` at frequency 0 to ``low`` at the Nyquist frequency (``p_k = p_{num-k}``); traceable
    in ``low`` and ``high``."""
    return jnp.geomspace(high, low, num // 2 + 1)[np.minimum(np.arange(num), num - np.arange(num))]


def log_spaced_spectrum(num: int, lam_min: float, lam_max: float) -> Float[Array, " num"]:
    """``num`` variances log-spaced in ``[lam_min, lam_max]`` (increasing)."""
    validate_spectrum([lam_min, lam_max], "lam_min/lam_max")
    return jnp.geomspace(lam_min, lam_max, num)


def power_law_spectrum(num: int, exponent: float, scale: float = 1.0) -> Float[Array, " num"]:
    """``lambda_k = scale * k^-exponent`` for ``k = 1..num`` (decreasing)."""
    return scale * jnp.arange(1, num + 1, dtype=float) ** (-exponent)


def log_normal_spectrum(key: PRNGKeyArray, num: int, log_std: float = 1.0) -> Float[Array, " num"]:
    """``exp(N(0, log_std^2))`` variances normalised to mean 1 ([WP] sec. 6 Gaussian data)."""
    values = jnp.exp(log_std * jax.random.normal(key, (num,)))
    return values / jnp.mean(values)


def random_rotation(key: PRNGKeyArray, dim: int) -> Float[Array, "d d"]:
    """Haar-random orthogonal matrix (QR of a Gaussian matrix with the sign of ``diag(R)`` fixed)."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (dim, dim)))
    return q * jnp.sign(jnp.diagonal(r))[None, :]


def gaussian_data(eigenvalues: ArrayLike, basis: ArrayLike | None = None, mean: ArrayLike | None = None) -> GaussianData:
    """Validated :class:`GaussianData`; ``basis`` defaults to the identity, ``mean`` to zero."""
    values = jnp.asarray(validate_spectrum(eigenvalues))
    dim = values.shape[0]
    basis = jnp.eye(dim) if basis is None else jnp.asarray(basis)
    mean = jnp.zeros(dim) if mean is None else jnp.asarray(mean, dtype=values.dtype)
    if basis.shape != (dim, dim) or mean.shape != (dim,):
        raise ConfigError(f"basis/mean: shapes must be ({dim}, {dim}) and ({dim},); got {basis.shape} and {mean.shape}")
    return GaussianData(mean, values, basis)


def from_covariance(cov: ArrayLike, mean: ArrayLike | None = None) -> GaussianData:
    """:class:`GaussianData` from a validated PSD covariance (eigendecomposition, increasing)."""
    eigenvalues, basis = jnp.linalg.eigh(jnp.asarray(validate_covariance(cov)))
    return gaussian_data(jnp.clip(eigenvalues, 0.0), basis, mean)


def fourier_frequencies(n: int) -> np.ndarray:
    """DFT frequency of each column of :func:`real_fourier_basis`: ``0, 1, 1, 2, 2, ...``."""
    return (np.arange(n) + 1) // 2


def real_fourier_basis(n: int) -> Float[Array, "n n"]:
    """Real orthonormal Fourier basis of periodic signals of ``n`` pixels.

    Column 0 is the constant; columns ``2k - 1`` and ``2k`` are ``sqrt(2/n) cos(2 pi k m / n)``
    and ``sqrt(2/n) sin(2 pi k m / n)``; for even ``n`` the last column is the Nyquist
    ``(-1)^m / sqrt(n)``. It diagonalises every circulant matrix (cos/sin pairs share a variance).
    """
    pixels = np.arange(n)[:, None]
    frequency = fourier_frequencies(n)[None, :]
    is_sine = (np.arange(n) % 2 == 0)[None, :] & (frequency > 0)
    angle = 2 * np.pi * frequency * pixels / n
    columns = np.where(is_sine, np.sin(angle), np.cos(angle))
    norms = np.linalg.norm(columns, axis=0)
    return jnp.asarray(columns / norms[None, :])


def stationary_data(power: ArrayLike) -> GaussianData:
    """Stationary periodic Gaussian signal with power spectrum ``power`` (per DFT frequency).

    A real signal needs ``power[k] == power[N - k]``; the covariance is circulant,
    ``F^H diag(power) F`` with the unitary DFT ``F``. The eigenbasis is the
    :func:`real_fourier_basis`, so ``eigenvalues[j] = power[fourier_frequencies(N)[j]]``.
    """
    values = validate_spectrum(power, "power")
    if not np.allclose(values, np.roll(values[::-1], 1)):
        raise ConfigError("power: a real stationary signal needs power[k] == power[N-k]")
    n = values.shape[0]
    return gaussian_data(values[fourier_frequencies(n)], real_fourier_basis(n))


def sample(key: PRNGKeyArray, data: GaussianData, num: int) -> Float[Array, "num d"]:
    """``num`` samples of ``N(mean, covariance)``."""
    scale = jnp.linalg.cholesky(data.covariance + 1e-12 * jnp.eye(data.mean.shape[0]))
    return data.mean[None, :] + jax.random.normal(key, (num, data.mean.shape[0])) @ scale.T


def empirical_data(samples: Float[Array, "n d"]) -> tuple[Float[Array, " d"], Float[Array, "d d"]]:
    """Mean and (1/n-normalised) covariance of a training set: the statistics that the exact
    population loss of a linear denoiser trained on these samples depends on."""
    mean = jnp.mean(samples, axis=0)
    centred = samples - mean[None, :]
    return mean, centred.T @ centred / samples.shape[0]
