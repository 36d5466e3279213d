"""The MCM samplers: moments, kurtosis along v, whitening, couplings and clones, to Monte Carlo error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics.theory import cumulants as theory
from diffdyn.dynamics.validation import ConfigError
from diffdyn.models.distributions.cumulants import noised, sample_clone, sample_latent, sample_law, sample_mcm, spike_frame

NUM = 100_000
DIM = 7


def draws(model, law="mcm", seed=0, frame=None):
    frame = spike_frame(jax.random.key(42), DIM) if frame is None else frame
    keys = jax.random.split(jax.random.key(seed), NUM)
    samples = jax.vmap(sample_law, in_axes=(0, None, None, None))(keys, model, frame, law)
    return np.asarray(samples), np.asarray(frame)


def assert_mean_within(values, expected, sigmas=5.0):
    """Sample mean of ``values`` (rows: samples) within ``sigmas`` standard errors of ``expected``."""
    values = np.asarray(values)
    error = values.std(axis=0) / np.sqrt(values.shape[0])
    np.testing.assert_array_less(np.abs(values.mean(axis=0) - expected), sigmas * error + 1e-12)


def centred_products(samples, frame):
    """Per sample, the centred coordinates' products ``c_i c_j`` in the (m, u, v) frame and the rest."""
    centred = samples - samples.mean(axis=0)
    coordinates = centred @ frame.T
    return coordinates, (centred - coordinates @ frame)


def test_spike_frame_is_orthonormal_and_the_axes_are_the_authors():
    frame = np.asarray(spike_frame(jax.random.key(3), 9))
    np.testing.assert_allclose(frame @ frame.T, np.eye(3), atol=1e-12)
    np.testing.assert_array_equal(np.asarray(spike_frame(None, 5, random=False)), np.eye(5)[[2, 1, 0]])


@pytest.mark.parametrize("variant", theory.VARIANTS)
@pytest.mark.parametrize("coupling", ["independent", "correlated"])
def test_mean_and_covariance(variant, coupling):
    model = theory.MixedCumulantModel(variant=variant, mu=0.8, beta_u=3.0, beta_v=4.0, coupling=coupling)
    samples, frame = draws(model)
    assert_mean_within(samples @ frame.T, [0.8, 0.0, 0.0])
    coordinates, rest = centred_products(samples, frame)
    covariance = np.asarray(theory.spike_covariance(model))
    products = coordinates[:, :, None] * coordinates[:, None, :]
    assert_mean_within(products.reshape(NUM, 9), covariance.ravel())
    assert_mean_within(rest**2, 1 - np.sum(frame**2, axis=0))  # the complement: identity covariance (the projector's diagonal)
    if coupling == "correlated":  # v enters the covariance: Cov(u, v) = sqrt(beta_u) alpha sqrt(2/pi)
        assert covariance[1, 2] == pytest.approx(np.sqrt(3.0 * (4 / 5 if variant == "whitened" else 1.0)) * np.sqrt(2 / np.pi), rel=1e-12)


@pytest.mark.parametrize(("latent", "parameter"), [("rademacher", 0.0), ("three_point", 0.05)])
def test_kurtosis_along_v_and_whitening(latent, parameter):
    """Whitened MCM: x.v has unit variance (v invisible to the covariance) and excess kurtosis
    beta_v^2/(1+beta_v)^2 kappa_4(nu) (-2 beta_v^2/(1+beta_v)^2 for Rademacher, docs/theory.md 9)."""
    beta_v = 4.0
    model = theory.MixedCumulantModel(variant="whitened", mu=0.0, beta_u=2.0, beta_v=beta_v, latent=latent, latent_parameter=parameter)
    samples, frame = draws(model, seed=1)
    along_v = samples @ frame[2]
    assert_mean_within(along_v[:, None] ** 2, [1.0])
    kappa = float(theory.latent_cumulants(latent, parameter)[1])
    assert kappa == pytest.approx(-2.0 if latent == "rademacher" else 1 / (2 * parameter) - 3)
    expected = beta_v**2 / (1 + beta_v) ** 2 * kappa
    assert float(theory.noised_excess_kurtosis(model, 0.0)) == pytest.approx(expected, rel=1e-12)
    standard_error = np.sqrt(np.var(along_v**4) / NUM)  # of the fourth moment (the variance is 1)
    assert abs(np.mean(along_v**4) - 3 - expected) < 5 * standard_error
    # the explicit whitening S = I - beta_v/(1+beta_v+sqrt(1+beta_v)) v v^T maps sqrt(beta_v) v to alpha v
    v = frame[2]
    whitening = np.eye(DIM) - beta_v / (1 + beta_v + np.sqrt(1 + beta_v)) * np.outer(v, v)
    np.testing.assert_allclose(whitening @ (np.sqrt(beta_v) * v), float(model.cumulant_scale) * v, rtol=1e-12)
    np.testing.assert_allclose(whitening @ whitening, np.eye(DIM) - float(model.cumulant_scale) ** 2 * np.outer(v, v), atol=1e-12)


def test_planted_latents_replace_the_gaussian_along_u_and_v():
    """The authors' model: x.v is the latent itself (Rademacher: +-1 exactly), x.u has variance beta_u."""
    model = theory.MixedCumulantModel(variant="planted", mu=1.0, beta_u=10.0)
    samples, frame = draws(model, seed=2)
    np.testing.assert_allclose(np.abs(samples @ frame[2]), 1.0, rtol=1e-10)
    assert_mean_within((samples @ frame[1])[:, None] ** 2, [10.0])


@pytest.mark.parametrize("coupling", ["hermite2", "hermite3"])
def test_higher_hermite_couplings_leave_the_covariance_and_show_at_their_order(coupling):
    model = theory.MixedCumulantModel(variant="planted", mu=0.0, beta_u=1.0, coupling=coupling)
    samples, frame = draws(model, seed=3)
    lam, nu = samples @ frame[1], samples @ frame[2]
    assert_mean_within(nu[:, None], [0.0])  # the marginal stays Rademacher
    assert_mean_within((lam * nu)[:, None], [0.0])  # no covariance between u and v
    order = theory.COUPLING_ORDER[coupling]
    joint = np.mean(((lam**2 - 1) if order == 3 else (lam**3 - 3 * lam)) * nu)  # Hermite 2 / 3 of lambda against nu
    assert abs(joint) > 10 * np.std(lam**3 * nu) / np.sqrt(NUM)


@pytest.mark.parametrize(("latent", "parameter"), [("skewed", 0.2), ("student_t", 12.0), ("three_point", 0.1)])
def test_latent_laws_have_unit_variance_and_their_cumulants(latent, parameter):
    values = np.asarray(jax.vmap(lambda key: sample_latent(key, latent, parameter))(jax.random.split(jax.random.key(4), NUM)))
    assert_mean_within(np.stack([values, values**2], axis=1), [0.0, 1.0])
    skewness, kurtosis = (float(c) for c in theory.latent_cumulants(latent, parameter))
    assert abs(np.mean(values**3) - skewness) < 5 * np.std(values**3) / np.sqrt(NUM)
    assert abs(np.mean(values**4) - 3 - kurtosis) < 5 * np.std(values**4) / np.sqrt(NUM)
    if latent == "skewed":
        assert skewness == pytest.approx((1 - 2 * parameter) / np.sqrt(parameter * (1 - parameter)))
    assert float(theory.latent_abs_mean(latent, parameter)) == pytest.approx(np.mean(np.abs(values)), abs=5 * np.std(values) / np.sqrt(NUM))


@pytest.mark.parametrize("law", ["mean_clone", "covariance_clone"])
def test_gaussian_clones_keep_the_mean_and_the_covariance(law):
    model = theory.MixedCumulantModel(variant="planted", mu=1.0, beta_u=4.0, coupling="correlated")
    samples, frame = draws(model, law=law, seed=5)
    assert_mean_within(samples @ frame.T, [1.0, 0.0, 0.0])
    coordinates, _ = centred_products(samples, frame)
    expected = np.asarray(theory.spike_covariance(model)) if law == "covariance_clone" else float(theory.mean_clone_variance(model, DIM)) * np.eye(3)
    assert_mean_within((coordinates[:, :, None] * coordinates[:, None, :]).reshape(NUM, 9), expected.ravel())
    assert abs(np.mean((samples @ frame[2]) ** 4) - 3 * expected[2, 2] ** 2) < 5 * np.std((samples @ frame[2]) ** 4) / np.sqrt(NUM)  # Gaussian along v
    # the mean-only clone keeps the trace: tr Cov / d = (d - 1 + beta_u) / d here
    assert float(theory.mean_clone_variance(model, DIM)) == pytest.approx((DIM - 1 + 4.0) / DIM, rel=1e-12)


def test_noising_is_the_ou_transition():
    clean = jnp.full((NUM // 4, 3), 2.0)
    x, z = jax.vmap(noised, in_axes=(0, 0, None))(jax.random.split(jax.random.key(6), NUM // 4), clean, 0.3)
    np.testing.assert_allclose(np.asarray(x), np.exp(-0.3) * 2.0 + np.sqrt(1 - np.exp(-0.6)) * np.asarray(z), rtol=1e-12, atol=1e-12)
    assert_mean_within(np.asarray(z) ** 2, [1.0, 1.0, 1.0])


def test_one_sample_function_matches_its_law_and_bad_laws_fail():
    model = theory.MixedCumulantModel()
    frame = spike_frame(jax.random.key(0), DIM)
    np.testing.assert_array_equal(np.asarray(sample_law(jax.random.key(1), model, frame, "mcm")), np.asarray(sample_mcm(jax.random.key(1), model, frame)))
    np.testing.assert_array_equal(
        np.asarray(sample_law(jax.random.key(1), model, frame, "mean_clone")), np.asarray(sample_clone(jax.random.key(1), model, frame, "mean_clone"))
    )
    with pytest.raises(ConfigError, match="latent_parameter"):
        theory.MixedCumulantModel(latent="three_point", latent_parameter=0.4).check()
    with pytest.raises(ConfigError, match="coupling"):
        theory.MixedCumulantModel(latent="skewed", latent_parameter=0.2, coupling="correlated").check()
