"""Training sets by name, as host arrays, and their covariance eigenbasis ([WP] sec. 6, docs/theory.md section 6).

* ``gaussian``: ``num`` samples of ``N(0, U diag(lam) U^T)`` in ``dim`` dimensions, ``lam``
  log-normal ``exp(N(0, log_std^2))`` normalised to mean 1, ``U`` Haar-random ([WP] sec. 6
  Gaussian data); shape ``(num, dim)``;
* ``digits``, ``faces``, ``patches`` (bundled with scikit-learn / scikit-image), ``mnist``,
  ``fashion-mnist``, ``cifar10`` (read from ``data_path``): images ``(n, height, width,
  channels)`` in [-1, 1] (:mod:`diffdyn.models.distributions.images`); ``patches`` draws ``num`` of them,
  the others keep a fixed random subset of ``num`` (0: all).

:func:`training_set` adds the covariance eigenbasis and the shape a network takes (flat, or
images: a flat set of ``side^2`` features becomes ``side x side x 1``), and caches the result.
Every draw comes from one key; jax's random draws follow its default float dtype, so the same
key gives the same set only at the same precision.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from diffdyn.models.distributions import images
from diffdyn.models.distributions.gaussian import (
    GaussianData,
    log_normal_spectrum,
    random_rotation,
    sample,
)

DATASETS = ("gaussian", "digits", "faces", "patches", "mnist", "fashion-mnist", "cifar10")
PATH_DATASETS = ("mnist", "fashion-mnist", "cifar10")  # read from a local directory


def load(
    name: str, key: PRNGKeyArray, num: int, *, dim: int = 32, log_std: float = 1.0, data_path: str = "", face_size: int = 16, patch_size: int = 8
) -> np.ndarray:
    """The training set ``name`` (see the module docstring) drawn with ``key``, as a numpy array.
    Eager (host) code: inside a function being traced, call it under
    ``jax.ensure_compile_time_eval()``."""
    if name == "gaussian":
        spectrum_key, rotation_key, sample_key = jax.random.split(key, 3)
        population = GaussianData(jnp.zeros(dim), log_normal_spectrum(spectrum_key, dim, log_std), random_rotation(rotation_key, dim))
        return np.asarray(sample(sample_key, population, num))
    if name == "patches":
        return images.patches(key, num, patch_size)
    loaded = {
        "digits": images.digits,
        "faces": lambda: images.faces(face_size),
        "mnist": lambda: images.mnist(data_path),
        "fashion-mnist": lambda: images.fashion_mnist(data_path),
        "cifar10": lambda: images.cifar10(data_path),
    }[name]()
    if num and num < loaded.shape[0]:
        loaded = loaded[np.sort(np.asarray(jax.random.permutation(key, loaded.shape[0])[:num]))]
    return loaded


def covariance_eigenbasis(examples: np.ndarray, floor: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (increasing, clipped at ``floor``: rank-deficient image sets) and eigenvectors
    (columns) of the 1/n-normalised covariance of the flattened ``examples``, in float64."""
    flat = examples.reshape(examples.shape[0], -1).astype(np.float64)
    centred = flat - flat.mean(axis=0)
    lam, basis = np.linalg.eigh(centred.T @ centred / flat.shape[0])
    return np.maximum(lam, floor), basis


class TrainingSet(NamedTuple):
    """Training examples ``(n, *shape)`` (float32) and the eigenvalues (increasing, clipped) and
    eigenvectors (columns) of their covariance (float64)."""

    examples: np.ndarray
    lam: np.ndarray
    basis: np.ndarray


def training_set(name: str, seed: int, num: int, *, image_shaped: bool, floor: float = 1e-12, **options) -> TrainingSet:
    """The set ``name`` drawn with ``fold_in(key(seed), 1)`` (:func:`load` with ``options``), as
    float32 flat vectors or images, with its :func:`covariance_eigenbasis`. Host arrays, also
    when called while a jax function is being traced (e.g. from a study's ``point``); cached per
    jax default float dtype, which the draws follow."""
    precision = jax.dtypes.canonicalize_dtype(np.float64).name
    return _training_set(name, seed, num, image_shaped, floor, precision, tuple(sorted(options.items())))


@lru_cache(maxsize=8)
def _training_set(name, seed, num, image_shaped, floor, precision, options) -> TrainingSet:
    with jax.ensure_compile_time_eval():
        raw = load(name, jax.random.fold_in(jax.random.key(seed), 1), num, **dict(options)).astype(np.float32)
    lam, basis = covariance_eigenbasis(raw, floor)
    side = math.isqrt(lam.size)
    flat = raw.reshape(raw.shape[0], -1)
    examples = (raw if raw.ndim == 4 else flat.reshape(-1, side, side, 1)) if image_shaped else flat
    return TrainingSet(examples, lam, basis)
