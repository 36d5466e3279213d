"""Inverse design through the differentiable simulator: objectives fall and re-simulation agrees."""

import numpy as np
import pytest

from experiments import cli, inverse_design

SMALL = inverse_design.Config(tasks=("spectrum", "flatten"), num_modes=4, optimizer_steps=250, num_sigma_nodes=40, quadrature_nodes=96)
REWEIGHTING = inverse_design.Config(tasks=("class-reweighting",), optimizer_steps=100)


@pytest.fixture(scope="module")
def result():
    dataset = inverse_design.run(SMALL)
    return dataset, inverse_design.summary(dataset, SMALL)


def test_designed_spectrum_hits_the_target_times(result):
    dataset, summary = result
    row = summary["spectrum"]
    assert row["objective_optimized"] < 0.05 * row["objective_initial"]
    # Re-simulated hard emergence times within 25% of the targets (initially off by > 2x).
    assert row["max_abs_log_time_error_simulation"]["initial"] > np.log(2)
    assert row["max_abs_log_time_error_simulation"]["optimized"] < np.log(1.25)


def test_learning_rate_profile_flattens_the_law(result):
    dataset, summary = result
    row = summary["flatten"]
    assert row["spread_simulation"]["initial"] > 10
    assert row["spread_simulation"]["optimized"] <= 2.0
    assert row["within_factor_2_simulation"]
    # Theory (soft times, quadrature) and re-simulation (hard times) agree on the spread.
    assert abs(np.log(row["spread_theory"]["optimized"] / row["spread_simulation"]["optimized"])) < np.log(1.3)


def test_constant_profile_quadrature_equals_closed_form():
    config = inverse_design.validate(SMALL)
    import jax.numpy as jnp

    lam = jnp.asarray(inverse_design.initial_spectrum(config))
    closed = inverse_design.theory_variance(config, lam)
    quadrature = inverse_design.theory_variance(config, lam, jnp.zeros(config.num_profile_nodes))
    np.testing.assert_allclose(quadrature, closed, rtol=1e-6)


def test_bad_targets_fail_early(tmp_path, capsys):
    assert cli.main(["run", "inverse-design", "--out", str(tmp_path / "x"), "--target-times", "0.1,0.2"]) == 2
    assert capsys.readouterr().err.startswith("diffdyn: error: target_times: needs num_modes = 6 values")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow  # ~50 s: 100 Adam steps through eigh of the 128 x 128 feature covariance
def test_class_reweighting_equalizes_generalization_times():
    """(c): a low-variance minority (sigma_1^2/sigma_0^2 = 0.25, n_1/n_0 = 1/8) generalizes ~2.5x
    later than the majority; optimized class loss weights bring the ratio within 25% of 1, also on
    fresh test points that the optimization never saw."""
    dataset = inverse_design.run(REWEIGHTING)
    row = inverse_design.summary(dataset, REWEIGHTING)["class_reweighting"]
    assert row["generalization_time_ratio_fresh_test"]["initial"] > 2.0
    assert abs(np.log(row["generalization_time_ratio_fresh_test"]["optimized"])) < np.log(1.3)
    assert abs(np.log(row["generalization_time_ratio_1_over_0"]["optimized"])) < np.log(1.25)
    assert row["objective_optimized"] < 0.1 * row["objective_initial"]
    assert row["optimized_class_weights"][1] < 1.0  # the minority's loss is weighted down
    assert "(c) class loss weights" in inverse_design.summary_markdown({"class_reweighting": row})


def test_reweighting_setting_is_validated_early(tmp_path, capsys):
    assert cli.main(["run", "inverse-design", "--out", str(tmp_path / "x"), "--reweighting-imbalance", "0.001"]) == 2
    assert capsys.readouterr().err.startswith("diffdyn: error: reweighting_imbalance:")
