"""Time-indexed random-features generator (docs/theory.md sections 7-8, [BUBM] sec. 2): the OU-time sampler
against the exact Gaussian-mixture flow, the biased features, and the memorization fraction of
generated samples against the training time tau."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics import measures
from diffdyn.dynamics.sampling import vp_gaussian_start, vp_heun_sample, vp_score_denoiser
from diffdyn.dynamics.schedules import sigma_from_vp_time, vp_noise_variance
from diffdyn.models.denoisers import random_features as rf
from diffdyn.models.distributions import mixtures

T_MIN, T_MAX = 0.01, 3.0


def test_vp_score_denoiser_is_the_exact_mixture_denoiser():
    """OU score -> sigma-time Tweedie denoiser: x = e^t x_t, sigma^2 = e^2t - 1."""
    mixture = mixtures.two_class_mixture(3, 0.7, 1.0, (1.0, 4.0))
    denoise = vp_score_denoiser(jax.tree_util.Partial(mixtures.time_score, mixture))
    x = jnp.array([0.3, -1.2, 2.0])
    sigmas = jnp.array([0.05, 1.0, 7.0])
    exact = jax.vmap(lambda sigma: mixtures.exact_denoiser(mixture, x, sigma))(sigmas)
    np.testing.assert_allclose(jax.vmap(lambda sigma: denoise(x, sigma))(sigmas), exact, rtol=1e-11, atol=1e-12)


def test_vp_heun_sampler_converges_to_the_exact_gaussian_flow():
    """One class N(mu, s^2 I): from x(sigma_max) = e^t_max x_start the exact flow is
    x(sigma) = mu + sqrt((s^2 + sigma^2)/(s^2 + sigma_max^2)) (x(sigma_max) - mu), then Tweedie
    D = mu + s^2/(s^2 + sigma_min^2) (x - mu). The Heun error is second order."""
    s2, mu = 0.5, np.array([1.0, -2.0, 0.5])
    one = mixtures.gaussian_mixture([1.0], [mu], [s2])
    start = jax.random.normal(jax.random.key(0), (6, 3))
    sigma_max, sigma_min = float(sigma_from_vp_time(T_MAX)), float(sigma_from_vp_time(T_MIN))
    flowed = mu + np.sqrt((s2 + sigma_min**2) / (s2 + sigma_max**2)) * (np.exp(T_MAX) * np.asarray(start) - mu)
    exact = mu + s2 / (s2 + sigma_min**2) * (flowed - mu)
    score = jax.tree_util.Partial(mixtures.time_score, one)
    errors = [
        float(np.max(np.abs(jax.vmap(lambda x, steps=steps: vp_heun_sample(score, x, t_max=T_MAX, t_min=T_MIN, num_steps=steps))(start) - exact)))
        for steps in (16, 32)
    ]
    assert 3.0 < errors[0] / errors[1] < 5.0 and errors[1] < 1e-2, errors  # measured 0.031, 0.0071


def test_vp_heun_samples_of_a_mixture_carry_its_class_weights_and_variances():
    """Started from the exact OU law at t_max, the samples carry the class weights and the
    class variances C^2/(C + sigma_min^2) of Tweedie's last step (compare
    :func:`diffdyn.models.distributions.mixtures.sample_pf_ode`, the adaptive sigma-time sampler)."""
    dim, weight, variances = 4, 0.7, np.array([1.0, 4.0])
    mixture = mixtures.two_class_mixture(dim, weight, 2.0, tuple(variances))
    score = jax.tree_util.Partial(mixtures.time_score, mixture)
    start, _ = mixtures.sample(jax.random.key(0), mixtures.noised_at_time(mixture, T_MAX), 1000)
    samples = np.asarray(jax.jit(jax.vmap(lambda x: vp_heun_sample(score, x, t_max=T_MAX, t_min=T_MIN, num_steps=32)))(start))
    posterior = jax.vmap(lambda x: mixtures.class_log_posterior(mixture, x))(jnp.asarray(samples))
    labels = np.asarray(jnp.argmax(posterior, axis=1))
    assert abs(np.mean(labels == 0) - weight) < 4 * np.sqrt(weight * (1 - weight) / 1000)
    sigma_min = float(sigma_from_vp_time(T_MIN))
    for c, variance in enumerate(variances):
        chosen = samples[labels == c] - np.asarray(mixture.means[c])[None, :]
        expected = variance**2 / (variance + sigma_min**2)
        np.testing.assert_allclose(np.mean(chosen**2), expected, rtol=5 * np.sqrt(2 / chosen.size))


def test_expected_statistics_with_a_bias():
    """Identity activation: U = W S W^T/d + e^-t (W m/sqrt d) b^T + b (...)^T + b b^T exactly; tanh:
    the diagonal of U and V by 1-d Gauss-Hermite quadrature at the shifted centre."""
    d, p, n, t = 5, 7, 6, 0.4
    W = rf.sample_features(jax.random.key(0), d, p)
    x0 = jax.random.normal(jax.random.key(1), (n, d)) + 0.5
    b = jax.random.normal(jax.random.key(2), (p,))
    delta = vp_noise_variance(t)
    U, V = rf.expected_feature_statistics(W, x0, t, "identity", bias=b)
    second = np.exp(-2 * t) * x0.T @ x0 / n + delta * np.eye(d)
    mean = np.exp(-t) * W @ x0.mean(0) / np.sqrt(d)
    expected = W @ second @ W.T / d + np.outer(mean, b) + np.outer(b, mean) + np.outer(b, b)
    np.testing.assert_allclose(U, expected, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(V, np.sqrt(delta) * W / np.sqrt(d), rtol=1e-11)

    U, V = rf.expected_feature_statistics(W, x0, t, bias=b)
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    weights = weights / weights.sum()
    centre = np.exp(-t) * np.asarray(x0 @ W.T) / np.sqrt(d) + np.asarray(b)[None, :]  # (n, p)
    spread = np.sqrt(delta) * np.linalg.norm(W, axis=1) / np.sqrt(d)
    values = np.tanh(centre[:, :, None] + spread[None, :, None] * nodes)
    np.testing.assert_allclose(np.diagonal(U), np.mean(values**2 @ weights, axis=0), rtol=1e-6)  # 48 vs 120 nodes
    slope = np.mean(values @ (weights * nodes), axis=0)  # E[g(a + c z) z]
    np.testing.assert_allclose(V, slope[:, None] * np.asarray(W) / np.linalg.norm(W, axis=1, keepdims=True), rtol=1e-6)


def test_time_indexed_score_interpolates_in_log_time():
    d, p, times = 3, 5, jnp.array([0.01, 0.1, 1.0])
    W = rf.sample_features(jax.random.key(0), d, p)
    weights = jax.random.normal(jax.random.key(1), (3, d, p))
    model = rf.TimeIndexedScore(weights, W, times, activation="erf")
    x = jnp.array([0.5, -1.0, 2.0])
    for k, t in enumerate(times):
        np.testing.assert_allclose(model(x, t), rf.score(weights[k], W, x, "erf"), rtol=1e-12)
    middle = rf.score(0.5 * (weights[1] + weights[2]), W, x, "erf")
    np.testing.assert_allclose(model(x, np.sqrt(0.1)), middle, rtol=1e-12)  # log-midpoint of 0.1 and 1
    np.testing.assert_allclose(model(x, 5.0), model(x, 1.0), rtol=1e-12)  # clamped


def test_odd_features_generate_a_mirror_symmetric_law():
    """Without a bias tanh makes the score odd: the sample from -x_start is minus the sample from
    x_start. A bias breaks it."""
    d, p, times = 4, 16, jnp.geomspace(T_MIN, T_MAX, 4)
    W = rf.sample_features(jax.random.key(0), d, p)
    weights = 3.0 * jax.random.normal(jax.random.key(1), (1, 4, d, p))
    start = jax.random.normal(jax.random.key(2), (1, d))
    both = jnp.concatenate([start, -start])
    odd = rf.generate_samples(weights, W, times, both, num_steps=8)[0]
    np.testing.assert_allclose(odd[1], -odd[0], rtol=1e-12)
    biased = rf.generate_samples(weights, W, times, both, bias=jnp.ones(p), num_steps=8)[0]
    assert float(jnp.linalg.norm(biased[1] + biased[0])) > 0.1 * float(jnp.linalg.norm(biased[0]))


@pytest.fixture(scope="module")
def generator():
    """d = 8, two centred classes (variances 1 and 4), 15 training points each, p = 512 tanh
    features with bias ~ N(0, 1), 6 log-spaced nodes in [0.01, 3]; 300 samples."""
    d, p, count = 8, 512, 15
    key = jax.random.key(0)
    mixture = mixtures.two_class_mixture(d, 0.5, 0.0, (1.0, 4.0))
    train, labels = mixtures.training_set(jax.random.fold_in(key, 1), mixture, (count, count))
    W = rf.sample_features(jax.random.fold_in(key, 2), d, p)
    bias = jax.random.normal(jax.random.fold_in(key, 3), (p,))
    times = jnp.geomspace(T_MIN, T_MAX, 6)
    taus = jnp.array([1e3, jnp.inf])
    weights = rf.time_indexed_weights(lambda t: rf.expected_feature_statistics(W, train, t, bias=bias, order=6), times, taus)
    start = vp_gaussian_start(jax.random.fold_in(key, 4), jnp.mean(train, 0), jnp.cov(train.T), T_MAX, 300)
    samples = rf.generate_samples(weights, W, times, start, bias=bias, num_steps=32)
    return train, labels, times, start, samples


def test_generator_generalizes_early_and_memorizes_late(generator):
    train, labels, times, start, samples = generator
    early, late = samples
    # tau = 1e3: trained (the generated variance has come down from ~6 at tau = 10 to the
    # population's, (1 + 4)/2; measured 2.37), and not copying.
    np.testing.assert_allclose(np.mean(np.var(np.asarray(early), 0)), 2.5, rtol=0.2)
    assert float(measures.memorization_fraction(early, train)) < 0.1  # measured 0.03
    assert np.all(np.asarray(measures.per_class_memorization_fraction(early, train, labels, 2)) < 0.1)  # 0.005, 0.08
    # tau = infinity (the least-squares score): most samples are copies, of both classes.
    assert float(measures.memorization_fraction(late, train)) > 0.55  # measured 0.66
    per_class = np.asarray(measures.per_class_memorization_fraction(late, train, labels, 2))
    assert per_class[0] > 0.4 and per_class[1] > 0.7  # measured 0.54, 0.84: the wider class copies more
    # The exact empirical score (tau -> infinity and p -> infinity) copies every time.
    n = train.shape[0]
    empirical = mixtures.GaussianMixture(jnp.full((n,), 1.0 / n), train, jnp.full((n,), 1e-12))
    score = jax.tree_util.Partial(mixtures.time_score, empirical)
    copies = jax.jit(jax.vmap(lambda x: vp_heun_sample(score, x, t_max=T_MAX, t_min=T_MIN, num_steps=16)))(start)
    assert float(measures.memorization_fraction(copies, train)) == 1.0
