"""Tests for dynamics.measures: mode variances, emergence times, power-law fits, KL."""

import jax
import numpy as np
import pytest

from diffdyn.dynamics.measures import (
    emergence_time,
    fit_power_law,
    gaussian_kl,
    kl_per_mode,
    mode_variances,
    sample_mode_variances,
)


def test_mode_variances_fourier_basis_diagonalises_circulant():
    d = 8
    first_row = np.array([3.0, 1.0, 0.5, 0.2, 0.1, 0.2, 0.5, 1.0])  # symmetric: a covariance
    cov = np.stack([np.roll(first_row, k) for k in range(d)])
    basis = np.exp(2j * np.pi * np.outer(np.arange(d), np.arange(d)) / d) / np.sqrt(d)
    variances = mode_variances(cov, basis)
    assert not np.iscomplexobj(variances)
    np.testing.assert_allclose(variances, np.real(np.fft.fft(first_row)), rtol=1e-12)


def test_mode_variances_real_basis_and_sample_version():
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    scales = np.array([0.1, 1.0, 2.0, 5.0])
    cov = (basis * np.square(scales)[None, :]) @ basis.T
    np.testing.assert_allclose(mode_variances(cov, basis), np.square(scales), rtol=1e-12)
    samples = 3.0 + rng.normal(size=(50, 4)) @ (basis * scales[None, :]).T
    expected = np.diag(basis.T @ np.cov(samples, rowvar=False, ddof=1) @ basis)
    np.testing.assert_allclose(sample_mode_variances(samples, basis), expected, rtol=1e-12)


def relaxation(taus, target, start):
    """``v(tau) = target (1 - e^-tau) + start e^-tau``."""
    return target * (1 - np.exp(-taus)) + start * np.exp(-taus)


def exact_crossing(target, start, threshold):
    """The ``tau`` at which :func:`relaxation` equals ``threshold``."""
    return np.log((start - target) / (threshold - target))


TAUS = np.geomspace(1e-3, 1e2, 2000)


@pytest.mark.parametrize("criterion", ["geometric", "harmonic"])
@pytest.mark.parametrize("target, start", [(10.0, 0.1), (0.01, 1.0)])
def test_emergence_time_matches_analytic_crossing(criterion, target, start):
    threshold = np.sqrt(start * target) if criterion == "geometric" else 2 / (1 / start + 1 / target)
    variance = relaxation(TAUS, target, start)
    # start is the exact value at tau = 0, before the first record (tau = 1e-3).
    tau_star, rising = emergence_time(TAUS, variance, target, criterion=criterion, initial=start)
    np.testing.assert_allclose(tau_star, exact_crossing(target, start, threshold), rtol=1e-4)
    assert bool(rising) == (target > start)


def test_emergence_time_vmap_jit_and_never_crossing():
    targets = np.array([10.0, 3.0, 0.01, 0.1])
    starts = np.array([0.1, 0.1, 1.0, 1.0])
    variances = relaxation(TAUS[None, :], targets[:, None], starts[:, None])
    # Mode 1 is frozen from tau = 0.1 on (before its crossing near 0.17): it never crosses.
    variances[1] = np.where(TAUS < 0.1, variances[1], variances[1, 0])
    measure = jax.jit(jax.vmap(lambda v, t: emergence_time(TAUS, v, t, criterion="geometric")))
    tau_star, rising = measure(variances, targets)
    v0 = variances[:, 0]  # no `initial`: the first record is the initial value
    expected = exact_crossing(targets, starts, np.sqrt(v0 * targets))
    assert np.isnan(tau_star[1]) and expected[1] > 0.1
    keep = np.array([0, 2, 3])
    np.testing.assert_allclose(tau_star[keep], expected[keep], rtol=1e-4)
    np.testing.assert_array_equal(rising, [True, True, False, False])


def test_emergence_time_first_record_already_crossed_and_non_monotone():
    taus = np.array([1.0, 2.0, 4.0, 8.0])
    # Already past the threshold sqrt(0.01 * 1) = 0.1 at the first record.
    tau_star, rising = emergence_time(taus, np.array([0.5, 0.8, 0.9, 1.0]), 1.0, initial=0.01)
    assert float(tau_star) == 1.0 and bool(rising)
    # Dips below the start first, then crosses 0.1 between records 2 and 3 (log-log interpolation):
    variance = np.array([0.01, 0.001, 0.05, 0.2])
    tau_star, _ = emergence_time(taus, variance, 1.0)
    fraction = np.log(0.1 / 0.05) / np.log(0.2 / 0.05)
    np.testing.assert_allclose(tau_star, np.exp(np.log(4.0) + fraction * np.log(2.0)), rtol=1e-12)


def test_emergence_time_rejects_unknown_criterion_and_shapes():
    with pytest.raises(ValueError, match="criterion.*'arithmetic'.*geometric, harmonic"):
        emergence_time(TAUS, TAUS, 1.0, criterion="arithmetic")
    with pytest.raises(ValueError, match="variance"):
        emergence_time(TAUS, TAUS[:-1], 1.0)


def test_fit_power_law_recovers_planted_exponents():
    lam = np.geomspace(1e-3, 1e2, 20)
    initial = 1.0
    rising = lam > initial
    # Different laws on the two sides, so "all" is a genuine pooled fit.
    tau_star = np.where(rising, 0.3 * lam**-1.3, 2.0 * lam**-0.8)
    tau_star[0] = np.nan  # never emerged
    gray = (lam >= 0.5) & (lam <= 2.0)
    fits = fit_power_law(lam, tau_star, initial, rising)
    assert gray.sum() == 2  # lam = 0.78 and 1.44 (one per side)
    rising_fit, decaying_fit = fits["rising"], fits["decaying"]
    np.testing.assert_allclose(rising_fit["alpha"], 1.3, rtol=1e-10)
    np.testing.assert_allclose(rising_fit["intercept"], np.log(0.3), rtol=1e-10)
    np.testing.assert_allclose(decaying_fit["alpha"], 0.8, rtol=1e-10)
    np.testing.assert_allclose([rising_fit["r2"], decaying_fit["r2"]], 1.0, rtol=1e-12)
    assert (rising_fit["n_modes"], rising_fit["n_gray"], rising_fit["n_nan"]) == (7, 1, 0)
    assert (decaying_fit["n_modes"], decaying_fit["n_gray"], decaying_fit["n_nan"]) == (10, 1, 1)
    pooled = fits["all"]
    assert (pooled["n_modes"], pooled["n_gray"], pooled["n_nan"]) == (17, 2, 1)
    used = ~gray & np.isfinite(tau_star)
    slope, intercept = np.polyfit(np.log(lam[used]), np.log(tau_star[used]), 1)
    np.testing.assert_allclose([pooled["alpha"], pooled["intercept"]], [-slope, intercept], rtol=1e-10)
    assert 0 < pooled["r2"] < 1


def test_fit_power_law_too_few_modes_and_bad_gray_zone():
    lam = np.array([0.01, 0.9, 5.0])
    fits = fit_power_law(lam, np.array([1.0, 2.0, np.nan]), 1.0, lam > 1.0)
    assert np.isnan(fits["rising"]["alpha"]) and fits["rising"]["n_modes"] == 0
    assert np.isnan(fits["decaying"]["alpha"]) and fits["decaying"]["n_modes"] == 1
    wide = fit_power_law(lam, np.array([1.0, 2.0, 3.0]), 1.0, lam > 1.0, gray_zone=(1.0, 1.0))
    assert wide["all"]["n_modes"] == 3
    with pytest.raises(ValueError, match="gray_zone"):
        fit_power_law(lam, lam, 1.0, lam > 1.0, gray_zone=(2.0, 0.5))
    with pytest.raises(ValueError, match="gray_zone"):
        fit_power_law(lam, lam, 1.0, lam > 1.0, gray_zone=(-1.0, 2.0))


def test_kl_per_mode_and_gaussian_kl():
    same = np.array([0.3, 7.0])
    np.testing.assert_allclose(kl_per_mode(same, same), 0.0, atol=1e-15)
    np.testing.assert_allclose(kl_per_mode(2.0, 1.0), 0.5 * (1 - np.log(2)), rtol=1e-14)
    basis, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    p_var, q_var = np.array([0.5, 2.0, 1.0]), np.array([1.0, 1.0, 4.0])
    cov_p = (basis * p_var[None, :]) @ basis.T
    cov_q = (basis * q_var[None, :]) @ basis.T
    np.testing.assert_allclose(gaussian_kl(cov_p, cov_p), 0.0, atol=1e-13)
    per_mode_sum = np.sum(kl_per_mode(p_var, q_var))
    np.testing.assert_allclose(gaussian_kl(cov_p, cov_q), per_mode_sum, rtol=1e-12)
    # Non-commuting pair against the textbook formula.
    cov_q = np.array([[2.0, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.5]])
    log_det_ratio = np.log(np.linalg.det(cov_q) / np.linalg.det(cov_p))
    expected = 0.5 * (np.trace(np.linalg.solve(cov_q, cov_p)) - 3 + log_det_ratio)
    np.testing.assert_allclose(gaussian_kl(cov_p, cov_q), expected, rtol=1e-12)
