"""Gaussian clones of the digits: their moments, exact draws of a singular covariance, the
train/held-out split, and the Wiener loss that a linear denoiser reaches on clone AND data."""

import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics import denoising
from diffdyn.models.distributions import clones, images


@pytest.fixture(scope="module")
def digits():
    """The flat digits split 80/20 (64 pixels; 3 of them are -1 in every image)."""
    return clones.split(images.flatten(images.digits()), 0.2, np.random.default_rng(0))


def test_split_is_a_partition_of_the_examples(digits):
    train, held = digits
    assert (train.shape, held.shape) == ((1438, 64), (359, 64))
    everything = images.flatten(images.digits())
    rows = lambda array: {row.tobytes() for row in array}
    assert rows(train) | rows(held) == rows(everything)
    again = clones.split(everything, 0.2, np.random.default_rng(0))
    np.testing.assert_array_equal(again[1], held)
    assert clones.split(everything[:5], 0.01, np.random.default_rng(0))[1].shape[0] == 2  # at least 2 held out


def test_gaussian_clone_has_the_training_mean_and_covariance(digits):
    train, _ = digits
    clone = clones.gaussian_clone(train)
    np.testing.assert_allclose(clone.mean, train.mean(0), rtol=1e-12)
    np.testing.assert_allclose(clone.covariance, np.cov(train.T, bias=True), atol=1e-12)
    assert clone.eigenvalues.min() == 0.0 and np.sum(clone.eigenvalues < 1e-12) == 3  # the constant pixels


def test_mean_only_clone_keeps_the_mean_and_the_total_power(digits):
    train, _ = digits
    clone = clones.mean_only_clone(train)
    np.testing.assert_allclose(clone.covariance, np.trace(np.cov(train.T, bias=True)) / 64 * np.eye(64), atol=1e-12)
    np.testing.assert_allclose(np.sum(clone.mean**2) + np.trace(clone.covariance), np.mean(np.sum(train**2, axis=1)), rtol=1e-12)


def test_draws_have_the_clone_moments_and_stay_in_its_support(digits):
    clone = clones.gaussian_clone(digits[0])
    samples = clones.draw(np.random.default_rng(1), clone, 40_000)
    standard_error = np.sqrt(np.diagonal(clone.covariance) / 40_000)
    assert np.all(np.abs(samples.mean(0) - clone.mean) <= 5 * standard_error + 1e-12)
    # covariance entries: Monte Carlo error sqrt((S_ii S_jj + S_ij^2) / n)
    cov = clone.covariance
    entry_error = np.sqrt((np.outer(np.diagonal(cov), np.diagonal(cov)) + cov**2) / 40_000)
    assert np.max(np.abs(np.cov(samples.T) - cov) / (entry_error + 1e-15)) < 5.5
    null = clone.basis[:, clone.eigenvalues < 1e-12]
    np.testing.assert_allclose((samples - clone.mean) @ null, 0.0, atol=1e-12)  # the constant pixels stay constant


def test_wiener_denoiser_reaches_the_optimal_loss_on_the_clone_and_on_held_out_data(digits):
    """A linear denoiser sees the data only through its mean and covariance: the Wiener filter
    of the training split has the clone's optimal loss on clone samples (Monte Carlo) and on
    held-out images (up to the held-out set's own sampling of those moments)."""
    train, held = digits
    clone = clones.gaussian_clone(train)
    sigmas = np.array([0.03, 0.3, 3.0])
    rng = np.random.default_rng(2)
    sets = np.stack([held, clones.draw(rng, clone, held.shape[0])])
    noise = rng.standard_normal((3, *held.shape))

    def wiener(_, x, sigma):
        gain = clone.covariance @ jnp.linalg.inv(clone.covariance + sigma**2 * jnp.eye(64))
        return clone.mean + gain @ (x - clone.mean)

    loss, error = denoising.loss_curves(wiener, jnp.zeros(1), jnp.asarray(sets), jnp.asarray(noise), jnp.asarray(sigmas))
    optimal = clones.optimal_loss(clone, sigmas)
    np.testing.assert_allclose(
        optimal,
        sigmas**2 * np.trace(clone.covariance @ np.linalg.inv(clone.covariance + sigmas[:, None, None] ** 2 * np.eye(64)), axis1=1, axis2=2) / 64,
        rtol=1e-12,
    )
    deviation = (loss[:, 0] - optimal[None, :]) / error[:, 0]
    assert np.all(np.abs(deviation) < 4), deviation
    assert np.all(np.asarray(optimal) < sigmas**2) and np.all(np.asarray(optimal) < np.trace(clone.covariance) / 64)
