"""Learning dynamics of convolutional linear denoisers on 1-D periodic signals [WP sec. 5.2].

Signals have ``N = n_pixels`` pixels with periodic boundaries; ``F`` is the unitary DFT
(``norm="ortho"``), Fourier modes are indexed ``k = 0..N-1`` as in ``jnp.fft``
(docs/theory.md section 4).

- Full-width circular convolution ``W = Circ(w)`` is diagonal in the Fourier basis: the
  one-layer closed forms of :mod:`.linear` hold per Fourier mode with the variance
  ``lam_k -> power[k] = [F cov F^H]_kk`` and the learning rate ``eta -> N eta`` (weight sharing:
  every pixel contributes the same gradient).
- Local patch filter of odd width ``K = 2r + 1 < N``:
  ``D(x)_n = sum_{j=-r..r} w_{j+r} x_{(n+j) mod N}``. Training is ridge regression in patch
  space with ``Sigma_patch = (1/N) sum_n E[P_n(x) P_n(x)^T]``; the generated distribution
  (stationary, diagonal in Fourier space) has no closed form and is computed by quadrature
  in ``ln sigma`` with :func:`.linear.generated_variance_quadrature`.

Conventions (docs/theory.md section 1): EDM sigma-time ``x = x0 + sigma z``; per-noise-level loss
``E ||D(x0 + sigma z) - x0||^2`` summed over all ``N`` pixels, not halved; gradient flow
``dw/dtau = -eta grad L``; training time ``tau`` = learning rate x number of steps.
Functions are jitted; ``n_pixels``, ``kernel_size`` and ``num_nodes`` are static.

[WP] B. Wang, C. Pehlevan, arXiv 2503.03206, sec. 5.2 (convolutional denoisers).
"""

from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Complex, Float

from . import linear
from .linear import QUADRATURE_NODES, SIGMA_MAX, SIGMA_MIN


@jax.jit
def power_spectrum(cov: Float[ArrayLike, "n n"]) -> Float[Array, " n"]:
    """Real diagonal ``[F cov F^H]_kk`` (unitary DFT): variance of each Fourier mode."""
    left = jnp.fft.fft(jnp.asarray(cov), axis=0, norm="ortho")  # F cov
    return jnp.real(jnp.diagonal(jnp.fft.ifft(left, axis=1, norm="ortho")))  # (F cov) F^H


@jax.jit
def stationary_covariance(power: Float[ArrayLike, " n"]) -> Float[Array, "n n"]:
    """Circulant covariance ``F^H diag(power) F``; real when ``power[k] == power[N-k]``."""
    autocovariance = jnp.real(jnp.fft.ifft(jnp.asarray(power)))
    n = autocovariance.shape[0]
    lags = (jnp.arange(n)[:, None] - jnp.arange(n)[None, :]) % n
    return autocovariance[lags]


@partial(jax.jit, static_argnames=("n_pixels",))
def circulant_weights(
    power: Float[ArrayLike, "*b"],
    q: Float[ArrayLike, "*b"],
    tau: Float[ArrayLike, "*b"],
    sigma: Float[ArrayLike, "*b"],
    *,
    n_pixels: int,
    eta: Float[ArrayLike, "*b"] = 1.0,
) -> Float[Array, "*b"]:
    """Fourier response of a full-width circular filter: :func:`.linear.weights` at ``N eta``."""
    return linear.weights(power, q, tau, sigma, eta=n_pixels * jnp.asarray(eta))


@partial(jax.jit, static_argnames=("n_pixels",))
def circulant_generated_variance(
    power: Float[ArrayLike, "*b"],
    q: Float[ArrayLike, "*b"],
    tau: Float[ArrayLike, "*b"],
    *,
    n_pixels: int,
    eta: Float[ArrayLike, "*b"] = 1.0,
    sigma_min: Float[ArrayLike, "*b"] = SIGMA_MIN,
    sigma_max: Float[ArrayLike, "*b"] = SIGMA_MAX,
) -> Float[Array, "*b"]:
    """Generated variance per Fourier mode: :func:`.linear.generated_variance` at ``N eta``."""
    return linear.generated_variance(power, q, tau, eta=n_pixels * jnp.asarray(eta), sigma_min=sigma_min, sigma_max=sigma_max)


@partial(jax.jit, static_argnames=("kernel_size",))
def patch_covariance(cov: Float[ArrayLike, "n n"], kernel_size: int) -> Float[Array, "k k"]:
    """Shift-averaged patch covariance ``(1/N) sum_n E[P_n(x) P_n(x)^T]``, ``K = kernel_size``.

    ``P_n(x)_i = x_{(n+i-r) mod N}``, so ``Sigma_patch[i, j] = c((j - i) mod N)`` with the
    shift-averaged autocovariance ``c(m) = (1/N) sum_n cov[n, (n+m) mod N]``.
    """
    cov = jnp.asarray(cov)
    n = cov.shape[0]
    pixels = jnp.arange(n)
    autocovariance = jnp.mean(cov[pixels[:, None], (pixels[:, None] + pixels[None, :]) % n], axis=0)
    taps = jnp.arange(kernel_size)
    return autocovariance[(taps[None, :] - taps[:, None]) % n]


@jax.jit
def patch_optimal_filter(cov_patch: Float[ArrayLike, "k k"], sigma: Float[ArrayLike, ""]) -> Float[Array, " k"]:
    """Optimal patch filter ``w* = (sigma^2 I + Sigma_patch)^-1 Sigma_patch e_r`` [WP sec. 5.2]."""
    cov_patch = jnp.asarray(cov_patch)
    ridge = cov_patch + sigma**2 * jnp.eye(cov_patch.shape[0])
    return jnp.linalg.solve(ridge, cov_patch[:, cov_patch.shape[0] // 2])


@partial(jax.jit, static_argnames=("n_pixels",))
def patch_weights(
    cov_patch: Float[ArrayLike, "k k"],
    w0: Float[ArrayLike, " k"],
    tau: Float[ArrayLike, "*b"],
    sigma: Float[ArrayLike, "*b"],
    *,
    n_pixels: int,
    eta: Float[ArrayLike, ""] = 1.0,
) -> Float[Array, "*b k"]:
    """Patch filter under gradient flow from ``w0``.

    ``w(tau) = w* + expm(-2 N eta tau (sigma^2 I + Sigma_patch)) (w0 - w*)`` [WP sec. 5.2].

    The loss sums ``N`` identical patch regressions, hence the rate ``2 N eta``; ``tau`` =
    learning rate x steps. ``tau`` and ``sigma`` broadcast together; the taps are the last axis.
    The matrix exponential and ``w*`` use one eigendecomposition of ``Sigma_patch``.
    """
    evals, evecs = jnp.linalg.eigh(jnp.asarray(cov_patch))
    centre = evecs[evecs.shape[0] // 2]  # e_r in the eigenbasis
    start = evecs.T @ jnp.asarray(w0)

    def one(tau, sigma):
        ridge = evals + sigma**2
        optimum = evals / ridge * centre
        return evecs @ (optimum + jnp.exp(-2.0 * n_pixels * eta * tau * ridge) * (start - optimum))

    return jnp.vectorize(one, signature="(),()->(k)")(*jnp.broadcast_arrays(tau, sigma))


@partial(jax.jit, static_argnames=("n_pixels",))
def patch_transfer(w: Float[ArrayLike, "*b k"], n_pixels: int) -> Complex[Array, "*b n"]:
    """Fourier response ``h_k = sum_{j=-r..r} w_{j+r} exp(2 pi i k j / N)`` of a patch filter.

    ``D(x)`` multiplies Fourier mode ``k`` by ``h_k``; ``h_{N-k} = conj(h_k)`` for real ``w``.
    """
    w = jnp.asarray(w)
    radius = w.shape[-1] // 2
    offsets = jnp.arange(-radius, radius + 1)
    phases = jnp.exp(2j * jnp.pi * jnp.arange(n_pixels)[:, None] * offsets[None, :] / n_pixels)
    return jnp.einsum("...j,kj->...k", w, phases)


@partial(jax.jit, static_argnames=("n_pixels", "num_nodes"))
def patch_generated_variance(
    cov_patch: Float[ArrayLike, "k k"],
    q: Float[ArrayLike, "*b"],
    tau: Float[ArrayLike, "*b"],
    *,
    n_pixels: int,
    eta: Float[ArrayLike, ""] = 1.0,
    sigma_min: Float[ArrayLike, ""] = SIGMA_MIN,
    sigma_max: Float[ArrayLike, ""] = SIGMA_MAX,
    num_nodes: int = QUADRATURE_NODES,
) -> Float[Array, "*b n"]:
    """Generated variance of every Fourier mode for the patch model, init ``w0 = q e_r``.

    ``sigma_max^2 exp(2 int_{ln sigma_min}^{ln sigma_max} (Re h_k(e^u, tau) - 1) du)`` by
    Gauss-Legendre quadrature in ``u = ln sigma`` (:func:`.linear.generated_variance_quadrature`;
    the default node count is converged to ~1e-13). ``q`` and ``tau`` broadcast together; the
    Fourier modes ``k = 0..N-1`` are the last axis. ``tau`` = learning rate x steps.
    """
    kernel_size = jnp.shape(cov_patch)[0]
    centre = jnp.eye(kernel_size)[kernel_size // 2]

    def one(q, tau):
        def response(sigma):
            w = patch_weights(cov_patch, q * centre, tau, sigma, n_pixels=n_pixels, eta=eta)
            return jnp.real(patch_transfer(w, n_pixels))

        return linear.generated_variance_quadrature(response, sigma_min=sigma_min, sigma_max=sigma_max, num_nodes=num_nodes)

    return jnp.vectorize(one, signature="(),()->(n)")(*jnp.broadcast_arrays(q, tau))
