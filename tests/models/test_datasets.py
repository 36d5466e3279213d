"""Training sets by name: shapes, subsets, the covariance eigenbasis, one draw per key."""

import jax
import numpy as np

from diffdyn.models.distributions import datasets, images


def test_covariance_eigenbasis_diagonalises_the_training_covariance():
    examples = np.random.default_rng(0).normal(size=(500, 6)) @ np.diag([3.0, 2.0, 1.0, 0.5, 0.1, 0.0])
    lam, basis = datasets.covariance_eigenbasis(examples, floor=1e-12)
    np.testing.assert_allclose(basis.T @ basis, np.eye(6), atol=1e-12)
    np.testing.assert_allclose(basis @ np.diag(lam) @ basis.T, np.cov(examples.T, bias=True), atol=1e-12)
    assert np.all(np.diff(lam) >= 0) and lam[0] == 1e-12  # the null direction is clipped at the floor


def test_training_sets_are_shaped_for_the_network_and_cached_per_precision():
    with jax.enable_x64(False):
        flat = datasets.training_set("gaussian", 0, 64, image_shaped=False, dim=16, log_std=0.5)
        image = datasets.training_set("gaussian", 0, 64, image_shaped=True, dim=16, log_std=0.5)
        assert datasets.training_set("gaussian", 0, 64, image_shaped=False, dim=16, log_std=0.5) is flat
    assert flat.examples.shape == (64, 16) and flat.examples.dtype == np.float32
    assert image.examples.shape == (64, 4, 4, 1)
    np.testing.assert_array_equal(image.examples.reshape(64, 16), flat.examples)
    digits = datasets.training_set("digits", 0, 100, image_shaped=True)
    assert digits.examples.shape == (100, 8, 8, 1) and digits.lam.shape == (64,)
    everything = images.flatten(images.digits())  # a subset of distinct digits, in the original order
    rows = [int(np.argmin(np.abs(everything - row).sum(axis=1))) for row in digits.examples.reshape(100, 64)]
    assert rows == sorted(set(rows))
