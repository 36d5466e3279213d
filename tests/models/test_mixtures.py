"""Gaussian mixtures: validation, exact noised scores and denoisers, labelled sampling, PF-ODE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics.validation import ConfigError
from diffdyn.models.distributions import mixtures

WEIGHTS = np.array([0.3, 0.7])
MEANS = np.array([[2.0, -1.0, 0.5], [-1.0, 1.5, 0.0]])
COVS = np.array([[[1.0, 0.3, 0.0], [0.3, 2.0, 0.1], [0.0, 0.1, 0.5]], [[0.5, 0.0, 0.0], [0.0, 0.5, -0.2], [0.0, -0.2, 1.5]]])


def full() -> mixtures.GaussianMixture:
    return mixtures.gaussian_mixture(WEIGHTS, MEANS, covariances=COVS)


def hand_score(weights, means, covs, x):
    """sum_c P(c|x) C_c^-1 (mu_c - x), written out with numpy."""
    logs, pulls = [], []
    for w, m, c in zip(weights, means, covs):
        inv = np.linalg.inv(c)
        r = x - m
        logs.append(np.log(w) - 0.5 * r @ inv @ r - 0.5 * np.linalg.slogdet(2 * np.pi * c)[1])
        pulls.append(-inv @ r)
    post = np.exp(np.array(logs) - np.max(logs))
    return (post / post.sum()) @ np.array(pulls)


@pytest.mark.parametrize("sigma", [0.0, 0.4, 3.0])
def test_exact_score_and_denoiser_at_sigma(sigma):
    x = np.array([0.3, -0.2, 1.1])
    expected = hand_score(WEIGHTS, MEANS, COVS + sigma**2 * np.eye(3), x)
    np.testing.assert_allclose(mixtures.sigma_score(full(), jnp.asarray(x), sigma), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mixtures.exact_denoiser(full(), jnp.asarray(x), sigma), x + sigma**2 * expected, rtol=1e-10)


def test_ou_law_is_the_rescaled_sigma_law():
    # x_t = e^-t (x0 + sigma z) with sigma^2 = e^2t - 1, so grad log P_t(x) = e^t grad log p_sigma(e^t x).
    t, x = 0.7, jnp.array([0.3, -0.2, 1.1])
    sigma = np.sqrt(np.expm1(2 * t))
    np.testing.assert_allclose(mixtures.time_score(full(), x, t), np.exp(t) * mixtures.sigma_score(full(), np.exp(t) * x, sigma), rtol=1e-10)
    noised = mixtures.noised_at_time(full(), t)
    np.testing.assert_allclose(noised.means, np.exp(-t) * MEANS)
    np.testing.assert_allclose(noised.covariances, np.exp(-2 * t) * COVS + (1 - np.exp(-2 * t)) * np.eye(3)[None])


def test_isotropic_storage_equals_full_covariances():
    iso = mixtures.gaussian_mixture(WEIGHTS, MEANS, [0.5, 2.0])
    as_full = mixtures.gaussian_mixture(WEIGHTS, MEANS, covariances=np.array([0.5 * np.eye(3), 2.0 * np.eye(3)]))
    x = jnp.array([1.0, 0.2, -0.4])
    for t in (0.0, 0.3):
        np.testing.assert_allclose(mixtures.time_score(iso, x, t), mixtures.time_score(as_full, x, t), rtol=1e-12)
    np.testing.assert_allclose(iso.covariance, as_full.covariance, rtol=1e-12)


def test_labelled_samples_and_training_counts():
    samples, labels = mixtures.sample(jax.random.key(0), full(), 40000)
    assert abs(float(jnp.mean(labels == 1)) - 0.7) < 4 * np.sqrt(0.21 / 40000)
    for c in range(2):
        chosen = np.asarray(samples)[np.asarray(labels) == c]
        np.testing.assert_allclose(chosen.mean(0), MEANS[c], atol=0.05)
        np.testing.assert_allclose(np.cov(chosen.T), COVS[c], atol=0.06)
    np.testing.assert_allclose(np.cov(np.asarray(samples).T), full().covariance, atol=0.1)
    points, labels = mixtures.training_set(jax.random.key(1), full(), (5, 2))
    assert points.shape == (7, 3) and labels.tolist() == [0, 0, 0, 0, 0, 1, 1]


def test_pf_ode_with_the_exact_denoiser_maps_gaussians_exactly():
    # One Gaussian class N(mu, s^2 I): the exact flow is x(sigma) = mu + sqrt((s^2+sigma^2)/(s^2+T^2)) (x_T - mu).
    one = mixtures.gaussian_mixture([1.0], [[1.0, -2.0]], [0.25])
    key = jax.random.key(3)
    samples, status = mixtures.sample_pf_ode(key, one, 4, rtol=1e-8, atol=1e-8)
    assert not status.any()
    x_T, _ = mixtures.sample(key, mixtures.noised_at_sigma(one, 80.0), 4)
    scale = np.sqrt((0.25 + 0.002**2) / (0.25 + 80.0**2))
    np.testing.assert_allclose(samples, np.array([1.0, -2.0]) + scale * (np.asarray(x_T) - np.array([1.0, -2.0])), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_pf_ode_samples_of_a_bimodal_mixture_have_its_class_weights():
    bimodal = mixtures.two_class_mixture(2, 0.8, 2.0)
    samples = mixtures.sample_pf_ode(jax.random.key(4), bimodal, 400, rtol=1e-5, atol=1e-5).value
    share = float(np.mean(np.asarray(samples)[:, 0] > 0))
    assert abs(share - 0.8) < 4 * np.sqrt(0.16 / 400)
    np.testing.assert_allclose(np.abs(np.asarray(samples)[:, 0]).mean(), 2.0 * np.sqrt(2), atol=0.15)


@pytest.mark.parametrize(
    "arguments, field",
    [
        (dict(weights=[0.5, 0.6], means=MEANS, covariances=COVS), "weights"),
        (dict(weights=[-0.1, 1.1], means=MEANS, covariances=COVS), "weights"),
        (dict(weights=WEIGHTS, means=MEANS[:1], covariances=COVS), "means"),
        (dict(weights=WEIGHTS, means=MEANS, covariances=COVS * np.array([1.0, -1.0])[:, None, None]), "covariances[1]"),
        (dict(weights=WEIGHTS, means=MEANS, covariances=COVS[:, :2, :2]), "covariances"),
        (dict(weights=WEIGHTS, means=MEANS, covariances=COVS, counts=(3,)), "counts"),
        (dict(weights=WEIGHTS, means=MEANS, covariances=COVS, counts=(3, 0)), "counts"),
    ],
)
def test_bad_mixtures_name_the_field(arguments, field):
    with pytest.raises(ConfigError) as error:
        mixtures.validate_mixture(**arguments)
    assert str(error.value).startswith(f"{field}:")


def test_bad_variances_name_the_field():
    with pytest.raises(ConfigError, match="^variances:"):
        mixtures.gaussian_mixture(WEIGHTS, MEANS, [1.0, 0.0])
    with pytest.raises(ConfigError, match="^weight:"):
        mixtures.two_class_mixture(4, 1.5)
