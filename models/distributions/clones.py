"""Gaussian clones of a data set, the references of the distributional simplicity bias ([BMG]).

[BMG] (Bardone, Merger, Goldt, arXiv 2603.12901; docs/theory.md section 9) compare a denoiser
trained on natural images on held-out images and on samples of their Gaussian clone: the losses
coincide while the denoiser has learned only the first two cumulants and separate once it uses
higher-order ones. The clones are fitted on the host (numpy, float64) to a TRAINING set of flat
samples ``(n, d)``:

* :func:`gaussian_clone`: ``N(mu, Sigma)`` with the training mean and 1/n-normalised covariance
  (eigendecomposed; rounding-negative eigenvalues clipped at 0): the data's first two cumulants
  and none of the higher ones;
* :func:`mean_only_clone`: ``N(mu, v I)`` with ``v = Tr Sigma / d``, the mean-only clone. Only the
  mean is kept; the single variance is the average pixel variance, chosen so that the total power
  ``E||x||^2 = ||mu||^2 + Tr Sigma`` equals the data's. A denoiser whose loss depends on the data
  only through ``mu`` and ``E||x||^2`` (the untrained EDM denoiser ``c_skip(sigma) x``, any
  ``a x + b`` with scalar ``a``) therefore has the same expected loss on both clones and the data.

The Bayes-optimal denoiser of ``N(mu, Sigma)`` is the Wiener filter
``D(x) = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu)`` with loss
``sigma^2 Tr[Sigma (Sigma + sigma^2 I)^-1]`` (docs/theory.md section 2): :func:`optimal_loss`
gives it PER ELEMENT (divided by ``d``), the loss scale of :mod:`diffdyn.dynamics.denoising`. No
denoiser does better on clone samples.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

from diffdyn.dynamics.theory import linear
from diffdyn.dynamics.validation import ConfigError
from diffdyn.models.distributions.datasets import covariance_eigenbasis
from diffdyn.models.distributions.gaussian import GaussianData


def split(samples: Float[np.ndarray, "n ..."], held_out: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(train, held)``: a random ``held_out`` fraction of ``samples`` (rounded, at least 2 and
    at most ``n - 2`` examples) held out, the rest for training; both keep their original order."""
    count = samples.shape[0]
    held = min(max(round(held_out * count), 2), count - 2)
    if held < 2:
        raise ConfigError(f"held_out: {count} examples cannot give 2 training and 2 held-out ones")
    mask = np.zeros(count, bool)
    mask[rng.permutation(count)[:held]] = True
    return samples[~mask], samples[mask]


def gaussian_clone(train: Float[np.ndarray, "n d"]) -> GaussianData:
    """``N(mu, Sigma)`` of the training samples (mean, 1/n covariance) in its eigenbasis
    (eigenvalues increasing, clipped at 0), in float64."""
    return GaussianData(np.asarray(train, np.float64).mean(axis=0), *covariance_eigenbasis(train, floor=0.0))


def mean_only_clone(train: Float[np.ndarray, "n d"]) -> GaussianData:
    """``N(mu, v I)``, ``v = Tr Sigma / d``: the training mean and total power, no correlations."""
    clone = gaussian_clone(train)
    dim = clone.mean.size
    return GaussianData(clone.mean, np.full(dim, clone.eigenvalues.mean()), np.eye(dim))


def draw(rng: np.random.Generator, clone: GaussianData, num: int) -> Float[np.ndarray, "num d"]:
    """``num`` samples ``mu + U diag(sqrt(lam)) z`` (exact for singular covariances, which the
    pixel covariance of a small image set often is)."""
    white = rng.standard_normal((num, clone.mean.size))
    return clone.mean + (white * np.sqrt(clone.eigenvalues)) @ clone.basis.T


def optimal_loss(clone: GaussianData, sigmas: Float[np.ndarray, " s"]):
    """Per-element loss of the Bayes-optimal (Wiener) denoiser of the clone at each noise level,
    ``(1/d) sum_k sigma^2 lam_k / (lam_k + sigma^2)`` (:func:`diffdyn.dynamics.theory.linear.optimal_loss`
    per mode); traceable in ``sigmas``."""
    return linear.optimal_loss(clone.eigenvalues[None, :], sigmas[:, None]).mean(axis=-1)
